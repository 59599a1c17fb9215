"""The CPU path of the W8A16/W4A16 matmul: an XLA FFI custom call (`csrc/quant_matmul_cpu.cc`)
that converts the integer codes inside the dot-product loop, so decode reads 1 (INT8) or 1/2
(INT4) byte per weight and never materialises a dequantized matrix.

The C++ source ships with the package and is compiled on first use with the system C++ compiler
into a per-user cache (`$JAXPAPERS_CACHE`, default `~/.cache/jaxpapers`), keyed by the source, the
jaxlib version and the CPU's instruction-set flags. Without a compiler, `available()` is False and callers use the XLA path
(`quant_matmul.qmatmul_xla_tiled`); `reason()` says why.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

from jaxpapers.core.errors import ConfigError
from pallas_kernels.int_quant import QuantizedWeight

_SOURCE = pathlib.Path(__file__).parent / "csrc" / "quant_matmul_cpu.cc"
_TARGET = "jaxpapers_quant_matmul_f32"
_state: dict = {}


def _cache_dir() -> pathlib.Path:
  root = os.environ.get("JAXPAPERS_CACHE") or os.path.join(pathlib.Path.home(), ".cache", "jaxpapers")
  return pathlib.Path(root) / "ffi"


def _cpu_id() -> bytes:
  """The instruction-set flags of this CPU (the build uses -march=native, so a cache shared by
  machines with different CPUs must not hand one's binary to another)."""
  try:
    with open("/proc/cpuinfo") as f:
      flags = next((l for l in f if l.startswith(("flags", "Features"))), "")
  except OSError:
    flags = ""
  return (platform.machine() + flags).encode()


def _build() -> pathlib.Path:
  src = _SOURCE.read_bytes()
  key = hashlib.sha256(src + jaxlib.__version__.encode() + _cpu_id()).hexdigest()[:16]
  lib = _cache_dir() / f"quant_matmul_cpu-{key}.so"
  if lib.exists():
    return lib
  cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
  if cxx is None:
    raise RuntimeError("no C++ compiler found (set CXX)")
  lib.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:   # build aside, then rename: atomic
    out = pathlib.Path(tmp) / lib.name
    cmd = [cxx, "-O3", "-march=native", "-ffast-math", "-std=c++17", "-shared", "-fPIC", "-w",
           f"-I{jax.ffi.include_dir()}", str(_SOURCE), "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
      raise RuntimeError(f"compiling {_SOURCE.name} failed: {res.stderr.strip()[-500:]}")
    os.replace(out, lib)
  return lib


def available() -> bool:
  """Builds (once) and registers the custom call; False when that is impossible here."""
  if "ok" not in _state:
    try:
      lib = ctypes.cdll.LoadLibrary(str(_build()))
      jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(lib.JaxpapersQuantMatmulF32),
                                  platform="cpu")
      _state.update(ok=True, reason="compiled FFI kernel")
    except (OSError, RuntimeError) as e:
      _state.update(ok=False, reason=str(e))
  return _state["ok"]


def reason() -> str:
  available()
  return _state["reason"]


def qmatmul_ffi(x: jnp.ndarray, qw: QuantizedWeight) -> jnp.ndarray:
  """x [M, K] @ dequant(qw)^T -> [M, N] in x.dtype (accumulated in FP32)."""
  if not available():
    raise RuntimeError(f"the CPU quantized-matmul kernel is unavailable: {reason()}")
  M, K = x.shape
  if K != qw.in_features:
    raise ConfigError(f"activation K={K} does not match the quantized weight's K={qw.in_features}")
  N = qw.scale.shape[0]
  call = jax.ffi.ffi_call(_TARGET, jax.ShapeDtypeStruct((M, N), jnp.float32),
                          vmap_method="sequential")
  zero = qw.scale if qw.zero is None else qw.zero
  y = call(x.astype(jnp.float32), qw.q, qw.scale.astype(jnp.float32), zero.astype(jnp.float32),
           bits=np.int64(qw.bits), group_size=np.int64(qw.group_size),
           zero_point=np.int64(qw.zero is not None))
  return y.astype(x.dtype)
