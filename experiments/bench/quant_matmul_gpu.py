"""GPU benchmark of the Pallas W8A16 / W4A16 kernels against a bf16 `jnp.dot` (GLM-130B §5).

  python experiments/bench/quant_matmul_gpu.py            # one command, a few minutes, prints JSON

For M in {1, 8, 16, 128} and K = N in {4096, 8192}: median time of the bf16 dot (weights [K, N]
bf16), of `qmatmul_pallas` with INT8 and INT4 (per-row scales) and bf16 activations, the speed-up
over bf16 (> 1 is faster), the bytes each reads (weights + scales + activations + output) as
achieved GB/s, and that over the card's peak: the nominal HBM bandwidth of known cards and this
process's measured device-to-device copy rate. Each case also checks the kernel against the
reference. A case that fails to lower is reported with its error instead of stopping the run.
"""
from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp

from jaxpapers.core.flops import median_time
from pallas_kernels.int_quant import qmatmul_reference, quantize
from pallas_kernels.quant_matmul import qmatmul_pallas

NOMINAL_GBPS = {"H100": 3350.0, "H200": 4800.0, "A100": 2039.0, "L4": 300.0, "A10": 600.0}


def copy_gbps() -> float:
  a = jnp.ones((256 * 2**20 // 4,), jnp.float32)
  f = jax.jit(lambda a: a * 1.0)
  return 2 * a.nbytes / median_time(f, a, reps=30) / 1e9


def main() -> int:
  dev = jax.devices()[0]
  if dev.platform != "gpu":
    print(json.dumps({"error": f"needs a GPU, found {dev.platform}"}))
    return 1
  kind = dev.device_kind
  nominal = next((v for k, v in NOMINAL_GBPS.items() if k in kind), None)
  out = {"device": kind, "jax": jax.__version__, "nominal_gbps": nominal, "copy_gbps": copy_gbps(),
         "cases": []}
  dot = jax.jit(lambda x, w: jnp.dot(x, w, preferred_element_type=jnp.float32).astype(x.dtype))
  for n in (4096, 8192):
    w = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    w_kn = w.T.astype(jnp.bfloat16)
    for m in (1, 8, 16, 128):
      x = jax.random.normal(jax.random.key(1), (m, n), jnp.bfloat16)
      t_bf16 = median_time(dot, x, w_kn, reps=30)
      case = {"M": m, "K": n, "N": n, "bf16_us": 1e6 * t_bf16,
              "bf16_gbps": (w_kn.nbytes + x.nbytes + 2 * m * n) / t_bf16 / 1e9}
      for bits in (8, 4):
        qw = quantize(w, bits)
        try:
          f = jax.jit(lambda x, qw: qmatmul_pallas(x, qw))
          got = f(x, qw)
          ref = qmatmul_reference(x.astype(jnp.float32), qw)
          err = float(jnp.abs(got.astype(jnp.float32) - ref).max() / jnp.abs(ref).max())
          t = median_time(f, x, qw, reps=30)
          moved = qw.nbytes + x.nbytes + 2 * m * n
          case[f"int{bits}_us"] = 1e6 * t
          case[f"speedup_int{bits}_vs_bf16"] = t_bf16 / t
          case[f"int{bits}_gbps"] = moved / t / 1e9
          case[f"int{bits}_frac_of_nominal"] = (moved / t / 1e9 / nominal) if nominal else None
          case[f"int{bits}_frac_of_copy"] = moved / t / 1e9 / out["copy_gbps"]
          case[f"int{bits}_max_rel_err"] = err
        except Exception as e:  # report and go on: one failing lowering must not hide the rest
          case[f"int{bits}_error"] = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"
      out["cases"].append(case)
      print(json.dumps(case), file=sys.stderr, flush=True)
  print(json.dumps(out, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
