"""CPU decode-shaped matmul with INT8 / INT4 weights vs FP32, as ratios in one process.

  python experiments/bench/quant_matmul_cpu.py [--n 8192 --m 1] [--decode]

Prints JSON: median time of the FP32 matmul (weights stored [K, N]) through XLA's dot and
through the FP32 decode kernel (`quant_matmul_cpu.f32_matmul_ffi`), of the naive XLA
dequantize-then-dot, of the tiled XLA path (`qmatmul_xla_tiled`) and of the FFI kernel
(`quant_matmul_cpu.qmatmul_ffi`, the decode path), each also as a speed-up over the faster FP32
path (> 1 is faster). `--decode` adds whole-model batch-1 decode, FP32 vs INT4/INT8, on the decode model of
`jaxpapers/configs/glm/quantize.py` (as `glm/quantize` measures it).
"""
from __future__ import annotations

import argparse
import json
import jax
import jax.numpy as jnp

from jaxpapers.core.flops import median_time
from pallas_kernels.int_quant import dequantize, quantize
from pallas_kernels import quant_matmul_cpu
from pallas_kernels.quant_matmul import qmatmul_xla_tiled


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--n", type=int, default=8192)
  ap.add_argument("--m", type=int, default=1)
  ap.add_argument("--tile_rows", type=int, default=256)
  ap.add_argument("--decode", action="store_true")
  a = ap.parse_args()
  w = jax.random.normal(jax.random.key(0), (a.n, a.n), jnp.float32)
  x = jax.random.normal(jax.random.key(1), (a.m, a.n), jnp.float32)
  out = {"n": a.n, "m": a.m, "tile_rows": a.tile_rows}
  w_kn = jnp.asarray(w.T)   # FP32 in its fastest layout ([K, N], no transpose in the timed call)
  t_fp = median_time(jax.jit(lambda x, w: x @ w), x, w_kn)
  out["fp32_xla_ms"] = 1e3 * t_fp
  if quant_matmul_cpu.available():
    t_fp_ffi = median_time(jax.jit(quant_matmul_cpu.f32_matmul_ffi), x, w_kn)
    out["fp32_ffi_ms"] = 1e3 * t_fp_ffi
    t_fp = min(t_fp, t_fp_ffi)
  out["fp32_ms"] = 1e3 * t_fp
  for bits in (8, 4):
    qw = quantize(w, bits)
    naive = jax.jit(lambda x, qw: x @ dequantize(qw).T)
    tiled = jax.jit(lambda x, qw: qmatmul_xla_tiled(x, qw, tile_rows=a.tile_rows))
    t_naive, t_tiled = median_time(naive, x, qw), median_time(tiled, x, qw)
    out[f"int{bits}_naive_ms"] = 1e3 * t_naive
    out[f"int{bits}_tiled_ms"] = 1e3 * t_tiled
    out[f"speedup_int{bits}_naive"] = t_fp / t_naive
    out[f"speedup_int{bits}_tiled"] = t_fp / t_tiled
    out[f"weight_bytes_ratio_int{bits}"] = qw.nbytes / (w.size * 4)
    if quant_matmul_cpu.available():
      t_ffi = median_time(jax.jit(quant_matmul_cpu.qmatmul_ffi), x, qw)
      out[f"int{bits}_ffi_ms"] = 1e3 * t_ffi
      out[f"speedup_int{bits}_ffi"] = t_fp / t_ffi
    else:
      out["ffi_unavailable"] = quant_matmul_cpu.reason()
  if a.decode:
    from jaxpapers.core.config import load_config_file
    from jaxpapers.glm.quantize_experiment import decode_benchmark
    from jaxpapers.registry import configs_root
    c = load_config_file(configs_root() / "glm/quantize.py", "quick")
    out["decode"] = {k: v for k, v in decode_benchmark(c).items() if not k.startswith("quantize_")}
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
