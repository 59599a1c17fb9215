"""The CPU decode matmuls as XLA FFI custom calls (`csrc/quant_matmul_cpu.cc`): W8A16/W4A16,
which converts the integer codes inside the dot-product loop, so decode reads 1 (INT8) or 1/2
(INT4) byte per weight and never materialises a dequantized matrix; and the FP32 product of a few
rows with an [K, N] weight, the like-for-like baseline (the same threads, the weight read once).

The C++ source ships with the package and is compiled on first use with the system C++ compiler
into a per-user cache (`$JAXPAPERS_CACHE`, default `~/.cache/jaxpapers`), keyed by the source, the
compiler's identity, the flags, the jaxlib version and the CPU's instruction-set flags.

No `-ffast-math`: with GCC < 13 it links `crtfastmath.o`, whose constructor sets flush-to-zero and
denormals-are-zero in MXCSR when the library loads, silently changing every later FP32
computation of the process. `FLAGS` names the individual relaxations that let the compiler
vectorise the reductions (reassociation, no signed zeros, no traps, no errno) and nothing that
touches the floating-point environment.

A cache folder owned by another user or writable by group/others is refused (`CacheError`,
one line): a library loaded from it would run with this process's rights. Without a compiler,
or when the build fails or times out, `available()` is False, one warning per process names the
path the callers will use instead (`quant_matmul.qmatmul_xla_tiled`), and `reason()` says why.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import pathlib
import platform
import shutil
import stat
import subprocess
import tempfile

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

from jaxpapers.core.errors import ConfigError, JaxpapersError
from pallas_kernels.int_quant import QuantizedWeight

log = logging.getLogger("jaxpapers")

_SOURCE = pathlib.Path(__file__).parent / "csrc" / "quant_matmul_cpu.cc"
_TARGET = "jaxpapers_quant_matmul_f32"
_TARGET_F32 = "jaxpapers_f32_matmul"
# every flag of -ffast-math except the ones that change the FP environment or link crtfastmath.o
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fassociative-math",
         "-fno-signed-zeros", "-freciprocal-math", "-std=c++17", "-shared", "-fPIC", "-w")
BUILD_TIMEOUT_S = 120
_state: dict = {}


class CacheError(JaxpapersError):
  """The kernel cache folder is not safe to load code from."""


def _cache_dir() -> pathlib.Path:
  root = os.environ.get("JAXPAPERS_CACHE") or os.path.join(pathlib.Path.home(), ".cache", "jaxpapers")
  return pathlib.Path(root) / "ffi"


def check_cache_dir(path: pathlib.Path) -> None:
  """Raises CacheError unless `path` and its parent are owned by this user and not writable by
  group or others (a library loaded from there runs inside this process)."""
  for d in (path, path.parent):
    if d.exists():
      _check_private(d)


def _check_private(p: pathlib.Path) -> None:
  """CacheError unless `p` (a cache folder or a library in it) is this user's and not writable by
  group or others."""
  st = p.stat()
  if st.st_uid != os.getuid():
    raise CacheError(f"refusing the kernel cache {p}: owned by uid {st.st_uid}, not by this user "
                     f"(uid {os.getuid()}); set JAXPAPERS_CACHE to a folder of yours")
  if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
    raise CacheError(f"refusing the kernel cache {p}: writable by group or others (mode "
                     f"{stat.S_IMODE(st.st_mode):o}); chmod go-w it or set JAXPAPERS_CACHE")


def _make_private_dirs(path: pathlib.Path) -> None:
  """Creates the missing folders of `path` with mode 0700 each, whatever the umask (mkdir's
  mode applies to the last folder only; a 0775 parent would then be refused)."""
  missing = []
  while not path.exists():
    missing.append(path)
    path = path.parent
  for d in reversed(missing):
    try:
      d.mkdir(mode=0o700)
    except FileExistsError:
      pass
    d.chmod(0o700)


def _cpu_id() -> bytes:
  """The instruction-set flags of this CPU (the build uses -march=native, so a cache shared by
  machines with different CPUs must not hand one's binary to another)."""
  try:
    with open("/proc/cpuinfo") as f:
      flags = next((l for l in f if l.startswith(("flags", "Features"))), "")
  except OSError:
    flags = ""
  return (platform.machine() + flags).encode()


def _compiler() -> tuple[str, bytes]:
  """(path, identity) of the C++ compiler: its resolved path and its `--version` banner."""
  cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
  if cxx is None:
    raise RuntimeError("no C++ compiler found (set CXX)")
  try:
    banner = subprocess.run([cxx, "--version"], capture_output=True, timeout=30).stdout
  except (OSError, subprocess.TimeoutExpired) as e:
    raise RuntimeError(f"the C++ compiler {cxx} does not answer --version: {e}") from None
  return cxx, (shutil.which(cxx) or cxx).encode() + banner


def _build() -> pathlib.Path:
  cxx, identity = _compiler()
  key = hashlib.sha256(b"\0".join([_SOURCE.read_bytes(), identity, " ".join(FLAGS).encode(),
                                   jaxlib.__version__.encode(), _cpu_id()])).hexdigest()[:16]
  cache = _cache_dir()
  check_cache_dir(cache)
  lib = cache / f"quant_matmul_cpu-{key}.so"
  if lib.exists():
    _check_private(lib)       # the library itself, not only its folder
    return lib
  _make_private_dirs(cache)
  check_cache_dir(cache)
  with tempfile.TemporaryDirectory(dir=cache) as tmp:   # build aside, then rename: atomic
    out = pathlib.Path(tmp) / lib.name
    compile_library(_SOURCE, out, cxx)
    os.chmod(out, 0o755)      # the linker's mode follows the umask (002: group-writable)
    os.replace(out, lib)
  return lib


def compile_library(source: pathlib.Path, out: pathlib.Path, cxx: str | None = None) -> None:
  """Compiles the kernel source `source` into the shared library `out` with FLAGS (the system
  compiler unless `cxx`); RuntimeError naming the source on failure or after BUILD_TIMEOUT_S."""
  cmd = [cxx or _compiler()[0], *FLAGS, f"-I{jax.ffi.include_dir()}", str(source), "-o", str(out)]
  try:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
  except subprocess.TimeoutExpired:
    raise RuntimeError(f"compiling {source.name} took over {BUILD_TIMEOUT_S} s") from None
  if res.returncode != 0:
    raise RuntimeError(f"compiling {source.name} failed: {res.stderr.strip()[-500:]}")


def available() -> bool:
  """Builds (once) and registers the custom call; False when that is impossible here (one
  warning per process). A cache folder that is not safe raises CacheError."""
  if "ok" not in _state:
    try:
      lib = ctypes.cdll.LoadLibrary(str(_build()))
      jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(lib.JaxpapersQuantMatmulF32),
                                  platform="cpu")
      jax.ffi.register_ffi_target(_TARGET_F32, jax.ffi.pycapsule(lib.JaxpapersF32Matmul),
                                  platform="cpu")
      _state.update(ok=True, reason="compiled FFI kernel")
    except (OSError, RuntimeError) as e:
      _state.update(ok=False, reason=str(e))
      log.warning("the CPU quantized-matmul kernel is unavailable (%s); quantized matmuls on the "
                  "CPU use the tiled XLA path (pallas_kernels.quant_matmul.qmatmul_xla_tiled)",
                  str(e).splitlines()[0][:300])
  return _state["ok"]


