"""Two builds of the CPU quantized-matmul kernel in one process, interleaved: the source of a git
revision against the working tree's, W8A16 and W4A16 (absmax, one scale per row) at batch 1.

  python experiments/bench/cpu_kernel_ab.py --old 06c77df [--rounds 15]

Builds both with the package's flags into a temporary folder, registers them as two FFI targets,
and prints JSON: per shape and width, G weights/s of each and the speed ratio new / old (medians
over `rounds` interleaved calls, so the machine's drift hits both alike).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels import quant_matmul_cpu as C
from pallas_kernels.int_quant import quantize

SHAPES = ((2048, 11008), (11008, 2048), (8192, 8192))    # (K, N)


def build(source: str, out: Path) -> ctypes.CDLL:
  src = out.with_suffix(".cc")
  src.write_text(source)
  C.compile_library(src, out)
  return ctypes.cdll.LoadLibrary(str(out))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--old", required=True, help="git revision whose kernel source is the baseline")
  ap.add_argument("--rounds", type=int, default=15)
  a = ap.parse_args()
  root = Path(__file__).resolve().parents[2]
  rel = C._SOURCE.relative_to(root)
  old_src = subprocess.run(["git", "show", f"{a.old}:{rel}"], cwd=root, check=True,
                           capture_output=True, text=True).stdout
  with tempfile.TemporaryDirectory() as tmp:
    libs = {"old": build(old_src, Path(tmp) / "old.so"),
            "new": build(C._SOURCE.read_text(), Path(tmp) / "new.so")}
    for name, lib in libs.items():
      jax.ffi.register_ffi_target(f"ab_{name}", jax.ffi.pycapsule(lib.JaxpapersQuantMatmulF32),
                                  platform="cpu")
    out = {"old": a.old, "rounds": a.rounds}
    for K, N in SHAPES:
      w = jax.random.normal(jax.random.key(0), (N, K))
      x = jax.random.normal(jax.random.key(1), (1, K))
      for bits in (8, 4):
        qw = quantize(w, bits)
        fns = {n: jax.jit(lambda x, qw, n=n: C.qmatmul_ffi(x, qw, target=f"ab_{n}")) for n in libs}
        ref = fns["old"](x, qw)
        np.testing.assert_allclose(fns["new"](x, qw), ref, rtol=1e-4, atol=1e-4 * float(jnp.abs(ref).max()))
        times = {n: [] for n in fns}
        for _ in range(a.rounds):
          for n, f in fns.items():
            t = time.perf_counter()
            f(x, qw).block_until_ready()
            times[n].append(time.perf_counter() - t)
        med = {n: float(np.median(v)) for n, v in times.items()}
        out[f"{K}x{N}_int{bits}"] = {"old_gweights_per_s": K * N / med["old"] / 1e9,
                                     "new_gweights_per_s": K * N / med["new"] / 1e9,
                                     "speedup_new_over_old": med["old"] / med["new"]}
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
