"""The Pallas kernels of `pallas_kernels/` compiled for the GPU (not interpret mode) against their
jnp references, with timings as ratios.

  python experiments/bench/pallas_gpu_check.py [--out DIR] [--budget 240]   # on a GPU
  python experiments/bench/pallas_gpu_check.py --interpret --small          # the same code on CPU

Sections (each written to DIR/pallas_gpu_check.json as soon as it is done; a case that fails to
lower is recorded with its error and the run goes on):
  qmatmul_lib     `qmatmul_pallas` on the CPU tests' CASES, at their tolerances.
  act_compress    `compress_pallas` vs `compress_ref`, bitwise as the CPU tests demand, lowered by
                  the default GPU backend and, where jax still has the flag
                  jax_pallas_use_mosaic_gpu (0.10 has it, default True; 0.11.2 does not), also
                  with the flag flipped; timed against the jitted reference.
  qmatmul_kloop   a candidate GPU formulation of the same W8A16/W4A16 kernel (below), on CASES.
  qmatmul_bench   the shapes of quant_matmul_gpu.py: the bf16 dot, the jitted reference, the
                  library kernel and the candidate (bf16 MMA and f32 dot), errors and speed ratios.
  qmatmul_sweep   a few block shapes of the candidate.

Why a candidate: `qmatmul_pallas` reduces K over the innermost *grid* axis, accumulating into the
resident output block. That is TPU semantics; on GPU the grid is the CUDA grid, its points run
in parallel with no order, so with more than one K block the accumulation races (and programs
with k > 0 read an uninitialised output). Its INT4 path also slices a loaded value
(`x[:, :half]`, lax.slice), which the Triton lowering does not implement. The candidate loops over
K inside the kernel (`lax.fori_loop`, slicing the refs with `pl.ds`), keeps the accumulator in
registers, passes the even and odd activation columns as two inputs (INT4), and dots in the
activation dtype (bf16 MMA; `dot_f32=True` dequantizes and dots in f32 as the library does).

Timing: median over `reps` of the mean of `inner` back-to-back calls (after two warm-up calls),
so the per-call dispatch cost is overlapped with the GPU work; `dispatch_floor_us` is that figure
for a trivial jitted op, the floor under every timing.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from pallas_kernels.act_compress import compress_pallas, compress_ref, decompress_ref, unpack_bits
from pallas_kernels.int_quant import QuantizedWeight, dequantize, qmatmul_reference, quantize
from pallas_kernels.quant_matmul import qmatmul_pallas

def _test_cases():
  """(M, N, K, bits, group_size, zero_point, x dtype, blocks): the CPU tests' own CASES, read from
  tests/pallas_kernels/test_quant_matmul.py so the two cannot drift apart."""
  import importlib.util
  path = Path(__file__).resolve().parents[2] / "tests" / "pallas_kernels" / "test_quant_matmul.py"
  spec = importlib.util.spec_from_file_location("_quant_matmul_tests", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.CASES


CASES = _test_cases()
# (shape, bits, block): tests/gact/test_compress.py, then larger ones for timing
COMPRESS_CASES = [((3, 1000), 2, 8), ((4096,), 4, 4), ((2, 7, 33), 1, 8), ((300,), 8, 2),
                  ((64, 64), 2, 16)]


# ---------------------------------------------------------------- the candidate GPU kernel

def kloop_blocks(M: int, N: int, K: int, group_size: int, bits: int) -> tuple[int, int, int]:
  """Decode (M <= 16): 16-row blocks and narrow column blocks (more programs than SMs);
  prefill: 64 x 128 output tiles. Every block is a power of two and >= 16 where it meets a dot."""
  bm = 16 if M <= 16 else 64
  bn = next(b for b in ((32, 16) if M <= 16 else (128, 64, 32, 16)) if N % b == 0)
  bk = next(b for b in (256, 128, 64, 32) if K % b == 0
            and (b % group_size == 0 or group_size % b == 0))
  return bm, bn, bk


def _kloop_kernel(*refs, bits, zero_point, g, bk, nk, dot_dtype):
  n_x = 2 if bits == 4 else 1
  x_refs = refs[:n_x]
  q_ref, s_ref = refs[n_x], refs[n_x + 1]
  z_ref = refs[n_x + 2] if zero_point else None
  o_ref = refs[-1]
  cb = bk // 2 if bits == 4 else bk      # code (and activation) columns per K block
  gc = g // 2 if bits == 4 else g        # group size in code columns

  def per_group(ref, k):                 # scales (or zeros) of K block k: [bn, 1] or [bn, bk/g]
    if g >= bk:
      return ref[:, pl.ds((k * bk) // g, 1)]
    return ref[:, pl.ds(pl.multiple_of(k * (bk // g), bk // g), bk // g)]

  def dequant(codes, s, z):              # int32 [bn, cb] -> dot_dtype [bn, cb]
    w = codes.astype(jnp.float32)
    if s.shape[1] == 1:
      w = (w - z if zero_point else w) * s
    else:
      bn = w.shape[0]
      w = w.reshape(bn, s.shape[1], gc)
      if zero_point:
        w = w - z[..., None]
      w = (w * s[..., None]).reshape(bn, cb)
    return w.astype(dot_dtype)

  def dot_t(a, w):                       # a [bm, c] @ w[bn, c]^T in f32
    return jax.lax.dot_general(a.astype(dot_dtype), w, (((1,), (1,)), ((), ())),
                               preferred_element_type=jnp.float32)

  def body(k, acc):
    s = per_group(s_ref, k)
    z = per_group(z_ref, k) if zero_point else None
    cols = pl.ds(pl.multiple_of(k * cb, cb), cb)
    codes = q_ref[:, cols].astype(jnp.int32)
    if bits == 8:
      return acc + dot_t(x_refs[0][:, cols], dequant(codes, s, z))
    hi, lo = (codes >> 4) & 0xF, codes & 0xF
    if not zero_point:
      hi, lo = jnp.where(hi >= 8, hi - 16, hi), jnp.where(lo >= 8, lo - 16, lo)
    return (acc + dot_t(x_refs[0][:, cols], dequant(hi, s, z))
            + dot_t(x_refs[1][:, cols], dequant(lo, s, z)))

  acc = jax.lax.fori_loop(0, nk, body, jnp.zeros(o_ref.shape, jnp.float32))
  o_ref[...] = acc.astype(o_ref.dtype)


@functools.partial(jax.jit, static_argnames=("blocks", "dot_f32", "interpret", "num_warps",
                                             "num_stages"))
def qmatmul_kloop(x: jnp.ndarray, qw: QuantizedWeight, blocks: tuple[int, int, int] | None = None,
                  dot_f32: bool = False, interpret: bool = False, num_warps: int = 4,
                  num_stages: int = 3) -> jnp.ndarray:
  """x [M, K] @ dequant(qw)^T -> [M, N] in x.dtype, grid (M/bm, N/bn), K reduced in the kernel."""
  M, K = x.shape
  N = qw.scale.shape[0]
  g, bits = qw.group_size, qw.bits
  bm, bn, bk = blocks or kloop_blocks(M, N, K, g, bits)
  if K != qw.in_features or N % bn or K % bk or (bk % g and g % bk):
    raise ValueError(f"blocks {(bm, bn, bk)} do not tile M={M}, N={N}, K={K}, group size {g}")
  Mp = -(-M // bm) * bm
  xp = jnp.pad(x, ((0, Mp - M), (0, 0))) if Mp != M else x
  xs = [xp[:, 0::2], xp[:, 1::2]] if bits == 4 else [xp]
  kx = xs[0].shape[1]
  in_specs = [pl.BlockSpec((bm, kx), lambda i, j: (i, 0)) for _ in xs]
  in_specs += [pl.BlockSpec((bn, qw.q.shape[1]), lambda i, j: (j, 0)),
               pl.BlockSpec((bn, qw.scale.shape[1]), lambda i, j: (j, 0))]
  args = [*xs, qw.q, qw.scale]
  if qw.zero is not None:
    in_specs.append(pl.BlockSpec((bn, qw.zero.shape[1]), lambda i, j: (j, 0)))
    args.append(qw.zero)
  compiler_params = None
  if not interpret and jax.default_backend() == "gpu":
    from jax.experimental.pallas import triton as pltriton
    compiler_params = pltriton.CompilerParams(num_warps=num_warps, num_stages=num_stages)
  dot_dtype = jnp.float32 if dot_f32 else x.dtype
  out = pl.pallas_call(
      functools.partial(_kloop_kernel, bits=bits, zero_point=qw.zero is not None, g=g, bk=bk,
                        nk=K // bk, dot_dtype=dot_dtype),
      out_shape=jax.ShapeDtypeStruct((Mp, N), x.dtype),
      grid=(Mp // bm, N // bn),
      in_specs=in_specs,
      out_specs=pl.BlockSpec((bm, bn), lambda i, j: (i, j)),
      interpret=interpret,
      compiler_params=compiler_params,
  )(*args)
  return out[:M]


# ---------------------------------------------------------------- helpers

class Run:
  def __init__(self, out_dir, budget_s, interpret):
    self.out_dir, self.interpret = out_dir, interpret
    self.deadline = time.monotonic() + budget_s
    self.res = {"jax": jax.__version__, "backend": jax.default_backend(),
                "device": str(jax.devices()[0].device_kind), "interpret": interpret}
    self.seen_errors = set()

  def left(self) -> float:
    return self.deadline - time.monotonic()

  def save(self):
    text = json.dumps(self.res, indent=1, default=str)
    if self.out_dir:
      with open(os.path.join(self.out_dir, "pallas_gpu_check.json"), "w") as f:
        f.write(text)
    return text

  def error(self, e: BaseException) -> str:
    msg = f"{type(e).__name__}: {e}"
    key = msg[:200]
    if key not in self.seen_errors:   # the full traceback once per distinct error, in the log
      self.seen_errors.add(key)
      print("----- first occurrence of error:", file=sys.stderr)
      traceback.print_exception(e, file=sys.stderr)
      print("-----", file=sys.stderr, flush=True)
    return msg[:3000]


def timeit(fn, *args, reps=7, inner=20) -> float:
  """Seconds per call: median over `reps` of the mean of `inner` back-to-back calls."""
  jax.block_until_ready(fn(*args))
  jax.block_until_ready(fn(*args))
  ts = []
  for _ in range(reps):
    t = time.perf_counter()
    for _ in range(inner):
      r = fn(*args)
    jax.block_until_ready(r)
    ts.append((time.perf_counter() - t) / inner)
  return statistics.median(ts)


def log(*a):
  print(*a, file=sys.stderr, flush=True)


_gold = jax.jit(lambda x, qw: jnp.dot(x.astype(jnp.float32), dequantize(qw).T,
                                      precision=jax.lax.Precision.HIGHEST))
_ref = jax.jit(qmatmul_reference)


def qmatmul_errors(got, x, qw) -> dict:
  """Against the library reference (the CPU test's comparison and tolerance) and against the
  exact-f32 product (precision HIGHEST), relative to the largest |output|."""
  want = np.asarray(_ref(x, qw), np.float32)
  gold = np.asarray(_gold(x, qw), np.float32)
  got = np.asarray(got, np.float32)
  tol = 1e-5 if x.dtype == jnp.float32 else 2e-2
  scale = float(np.abs(gold).max()) or 1.0
  return {"finite": bool(np.isfinite(got).all()),
          "passes_cpu_test_tol": bool(np.allclose(got, want, rtol=tol, atol=tol * 10)),
          "cpu_test_tol": tol,
          "max_abs_err_vs_ref": float(np.abs(got - want).max()),
          "max_rel_err_vs_exact": float(np.abs(got - gold).max()) / scale,
          "ref_max_rel_err_vs_exact": float(np.abs(want - gold).max()) / scale}


def case_inputs(M, N, K, bits, g, zp, dtype):
  w = jax.random.normal(jax.random.key(K + N), (N, K))
  x = jax.random.normal(jax.random.key(M), (M, K)).astype(dtype)
  return x, quantize(w, bits, g, zp)


# ---------------------------------------------------------------- sections

def section_qmatmul_cases(run: Run, name: str, fn, blocks_fn=None):
  """`blocks_fn(M, N, K, g, bits)`: the blocks `fn` picks itself (else the CASES' blocks)."""
  rows = []
  for M, N, K, bits, g, zp, dtype, blocks in CASES:
    if blocks_fn is not None:
      blocks = blocks_fn(M, N, K, g or K, bits)
    row = {"M": M, "N": N, "K": K, "bits": bits, "group": g, "zero_point": zp,
           "dtype": jnp.dtype(dtype).name, "blocks": blocks}
    try:
      x, qw = case_inputs(M, N, K, bits, g, zp, dtype)
      row.update(qmatmul_errors(fn(x, qw, blocks), x, qw))
    except Exception as e:
      row["error"] = run.error(e)
    log(name, json.dumps(row))
    rows.append(row)
  run.res[name] = rows
  run.res[name + "_summary"] = {
      "cases": len(rows), "errors": sum("error" in r for r in rows),
      "pass_cpu_tol": sum(bool(r.get("passes_cpu_test_tol")) for r in rows)}
  run.save()


def section_act_compress(run: Run, big: tuple):
  backends = ["interpret"] if run.interpret else ["default"]
  if not run.interpret:
    try:   # jax 0.10 has the flag (default True: Mosaic GPU); later versions may not
      run.res["jax_pallas_use_mosaic_gpu"] = bool(getattr(jax.config, "jax_pallas_use_mosaic_gpu"))
      backends.append("flag_flipped")
    except Exception as e:
      run.res["jax_pallas_use_mosaic_gpu"] = f"unavailable: {type(e).__name__}: {e}"
  cases = COMPRESS_CASES + [(big, b, 8) for b in (1, 2, 4, 8)]
  rows = run.res["act_compress"] = []
  ref_jit = jax.jit(compress_ref, static_argnames=("bits",))
  for backend in backends:
    if backend == "flag_flipped":
      jax.config.update("jax_pallas_use_mosaic_gpu", not run.res["jax_pallas_use_mosaic_gpu"])
    try:
      for shape, bits, block in cases:
        row = {"backend": backend, "shape": shape, "bits": bits, "block": block}
        try:
          x = jax.random.normal(jax.random.key(0), shape) * 3 + 1
          ref = ref_jit(x, bits, 11)
          got = compress_pallas(x, bits, 11, block=block, interpret=run.interpret)
          jax.block_until_ready(got)
          for k in ("packed", "mn", "scale"):
            a, b = np.asarray(getattr(ref, k)), np.asarray(getattr(got, k))
            row[f"{k}_mismatches"] = int((a != b).sum())
          row["of_elements"] = int(np.prod(shape))
          dq = np.abs(np.asarray(unpack_bits(got.packed, bits), np.int64)
                      - np.asarray(unpack_bits(ref.packed, bits), np.int64))
          row["max_code_diff"] = int(dq.max())
          row["decompressed_bitwise_equal"] = bool(np.array_equal(
              np.asarray(decompress_ref(got)), np.asarray(decompress_ref(ref))))
          row["bitwise_equal"] = (row["decompressed_bitwise_equal"] and row["packed_mismatches"] == 0
                                  and row["mn_mismatches"] == 0 and row["scale_mismatches"] == 0)
          if shape == big and run.left() > 30:
            kern = functools.partial(compress_pallas, bits=bits, seed=11, block=block,
                                     interpret=run.interpret)
            t_ref = timeit(lambda x: ref_jit(x, bits, 11), x)
            t_k = timeit(kern, x)
            row.update(ref_us=1e6 * t_ref, kernel_us=1e6 * t_k, speedup_vs_ref=t_ref / t_k,
                       kernel_read_gbps=x.nbytes / t_k / 1e9)
        except Exception as e:
          row["error"] = run.error(e)
        log("act_compress", json.dumps(row))
        rows.append(row)
        run.save()
    finally:
      if backend == "flag_flipped":
        jax.config.update("jax_pallas_use_mosaic_gpu", run.res["jax_pallas_use_mosaic_gpu"])


def section_bench(run: Run, ns, ms, interpret: bool):
  rows = run.res["qmatmul_bench"] = []
  dot = jax.jit(lambda x, w: jnp.dot(x, w, preferred_element_type=jnp.float32).astype(x.dtype))
  reps = dict(reps=3, inner=3) if interpret else dict(reps=7, inner=20)
  lib = jax.jit(functools.partial(qmatmul_pallas, interpret=interpret))
  variants = {"kloop_bf16mma": functools.partial(qmatmul_kloop, interpret=interpret),
              "kloop_f32dot": functools.partial(qmatmul_kloop, dot_f32=True, interpret=interpret),
              "library": lib}
  lib_failed = {}
  for n in ns:
    w = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    w_kn = w.T.astype(jnp.bfloat16)
    qws = {bits: quantize(w, bits) for bits in (8, 4)}
    for m in ms:
      if run.left() < 20:
        run.res["bench_stopped_early"] = f"budget left {run.left():.0f} s before n={n} m={m}"
        break
      x = jax.random.normal(jax.random.key(1), (m, n), jnp.bfloat16)
      t_bf16 = timeit(dot, x, w_kn, **reps)
      for bits, qw in qws.items():
        t_ref = timeit(_ref, x, qw, **reps)
        row = {"M": m, "K": n, "N": n, "bits": bits, "bf16_dot_us": 1e6 * t_bf16,
               "reference_us": 1e6 * t_ref, "weight_bytes": qw.nbytes,
               "kloop_blocks": kloop_blocks(m, n, n, qw.group_size, bits)}
        for name, fn in variants.items():
          if name == "library" and (bits, m <= 16) in lib_failed:
            row["library_skipped"] = lib_failed[(bits, m <= 16)]
            continue
          try:
            t0 = time.perf_counter()
            got = jax.block_until_ready(fn(x, qw))
            row[f"{name}_first_call_s"] = time.perf_counter() - t0   # compilation, mostly
            if name == "library" and row[f"{name}_first_call_s"] > 20:   # don't pay that again
              lib_failed[(bits, m <= 16)] = f"n={n} m={m}: first call took over 20 s"
            e = qmatmul_errors(got, x, qw)
            row[f"{name}_max_rel_err_vs_exact"] = e["max_rel_err_vs_exact"]
            row[f"{name}_passes_cpu_test_tol"] = e["passes_cpu_test_tol"]
            row[f"{name}_finite"] = e["finite"]
            t = timeit(fn, x, qw, **reps)
            moved = qw.nbytes + x.nbytes + 2 * m * n
            row[f"{name}_us"] = 1e6 * t
            row[f"{name}_speedup_vs_bf16_dot"] = t_bf16 / t
            row[f"{name}_speedup_vs_reference"] = t_ref / t
            row[f"{name}_gbps"] = moved / t / 1e9
          except Exception as ex:
            row[f"{name}_error"] = run.error(ex)
            if name == "library":
              lib_failed[(bits, m <= 16)] = f"failed at n={n} m={m}"
        log("bench", json.dumps(row))
        rows.append(row)
        run.save()


def section_sweep(run: Run, n, configs_by_m, interpret: bool):
  rows = run.res["qmatmul_sweep"] = []
  reps = dict(reps=3, inner=3) if interpret else dict(reps=7, inner=20)
  w = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  for bits in (8, 4):
    qw = quantize(w, bits)
    for m, configs in configs_by_m.items():
      x = jax.random.normal(jax.random.key(1), (m, n), jnp.bfloat16)
      for blocks, nw, ns in configs:
        if run.left() < 15:
          run.res["sweep_stopped_early"] = True
          break
        row = {"M": m, "K": n, "N": n, "bits": bits, "blocks": blocks, "num_warps": nw,
               "num_stages": ns}
        try:
          fn = functools.partial(qmatmul_kloop, blocks=blocks, num_warps=nw, num_stages=ns,
                                 interpret=interpret)
          row["max_rel_err_vs_exact"] = qmatmul_errors(fn(x, qw), x, qw)["max_rel_err_vs_exact"]
          t = timeit(fn, x, qw, **reps)
          row.update(us=1e6 * t, gbps=(qw.nbytes + x.nbytes + 2 * m * n) / t / 1e9)
        except Exception as e:
          row["error"] = run.error(e)
        log("sweep", json.dumps(row))
        rows.append(row)
        run.save()


def main() -> int:
  ap = argparse.ArgumentParser()
  ap.add_argument("--out", default="", help="folder for pallas_gpu_check.json")
  ap.add_argument("--budget", type=float, default=240.0, help="seconds; later sections shrink")
  ap.add_argument("--interpret", action="store_true", help="interpret mode (CPU check of this script)")
  ap.add_argument("--small", action="store_true", help="small shapes (CPU check of this script)")
  ap.add_argument("--sections", default="lib,compress,kloop,bench,sweep")
  a = ap.parse_args()
  if jax.default_backend() != "gpu" and not a.interpret:
    print(json.dumps({"error": f"needs a GPU (or --interpret), found {jax.default_backend()}"}))
    return 1
  run = Run(a.out, a.budget, a.interpret)
  floor = jax.jit(lambda x: x + 1)
  run.res["dispatch_floor_us"] = 1e6 * timeit(floor, jnp.ones((16,)))
  sections = a.sections.split(",")
  t0 = time.monotonic()
  if "lib" in sections:
    section_qmatmul_cases(run, "qmatmul_lib", lambda x, qw, blocks: qmatmul_pallas(
        x, qw, blocks=blocks, interpret=a.interpret))
  if "compress" in sections:
    section_act_compress(run, (256, 256) if a.small else (4096, 4096))
  if "kloop" in sections:   # the CASES' blocks are the library's; the candidate picks its own
    section_qmatmul_cases(run, "qmatmul_kloop", lambda x, qw, blocks: qmatmul_kloop(
        x, qw, blocks, interpret=a.interpret), blocks_fn=kloop_blocks)
  if "bench" in sections:
    section_bench(run, (512,) if a.small else (4096, 8192), (1, 16) if a.small else (1, 8, 16, 128),
                  a.interpret)
  if "sweep" in sections:
    if a.small:
      section_sweep(run, 256, {1: [((16, 32, 64), 4, 3)], 32: [((32, 32, 32), 4, 2)]}, a.interpret)
    else:
      section_sweep(run, 8192, {
          1: [((16, 16, 256), 4, 3), ((16, 32, 512), 4, 3), ((16, 64, 256), 4, 3),
              ((16, 32, 256), 8, 4)],
          128: [((64, 64, 64), 4, 3), ((128, 128, 64), 8, 3), ((64, 128, 128), 4, 3),
                ((128, 64, 64), 4, 4)]}, a.interpret)
  run.res["elapsed_s"] = time.monotonic() - t0
  print(run.save())
  return 0


if __name__ == "__main__":
  sys.exit(main())