def reason() -> str:
  available()
  return _state["reason"]


def qmatmul_ffi(x: jnp.ndarray, qw: QuantizedWeight, target: str = _TARGET) -> jnp.ndarray:
  """x [M, K] @ dequant(qw)^T -> [M, N] in x.dtype (accumulated in FP32); `target`: the FFI target
  it calls (another build of the same kernel registered under its own name, for comparisons)."""
  if not available():
    raise RuntimeError(f"the CPU quantized-matmul kernel is unavailable: {reason()}")
  M, K = x.shape
  if K != qw.in_features:
    raise ConfigError(f"activation K={K} does not match the quantized weight's K={qw.in_features}")
  N = qw.scale.shape[0]
  call = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct((M, N), jnp.float32),
                          vmap_method="sequential")
  zero = qw.scale if qw.zero is None else qw.zero
  y = call(x.astype(jnp.float32), qw.q, qw.scale.astype(jnp.float32), zero.astype(jnp.float32),
           bits=np.int64(qw.bits), group_size=np.int64(qw.group_size),
           zero_point=np.int64(qw.zero is not None))
  return y.astype(x.dtype)


def f32_matmul_ffi(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
  """x [M, K] @ w [K, N] in FP32 (meant for few rows: decode)."""
  if not available():
    raise RuntimeError(f"the CPU decode-matmul kernels are unavailable: {reason()}")
  if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
    raise ConfigError(f"f32_matmul_ffi: x {x.shape} and w {w.shape} are not [M, K] and [K, N]")
  if x.dtype != jnp.float32 or w.dtype != jnp.float32:
    raise ConfigError(f"f32_matmul_ffi: FP32 only, got x {x.dtype} and w {w.dtype}")
  call = jax.ffi.ffi_call(_TARGET_F32, jax.ShapeDtypeStruct((x.shape[0], w.shape[1]), jnp.float32),
                          vmap_method="sequential")
  return call(x, w)
