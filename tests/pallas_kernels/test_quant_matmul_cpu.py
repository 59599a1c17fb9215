"""The CPU FFI quantized matmul (decode path) and the tiled XLA path against the reference."""
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpapers.core.errors import ConfigError
from jp_testutil import assert_close_scaled
from pallas_kernels import quant_matmul_cpu
from pallas_kernels.int_quant import qmatmul_reference, quantize
from pallas_kernels.quant_matmul import f32_matmul_path, qmatmul, qmatmul_path, qmatmul_xla_tiled

needs_cxx = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                               reason="no C++ compiler: the FFI kernel cannot be built here")


@needs_cxx
def test_ffi_kernel_builds_and_is_the_decode_path():
  assert quant_matmul_cpu.available(), quant_matmul_cpu.reason()
  assert qmatmul_path(1) == "cpu_ffi" and qmatmul_path(16) == "cpu_ffi"
  assert qmatmul_path(17) == "xla_tiled"


@needs_cxx
@pytest.mark.parametrize("M,N,K,bits,g,zp", [
    (1, 96, 256, 8, None, False), (1, 96, 256, 4, None, False), (1, 96, 256, 4, None, True),
    (1, 96, 256, 4, 64, False), (1, 96, 256, 8, 32, False), (3, 40, 128, 4, 32, True),
    (16, 1024, 512, 4, None, False), (16, 1024, 512, 8, None, False), (5, 7, 6, 4, 2, False),
    (2, 64, 2048, 4, 128, True),
    # the vector loop's edges: rows not a multiple of 4, groups not a multiple of 16 bytes
    (1, 37, 384, 8, None, False), (2, 9, 96, 4, 48, True), (3, 13, 168, 8, 84, False),
    (1, 6, 100, 4, 50, False),
    (1, 1030, 1024, 4, 64, True)])   # threaded (>= 2^20 multiply-adds), ragged row split
def test_ffi_kernel_equals_reference(M, N, K, bits, g, zp):
  w = jax.random.normal(jax.random.key(N + K), (N, K))
  x = jax.random.normal(jax.random.key(M), (M, K))
  qw = quantize(w, bits, g, zp)
  got = jax.jit(quant_matmul_cpu.qmatmul_ffi)(x, qw)
  ref = qmatmul_reference(x, qw)
  np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-4,
                             atol=1e-4 * float(jnp.abs(ref).max()))


@needs_cxx
@pytest.mark.parametrize("M,K,N", [(1, 2048, 5504), (1, 7, 3), (3, 130, 1031), (16, 96, 2049),
                                   (20, 65, 300)])
def test_f32_decode_kernel_equals_xla(M, K, N):
  """The FP32 decode kernel (column tiles of 1,024 partial sums over all rows, four weight rows
  per pass, their tails; any row count, though decode routes at most 16)."""
  w = jax.random.normal(jax.random.key(K), (K, N))
  x = jax.random.normal(jax.random.key(M), (M, K))
  got = jax.jit(quant_matmul_cpu.f32_matmul_ffi)(x, w)
  ref = np.asarray(x, np.float64) @ np.asarray(w, np.float64)
  assert_close_scaled(got, ref, 1e-5)
  f32 = jnp.float32
  assert f32_matmul_path(M, f32, f32) == ("cpu_ffi" if M <= 16 else "xla")
  assert f32_matmul_path(1, jnp.bfloat16, f32) == f32_matmul_path(1, f32, jnp.bfloat16) == "xla"


@needs_cxx
def test_ffi_kernel_inside_scan_over_stacked_layers():
  """Quantized kernels stacked [L, N, K'] are sliced by lax.scan like any pytree."""
  w = jax.random.normal(jax.random.key(0), (3, 32, 64))
  parts = [quantize(w[i], 4) for i in range(3)]
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *parts)
  x = jax.random.normal(jax.random.key(1), (1, 64))
  _, ys = jax.lax.scan(lambda c, qw: (c, quant_matmul_cpu.qmatmul_ffi(x, qw)), 0, stacked)
  for i in range(3):
    assert_close_scaled(ys[i], qmatmul_reference(x, parts[i]), 1e-4)


def test_ffi_rejects_wrong_activation_width():
  qw = quantize(jnp.ones((8, 16)), 8)
  with pytest.raises(ConfigError, match="K=12"):
    qmatmul(jnp.ones((1, 12)), qw)


@pytest.mark.parametrize("N", [1408, 96])
def test_tiled_path_tiles_rows_that_do_not_divide_256(N):
  w = jax.random.normal(jax.random.key(3), (N, 64))
  x = jax.random.normal(jax.random.key(4), (20, 64))
  qw = quantize(w, 4, 32, True)
  assert_close_scaled(qmatmul_xla_tiled(x, qw), qmatmul_reference(x, qw), 1e-4)


