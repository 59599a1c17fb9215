"""The Pallas kernels of `pallas_kernels/` compiled for the GPU (not interpret mode) against their
jnp references, with timings as ratios.

  python experiments/bench/pallas_gpu_check.py [--out DIR] [--budget 240]   # on a GPU
  python experiments/bench/pallas_gpu_check.py --interpret --small          # the same code on CPU

Sections (each written to DIR/pallas_gpu_check.json as soon as it is done; a case that fails to
lower is recorded with its error and the run goes on; `--sections` picks some):
  lib        `qmatmul_pallas(..., layout="gpu")` (grid over M and N, the K loop inside the kernel
             with an FP32 accumulator, INT4 activations as even/odd column inputs) on the CPU
             tests' CASES with the default blocks and on the gpu rows of their BLOCK_CASES with
             the explicit blocks, each against `qmatmul_reference` with the tests' criterion
             (max error <= tol * max |reference|, tol 1e-5 f32 / 2e-2 bf16) and against the
             exact-f32 product.
  compress   `compress_pallas` / `decompress_pallas` (layout "gpu": Triton) vs the jitted
             `compress_ref` / `decompress_ref`: bitwise equality recorded, a pass allowing a
             code within one step and a scale within 4 ulp (Triton's division is approximate);
             both timed against the jitted references.
  bench      the shapes of quant_matmul_gpu.py (M in {1, 16, 128}, N = K in {4096, 8192}, INT8
             and INT4, bf16 activations): the bf16 dot, the jitted reference and the library
             kernel with its default blocks; errors, speed ratios and achieved GB/s.
  sweep      the library kernel at a few explicit `blocks` (num_warps and num_stages are fixed
             inside the library, 4 and 3, so they are not swept).

History: the library kernel once reduced K over a grid axis, which raced on GPU; a candidate
that looped over K inside the kernel was checked here and is now the library's GPU layout.

Timing: median over `reps` of the mean of `inner` back-to-back calls (after two warm-up calls),
so the per-call dispatch cost is overlapped with the GPU work; `dispatch_floor_us` is that figure
for a trivial jitted op, the floor under every timing.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import traceback
from pathlib import Path

import jax
import jaxlib
import jax.numpy as jnp
import numpy as np

from pallas_kernels.act_compress import (compress_pallas, compress_ref, decompress_pallas,
                                         decompress_ref, unpack_bits)
from jaxpapers.core.flops import median_time_pipelined as timeit
from pallas_kernels.int_quant import dequantize, qmatmul_reference, quantize
from pallas_kernels.quant_matmul import default_blocks, qmatmul_pallas


def _test_cases():
  """The CPU tests' own cases, read from tests/pallas_kernels/test_quant_matmul.py so the two
  cannot drift apart: CASES (M, N, K, bits, group_size, zero_point, x dtype) and BLOCK_CASES
  (layout, M, N, K, bits, group_size, zero_point, blocks), whose x dtype is f32."""
  import importlib.util
  import types
  # the test module imports the suite's helpers (registered by tests/conftest.py, which this
  # script must not run: it forces the CPU); only the case lists are read here
  sys.modules.setdefault("jp_testutil", types.SimpleNamespace(assert_close_scaled=None))
  path = Path(__file__).resolve().parents[2] / "tests" / "pallas_kernels" / "test_quant_matmul.py"
  spec = importlib.util.spec_from_file_location("_quant_matmul_tests", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.CASES, module.BLOCK_CASES


CASES, BLOCK_CASES = _test_cases()
# (M, N, K, bits, group_size, zero_point, x dtype, blocks or None for the default ones, source)
GPU_CASES = ([(*c, None, "CASES") for c in CASES]
             + [(*c[1:7], jnp.float32, c[7], "BLOCK_CASES") for c in BLOCK_CASES if c[0] == "gpu"])

# (shape, bits, block): tests/gact/test_compress.py, then larger ones for timing
COMPRESS_CASES = [((3, 1000), 2, 8), ((4096,), 4, None), ((2, 7, 33), 1, 8), ((300,), 8, None),
                  ((64, 64), 2, 16)]


# ---------------------------------------------------------------- helpers

class Run:
  def __init__(self, out_dir, budget_s, interpret):
    self.out_dir, self.interpret = out_dir, interpret
    if out_dir:
      os.makedirs(out_dir, exist_ok=True)
    self.deadline = time.monotonic() + budget_s
    self.res = {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "backend": jax.default_backend(),
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


def log(*a):
  print(*a, file=sys.stderr, flush=True)


_gold = jax.jit(lambda x, qw: jnp.dot(x.astype(jnp.float32), dequantize(qw).T,
                                      precision=jax.lax.Precision.HIGHEST))
_ref = jax.jit(qmatmul_reference)


def qmatmul_errors(got, x, qw) -> dict:
  """Against the library reference with the CPU tests' criterion (max |error| <= tol * max
  |reference|, tol 1e-5 for f32 and 2e-2 for bf16 activations) and against the exact-f32
  product (precision HIGHEST), both relative to the largest |output|."""
  want = np.asarray(_ref(x, qw), np.float32)
  gold = np.asarray(_gold(x, qw), np.float32)
  got = np.asarray(got, np.float32)
  tol = 1e-5 if x.dtype == jnp.float32 else 2e-2
  err = float(np.abs(got - want).max())
  ref_max = float(np.abs(want).max())
  scale = float(np.abs(gold).max()) or 1.0
  return {"finite": bool(np.isfinite(got).all()),
          "passes_cpu_test_tol": bool(err <= tol * ref_max),
          "cpu_test_tol": tol,
          "max_abs_err_vs_ref": err,
          "max_rel_err_vs_ref": err / (ref_max or 1.0),
          "max_rel_err_vs_exact": float(np.abs(got - gold).max()) / scale,
          "ref_max_rel_err_vs_exact": float(np.abs(want - gold).max()) / scale}


def case_inputs(M, N, K, bits, g, zp, dtype):
  """The CPU tests' `_case`: the same weights, activations and quantization."""
  w = jax.random.normal(jax.random.key(K + N), (N, K))
  x = jax.random.normal(jax.random.key(M), (M, K)).astype(dtype)
  return x, quantize(w, bits, g, zp)


