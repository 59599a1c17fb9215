"""The CPU FFI quantized matmul (decode path) and the tiled XLA path against the reference."""
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpapers.core.errors import ConfigError
from pallas_kernels import quant_matmul_cpu
from pallas_kernels.int_quant import qmatmul_reference, quantize
from pallas_kernels.quant_matmul import qmatmul, qmatmul_path, qmatmul_xla_tiled

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
    (2, 64, 2048, 4, 128, True)])
def test_ffi_kernel_equals_reference(M, N, K, bits, g, zp):
  w = jax.random.normal(jax.random.key(N + K), (N, K))
  x = jax.random.normal(jax.random.key(M), (M, K))
  qw = quantize(w, bits, g, zp)
  got = jax.jit(quant_matmul_cpu.qmatmul_ffi)(x, qw)
  ref = qmatmul_reference(x, qw)
  np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-4,
                             atol=1e-4 * float(jnp.abs(ref).max()))


@needs_cxx
def test_ffi_kernel_inside_scan_over_stacked_layers():
  """Quantized kernels stacked [L, N, K'] are sliced by lax.scan like any pytree."""
  w = jax.random.normal(jax.random.key(0), (3, 32, 64))
  parts = [quantize(w[i], 4) for i in range(3)]
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *parts)
  x = jax.random.normal(jax.random.key(1), (1, 64))
  _, ys = jax.lax.scan(lambda c, qw: (c, quant_matmul_cpu.qmatmul_ffi(x, qw)), 0, stacked)
  for i in range(3):
    np.testing.assert_allclose(np.asarray(ys[i]), np.asarray(qmatmul_reference(x, parts[i])),
                               rtol=1e-4, atol=1e-4)


def test_ffi_rejects_wrong_activation_width():
  qw = quantize(jnp.ones((8, 16)), 8)
  with pytest.raises(ConfigError, match="K=12"):
    qmatmul(jnp.ones((1, 12)), qw)


@pytest.mark.parametrize("N", [1408, 96])
def test_tiled_path_tiles_rows_that_do_not_divide_256(N):
  w = jax.random.normal(jax.random.key(3), (N, 64))
  x = jax.random.normal(jax.random.key(4), (20, 64))
  qw = quantize(w, 4, 32, True)
  np.testing.assert_allclose(np.asarray(qmatmul_xla_tiled(x, qw)),
                             np.asarray(qmatmul_reference(x, qw)), rtol=1e-4, atol=1e-4)