_DENORMALS = r"""
import threading
import jax, jax.numpy as jnp, numpy as np
from pallas_kernels import quant_matmul_cpu
from pallas_kernels.int_quant import quantize

tiny = np.float32(1e-39)                       # a float32 denormal (the smallest normal is 1.2e-38)
scale = jax.jit(lambda x, y: x * y)        # both operands at run time: nothing to fold
survives = lambda: bool(tiny * np.float32(1.0) != 0)     # the host FP environment (MXCSR)
compiled = lambda: float(scale(jnp.float32(tiny), jnp.float32(1.0)))   # XLA's own setting
before, jit_before = survives(), compiled()
assert quant_matmul_cpu.available(), quant_matmul_cpu.reason()
qw = quantize(jnp.ones((8, 16)), 4)
jax.block_until_ready(jax.jit(quant_matmul_cpu.qmatmul_ffi)(jnp.ones((1, 16)), qw))
after, in_thread = survives(), []
t = threading.Thread(target=lambda: in_thread.append(survives()))
t.start(); t.join()
assert compiled() == jit_before           # XLA's compiled code behaves as before the load
print(before, after, in_thread[0])
"""


@needs_cxx
def test_loading_and_running_the_kernel_keeps_denormals(tmp_path):
  """-ffast-math's crtfastmath.o would set FTZ/DAZ at load time (issue: 1e-39 * 1 became 0 in
  the whole process); a fresh process, with a fresh cache so the library is built and loaded.
  (XLA's CPU executables flush denormals by their own setting, before and after alike.)"""
  import os
  import subprocess
  import sys
  env = dict(os.environ, JAXPAPERS_CACHE=str(tmp_path / "cache"))
  out = subprocess.run([sys.executable, "-c", _DENORMALS], capture_output=True, text=True,
                       env=env, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split() == ["True", "True", "True"], out.stdout


def test_build_flags_leave_the_fp_environment_alone():
  forbidden = {"-ffast-math", "-Ofast", "-funsafe-math-optimizations", "-ffinite-math-only"}
  assert not forbidden & set(quant_matmul_cpu.FLAGS)


@pytest.fixture
def fresh_kernel_state(monkeypatch, tmp_path):
  """An empty build state and cache for this test; the process's own state is put back after."""
  saved = dict(quant_matmul_cpu._state)
  quant_matmul_cpu._state.clear()
  monkeypatch.setenv("JAXPAPERS_CACHE", str(tmp_path / "cache"))
  yield tmp_path / "cache"
  quant_matmul_cpu._state.clear()
  quant_matmul_cpu._state.update(saved)


@pytest.mark.parametrize("mode", [0o777, 0o775])
def test_a_group_or_world_writable_cache_is_refused(fresh_kernel_state, mode):
  ffi = fresh_kernel_state / "ffi"
  ffi.mkdir(parents=True)
  ffi.chmod(mode)
  with pytest.raises(quant_matmul_cpu.CacheError, match="writable by group or others"):
    quant_matmul_cpu.available()


def test_a_cached_library_writable_by_others_is_refused(fresh_kernel_state):
  """The library file itself is checked before it is loaded, not only its folder; the library
  built under umask 002 is not group-writable (the next process would refuse its own cache)."""
  import os
  import stat
  old = os.umask(0o002)
  try:
    ok = quant_matmul_cpu.available()
  finally:
    os.umask(old)
  if not ok:
    pytest.skip(f"no kernel here: {quant_matmul_cpu._state.get('reason')}")
  lib, = (fresh_kernel_state / "ffi").glob("*.so")
  assert stat.S_IMODE(lib.stat().st_mode) == 0o755
  quant_matmul_cpu._state.clear()
  assert quant_matmul_cpu.available()                     # a later process loads it
  lib.chmod(0o666)
  quant_matmul_cpu._state.clear()
  with pytest.raises(quant_matmul_cpu.CacheError, match=r"\.so: writable by group or others"):
    quant_matmul_cpu.available()


def test_the_cache_folders_it_creates_are_private_whatever_the_umask(fresh_kernel_state):
  """mkdir's mode applies to the last folder only: under umask 002 the cache root would be 0775
  and then refused by the very check that guards it."""
  import os
  import stat
  old = os.umask(0o002)
  try:
    quant_matmul_cpu._make_private_dirs(fresh_kernel_state / "ffi")
  finally:
    os.umask(old)
  for d in (fresh_kernel_state, fresh_kernel_state / "ffi"):
    assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
  quant_matmul_cpu.check_cache_dir(fresh_kernel_state / "ffi")


def test_a_cache_owned_by_another_user_is_refused(fresh_kernel_state, monkeypatch):
  ffi = fresh_kernel_state / "ffi"
  ffi.mkdir(parents=True, mode=0o700)
  monkeypatch.setattr(quant_matmul_cpu.os, "getuid", lambda: ffi.stat().st_uid + 1)
  with pytest.raises(quant_matmul_cpu.CacheError, match="not by this user"):
    quant_matmul_cpu.available()


def test_a_failed_build_warns_once_and_names_the_fallback(fresh_kernel_state, monkeypatch, tmp_path,
                                                          caplog):
  broken = tmp_path / "broken-cxx"
  broken.write_text("#!/bin/sh\n[ \"$1\" = --version ] && echo broken 1.0 && exit 0\n"
                    "echo 'error: cannot compile' >&2; exit 1\n")
  broken.chmod(0o755)
  monkeypatch.setenv("CXX", str(broken))
  with caplog.at_level("WARNING", logger="jaxpapers"):
    assert not quant_matmul_cpu.available()
    assert not quant_matmul_cpu.available()
    assert qmatmul_path(1) == "xla_tiled"
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert len(warnings) == 1, warnings
  assert "qmatmul_xla_tiled" in warnings[0] and "cannot compile" in warnings[0]
  assert "cannot compile" in quant_matmul_cpu.reason()