# ---------------------------------------------------------------- sections

def section_lib(run: Run):
  """`qmatmul_pallas(layout="gpu")` on GPU_CASES: the CASES with the default blocks, the gpu
  BLOCK_CASES with theirs."""
  rows = []
  for M, N, K, bits, g, zp, dtype, blocks, source in GPU_CASES:
    row = {"source": source, "M": M, "N": N, "K": K, "bits": bits, "group": g, "zero_point": zp,
           "dtype": jnp.dtype(dtype).name, "explicit_blocks": blocks is not None}
    try:
      x, qw = case_inputs(M, N, K, bits, g, zp, dtype)
      row["blocks"] = blocks or default_blocks(M, N, K, qw.group_size, bits, "gpu")
      got = qmatmul_pallas(x, qw, layout="gpu", blocks=blocks, interpret=run.interpret)
      row["shape_dtype_ok"] = got.shape == (M, N) and got.dtype == x.dtype
      row.update(qmatmul_errors(got, x, qw))
    except Exception as e:
      row["error"] = run.error(e)
    log("lib", json.dumps(row))
    rows.append(row)
  run.res["qmatmul_lib"] = rows
  run.res["qmatmul_lib_summary"] = {
      "cases": len(rows), "errors": sum("error" in r for r in rows),
      "pass_cpu_tol": sum(bool(r.get("passes_cpu_test_tol")) for r in rows),
      "shape_dtype_ok": sum(bool(r.get("shape_dtype_ok")) for r in rows)}
  run.save()


