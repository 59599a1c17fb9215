"""GPU check and benchmark of the Pallas W8A16 / W4A16 kernel against a bf16 `jnp.dot` (GLM-130B
§5; issue 18: correctness of every case and W8A16/W4A16 time / a bf16 dot at M in {1, 16, 128},
N = K in {4096, 8192}).

  python experiments/bench/quant_matmul_gpu.py                      # on a GPU, prints JSON
  python experiments/bench/quant_matmul_gpu.py --interpret --small  # the same code on CPU

1. Correctness: `qmatmul_pallas(..., layout="gpu")` on every case of the CPU tests
   (tests/pallas_kernels/test_quant_matmul.py: CASES with the default blocks, and the gpu rows of
   BLOCK_CASES with their explicit blocks), against `qmatmul_reference` with the tests' criterion:
   max |error| <= tol * max |reference|, tol 1e-5 for f32 and 2e-2 for bf16 activations.
2. Timing: for M in {1, 16, 128} and K = N in {4096, 8192} (512 with --small), bf16
   activations: the bf16 dot (weights [K, N] bf16) and the kernel with INT8 and INT4 weights
   (per-row scales, default blocks): times, the kernel's time / the bf16 dot's (< 1 is faster)
   and its speed-up, the bytes it reads (weights + scales + activations + output) as achieved
   GB/s, and that over the card's nominal HBM bandwidth (known cards) and over this process's
   measured device-to-device copy rate. Each timed case is also checked against the reference.
   A time is the median over `reps` of the mean of `inner` back-to-back calls, after two warm-up
   calls, so per-call dispatch overlaps the GPU work; `dispatch_floor_us` is that figure for a
   trivial jitted op.
A case that fails to lower is reported with its error instead of stopping the run. The JSON names
the jax and jaxlib versions and the device kind.
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

from jaxpapers.core.flops import median_time_pipelined as timeit
from pallas_kernels.int_quant import qmatmul_reference, quantize
from pallas_kernels.quant_matmul import default_blocks, qmatmul_pallas

NOMINAL_GBPS = {"H100": 3350.0, "H200": 4800.0, "A100": 2039.0, "L4": 300.0, "A10": 600.0}


def _test_module():
  """tests/pallas_kernels/test_quant_matmul.py, read so the cases here cannot drift from it."""
  path = Path(__file__).resolve().parents[2] / "tests" / "pallas_kernels" / "test_quant_matmul.py"
  spec = importlib.util.spec_from_file_location("_quant_matmul_tests", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def copy_gbps(small: bool, reps: dict) -> float:
  a = jnp.ones(((4 if small else 256) * 2**20 // 4,), jnp.float32)
  f = jax.jit(lambda a: a * 1.0)
  return 2 * a.nbytes / timeit(f, a, **reps) / 1e9


_ref = jax.jit(qmatmul_reference)


def check(got, x, qw) -> dict:
  """The CPU tests' criterion: max |got - reference| <= tol * max |reference|."""
  want = np.asarray(_ref(x, qw), np.float32)
  got = np.asarray(got, np.float32)
  tol = 1e-5 if x.dtype == jnp.float32 else 2e-2
  err, ref_max = float(np.abs(got - want).max()), float(np.abs(want).max())
  return {"max_abs_err": err, "max_rel_err": err / (ref_max or 1.0), "tol": tol,
          "finite": bool(np.isfinite(got).all()), "passes": bool(err <= tol * ref_max)}


def short(e: BaseException) -> str:
  return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"