def section_act_compress(run: Run, big: tuple):
  """The compressor kernels on the GPU (Triton: `compress_pallas` names its compiler). Bitwise
  equality with XLA's reference is recorded but not required: Triton's f32 division is an
  approximate one and fused multiply-adds may differ, so a code may move by one step and a
  scale by a few ulp; `passes` asks codes within 1, min exact, scale within 4 ulp."""
  cases = COMPRESS_CASES + [(big, b, 8) for b in (1, 2, 4, 8)]
  rows = run.res["act_compress"] = []
  ref_jit = jax.jit(compress_ref, static_argnames=("bits",))
  dref_jit = jax.jit(decompress_ref)
  for shape, bits, block in cases:
    row = {"shape": shape, "bits": bits, "block": block}
    try:
      x = jax.random.normal(jax.random.key(0), shape) * 3 + 1
      ref = ref_jit(x, bits, 11)
      got = compress_pallas(x, bits, 11, layout="gpu", block=block, interpret=run.interpret)
      jax.block_until_ready(got)
      for k in ("packed", "mn", "scale"):
        a, b = np.asarray(getattr(ref, k)), np.asarray(getattr(got, k))
        row[f"{k}_mismatches"] = int((a != b).sum())
      row["of_elements"] = int(np.prod(shape))
      dq = np.abs(np.asarray(unpack_bits(got.packed, bits), np.int64)
                  - np.asarray(unpack_bits(ref.packed, bits), np.int64))
      row["max_code_diff"] = int(dq.max())
      row["scale_max_ulps"] = int(np.abs(np.asarray(got.scale).view(np.int32).astype(np.int64)
                                         - np.asarray(ref.scale).view(np.int32)).max())
      dk = np.asarray(decompress_pallas(ref, layout="gpu", block=block, interpret=run.interpret))
      dr = np.asarray(dref_jit(ref))
      row["decompressed_bitwise_equal"] = bool(np.array_equal(dk, dr))
      row["decompressed_max_rel_err"] = float(np.abs(dk - dr).max() / np.abs(dr).max())
      row["bitwise_equal"] = (row["decompressed_bitwise_equal"] and row["packed_mismatches"] == 0
                              and row["mn_mismatches"] == 0 and row["scale_mismatches"] == 0)
      row["passes"] = (row["max_code_diff"] <= 1 and row["mn_mismatches"] == 0
                       and row["scale_max_ulps"] <= 4 and row["decompressed_max_rel_err"] <= 1e-6)
      if shape == big and run.left() > 30:
        kern = functools.partial(compress_pallas, bits=bits, seed=11, layout="gpu",
                                 block=block, interpret=run.interpret)
        dkern = functools.partial(decompress_pallas, layout="gpu", block=block,
                                  interpret=run.interpret)
        t_ref, t_k = timeit(lambda x: ref_jit(x, bits, 11), x), timeit(kern, x)
        t_dref, t_dk = timeit(dref_jit, ref), timeit(dkern, ref)
        row.update(ref_us=1e6 * t_ref, kernel_us=1e6 * t_k, speedup_vs_ref=t_ref / t_k,
                   kernel_read_gbps=x.nbytes / t_k / 1e9, decompress_ref_us=1e6 * t_dref,
                   decompress_kernel_us=1e6 * t_dk, decompress_speedup_vs_ref=t_dref / t_dk)
    except Exception as e:
      row["error"] = run.error(e)
    log("act_compress", json.dumps(row))
    rows.append(row)
    run.save()


def section_bench(run: Run, ns, ms, interpret: bool):
  rows = run.res["qmatmul_bench"] = []
  dot = jax.jit(lambda x, w: jnp.dot(x, w, preferred_element_type=jnp.float32).astype(x.dtype))
  reps = dict(reps=3, inner=3) if interpret else dict(reps=7, inner=20)
  lib = functools.partial(qmatmul_pallas, layout="gpu", interpret=interpret)
  lib_failed = {}   # (bits, decode) -> why: a kernel that failed once is not tried at larger n
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
               "blocks": default_blocks(m, n, n, qw.group_size, bits, "gpu")}
        key = (bits, m <= 16)
        if key in lib_failed:
          row["library_skipped"] = lib_failed[key]
        else:
          try:
            t0 = time.perf_counter()
            got = jax.block_until_ready(lib(x, qw))
            row["library_first_call_s"] = time.perf_counter() - t0   # compilation, mostly
            e = qmatmul_errors(got, x, qw)
            row["library_max_rel_err_vs_ref"] = e["max_rel_err_vs_ref"]
            row["library_max_rel_err_vs_exact"] = e["max_rel_err_vs_exact"]
            row["library_passes_cpu_test_tol"] = e["passes_cpu_test_tol"]
            row["library_finite"] = e["finite"]
            t = timeit(lib, x, qw, **reps)
            moved = qw.nbytes + x.nbytes + 2 * m * n
            row["library_us"] = 1e6 * t
            row["library_speedup_vs_bf16_dot"] = t_bf16 / t
            row["library_speedup_vs_reference"] = t_ref / t
            row["library_gbps"] = moved / t / 1e9
          except Exception as ex:
            row["library_error"] = run.error(ex)
            lib_failed[key] = f"failed at n={n} m={m}"
        log("bench", json.dumps(row))
        rows.append(row)
        run.save()


def section_sweep(run: Run, n, blocks_by_m, interpret: bool):
  """The library kernel at explicit `blocks`, INT8 and INT4, per-row scales."""
  rows = run.res["qmatmul_sweep"] = []
  reps = dict(reps=3, inner=3) if interpret else dict(reps=7, inner=20)
  w = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  for bits in (8, 4):
    qw = quantize(w, bits)
    for m, block_list in blocks_by_m.items():
      x = jax.random.normal(jax.random.key(1), (m, n), jnp.bfloat16)
      for blocks in block_list:
        if run.left() < 15:
          run.res["sweep_stopped_early"] = True
          break
        row = {"M": m, "K": n, "N": n, "bits": bits, "blocks": blocks,
               "default_blocks": blocks == default_blocks(m, n, n, qw.group_size, bits, "gpu")}
        try:
          fn = functools.partial(qmatmul_pallas, layout="gpu", blocks=blocks, interpret=interpret)
          e = qmatmul_errors(fn(x, qw), x, qw)
          row["max_rel_err_vs_exact"] = e["max_rel_err_vs_exact"]
          row["passes_cpu_test_tol"] = e["passes_cpu_test_tol"]
          t = timeit(fn, x, qw, **reps)
          row.update(us=1e6 * t, gbps=(qw.nbytes + x.nbytes + 2 * m * n) / t / 1e9)
        except Exception as ex:
          row["error"] = run.error(ex)
        log("sweep", json.dumps(row))
        rows.append(row)
        run.save()


def main() -> int:
  ap = argparse.ArgumentParser()
  ap.add_argument("--out", default="", help="folder for pallas_gpu_check.json")
  ap.add_argument("--budget", type=float, default=240.0, help="seconds; later sections shrink")
  ap.add_argument("--interpret", action="store_true", help="interpret mode (CPU check of this script)")
  ap.add_argument("--small", action="store_true", help="small shapes (CPU check of this script)")
  ap.add_argument("--sections", default="lib,compress,bench,sweep")
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
    section_lib(run)
  if "compress" in sections:
    section_act_compress(run, (256, 256) if a.small else (4096, 4096))
  if "bench" in sections:
    section_bench(run, (512,) if a.small else (4096, 8192), (1, 16, 128), a.interpret)
  if "sweep" in sections:
    if a.small:
      section_sweep(run, 256, {1: [(16, 32, 64)], 32: [(32, 32, 32)]}, a.interpret)
    else:
      section_sweep(run, 8192, {
          1: [(16, 16, 256), (16, 32, 256), (16, 32, 512), (16, 64, 256), (16, 32, 128)],
          128: [(64, 128, 256), (64, 64, 64), (128, 128, 64), (64, 128, 128), (128, 64, 64)]},
          a.interpret)
  run.res["elapsed_s"] = time.monotonic() - t0
  print(run.save())
  return 0


if __name__ == "__main__":
  sys.exit(main())