def correctness(interpret: bool) -> list[dict]:
  tm = _test_module()
  cases = ([(*c, None, "CASES") for c in tm.CASES]
           + [(*c[1:7], jnp.float32, c[7], "BLOCK_CASES") for c in tm.BLOCK_CASES
              if c[0] == "gpu"])
  rows = []
  for M, N, K, bits, g, zp, dtype, blocks, source in cases:
    row = {"source": source, "M": M, "N": N, "K": K, "bits": bits, "group": g, "zero_point": zp,
           "dtype": jnp.dtype(dtype).name, "explicit_blocks": blocks is not None}
    try:
      x, qw = tm._case(M, N, K, bits, g, zp, dtype)
      row["blocks"] = blocks or default_blocks(M, N, K, qw.group_size, bits, "gpu")
      got = qmatmul_pallas(x, qw, layout="gpu", blocks=blocks, interpret=interpret)
      row["shape_dtype_ok"] = got.shape == (M, N) and got.dtype == x.dtype
      row.update(check(got, x, qw))
    except Exception as e:  # report and go on: one failing lowering must not hide the rest
      row["error"] = short(e)
    print(json.dumps(row), file=sys.stderr, flush=True)
    rows.append(row)
  return rows


def main() -> int:
  ap = argparse.ArgumentParser()
  ap.add_argument("--interpret", action="store_true", help="interpret mode (CPU check of this script)")
  ap.add_argument("--small", action="store_true", help="K = N = 512 and fewer timing reps")
  a = ap.parse_args()
  dev = jax.devices()[0]
  if dev.platform != "gpu" and not a.interpret:
    print(json.dumps({"error": f"needs a GPU (or --interpret), found {dev.platform}"}))
    return 1
  kind = dev.device_kind
  reps = dict(reps=3, inner=3) if a.small else dict(reps=7, inner=20)
  nominal = next((v for k, v in NOMINAL_GBPS.items() if k in kind), None)
  out = {"device": kind, "platform": dev.platform, "jax": jax.__version__,
         "jaxlib": jaxlib.__version__, "interpret": a.interpret, "nominal_gbps": nominal,
         "copy_gbps": copy_gbps(a.small, reps),
         "dispatch_floor_us": 1e6 * timeit(jax.jit(lambda x: x + 1), jnp.ones((16,)), **reps)}
  rows = out["correctness"] = correctness(a.interpret)
  out["correctness_summary"] = {"cases": len(rows), "errors": sum("error" in r for r in rows),
                                "pass": sum(bool(r.get("passes")) for r in rows)}
  out["cases"] = []
  dot = jax.jit(lambda x, w: jnp.dot(x, w, preferred_element_type=jnp.float32).astype(x.dtype))
  kern = jax.jit(functools.partial(qmatmul_pallas, layout="gpu", interpret=a.interpret))
  for n in (512,) if a.small else (4096, 8192):
    w = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    w_kn = w.T.astype(jnp.bfloat16)
    qws = {bits: quantize(w, bits) for bits in (8, 4)}
    for m in (1, 16, 128):
      x = jax.random.normal(jax.random.key(1), (m, n), jnp.bfloat16)
      t_bf16 = timeit(dot, x, w_kn, **reps)
      case = {"M": m, "K": n, "N": n, "bf16_us": 1e6 * t_bf16,
              "bf16_gbps": (w_kn.nbytes + x.nbytes + 2 * m * n) / t_bf16 / 1e9}
      for bits, qw in qws.items():
        p = f"int{bits}"
        try:
          case[f"{p}_blocks"] = default_blocks(m, n, n, qw.group_size, bits, "gpu")
          c = check(kern(x, qw), x, qw)
          case[f"{p}_max_rel_err"], case[f"{p}_passes"] = c["max_rel_err"], c["passes"]
          t = timeit(kern, x, qw, **reps)
          gbps = (qw.nbytes + x.nbytes + 2 * m * n) / t / 1e9
          case[f"{p}_us"] = 1e6 * t
          case[f"{p}_time_over_bf16"] = t / t_bf16
          case[f"speedup_{p}_vs_bf16"] = t_bf16 / t
          case[f"{p}_gbps"] = gbps
          case[f"{p}_frac_of_nominal"] = gbps / nominal if nominal else None
          case[f"{p}_frac_of_copy"] = gbps / out["copy_gbps"]
        except Exception as e:  # report and go on: one failing lowering must not hide the rest
          case[f"{p}_error"] = short(e)
      out["cases"].append(case)
      print(json.dumps(case), file=sys.stderr, flush=True)
  print(json.dumps(out, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
