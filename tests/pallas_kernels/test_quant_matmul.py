"""INT8/INT4 weight-only quantization: GLM-130B's packing and the Pallas kernel vs the reference."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpapers.core.errors import ConfigError
from jp_testutil import assert_close_scaled
from pallas_kernels.int_quant import (dequantize, int_values, pack_int4, qmatmul_reference, quantize,
                                      unpack_int4)
from pallas_kernels.quant_matmul import qmatmul_pallas


def test_pack_int4_matches_glm130b_byte_layout():
  """byte_k = (q_2k << 4) | (q_2k+1 & 0xF), hand-computed (GLM-130B App. B.8)."""
  q = jnp.array([[3, -2, -7, 7, 0, -1]], jnp.int8)
  # 3<<4 | 0xE = 0x3E; (-7 & 0xF)=0x9 -> 0x97; 0<<4 | 0xF = 0x0F
  np.testing.assert_array_equal(np.asarray(pack_int4(q)), [[0x3E, 0x97, 0x0F]])


def test_pack_unpack_round_trip_is_exact():
  q = jax.random.randint(jax.random.key(0), (33, 64), -8, 8).astype(jnp.int8)
  np.testing.assert_array_equal(np.asarray(unpack_int4(pack_int4(q))), np.asarray(q))
  u = jax.random.randint(jax.random.key(1), (5, 16), 0, 16).astype(jnp.int8)
  np.testing.assert_array_equal(np.asarray(unpack_int4(pack_int4(u), signed=False)), np.asarray(u))


def test_absmax_row_quantization_formula():
  """s_r = max_j |W_rj| / (2^(b-1) - 1); q = round(W / s_r) in [-7, 7] / [-127, 127]."""
  w = jnp.array([[0.7, -0.35, 0.1, 0.0], [-2.0, 1.1, 0.5, 0.25]], jnp.float32)
  q4 = quantize(w, 4)
  np.testing.assert_allclose(np.asarray(q4.scale[:, 0]), [0.1, 2.0 / 7], rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(int_values(q4)), [[7, -4, 1, 0], [-7, 4, 2, 1]])
  q8 = quantize(w, 8)
  assert int(jnp.abs(int_values(q8)).max()) == 127
  assert q4.q.dtype == jnp.uint8 and q4.q.shape == (2, 2)


def test_zero_point_and_group_reduce_error():
  w = jax.random.normal(jax.random.key(2), (64, 256)) + 0.5
  err = lambda qw: float(jnp.abs(dequantize(qw) - w).mean())
  assert err(quantize(w, 4, zero_point=True)) < err(quantize(w, 4))
  assert err(quantize(w, 4, group_size=32)) < err(quantize(w, 4))
  assert err(quantize(w, 8)) < err(quantize(w, 4)) / 8


CASES = [  # (M, N, K, bits, group_size, zero_point, x dtype)
    (1, 64, 128, 8, None, False, jnp.float32),
    (1, 64, 128, 4, None, False, jnp.float32),
    (8, 128, 256, 4, None, False, jnp.bfloat16),
    (16, 64, 512, 4, 128, False, jnp.float32),
    (5, 32, 64, 4, None, True, jnp.float32),
    (3, 64, 256, 4, 64, True, jnp.float32),
    (130, 64, 128, 8, 32, False, jnp.float32),    # M padded to the row block
    (2, 256, 1024, 4, 64, True, jnp.bfloat16),    # several groups per K block on both layouts
]
# explicit blocks: several K blocks per group, several groups per K block, one group per block
BLOCK_CASES = [  # (layout, M, N, K, bits, group_size, zero_point, blocks)
    ("gpu", 12, 64, 256, 4, None, False, (16, 32, 64)),    # a row scale spans 4 K blocks
    ("gpu", 2, 32, 128, 4, 16, False, (16, 32, 64)),       # 4 groups per K block
    ("gpu", 7, 48, 96, 8, 32, False, (16, 16, 32)),
    ("tpu", 12, 256, 1024, 4, None, True, (16, 128, 256)),  # a row scale spans 4 K blocks
    ("tpu", 3, 128, 512, 8, 32, False, (8, 128, 128)),     # 4 groups per K block
    ("tpu", 4, 128, 512, 4, 256, True, (8, 128, 256)),     # one group = one K block
]


def _case(M, N, K, bits, g, zp, dtype):
  w = jax.random.normal(jax.random.key(K + N), (N, K))
  x = jax.random.normal(jax.random.key(M), (M, K)).astype(dtype)
  return x, quantize(w, bits, g, zp)


def _assert_matches_reference(got, x, qw):
  """Max error within tol x max |reference|: the kernel sums K products in another order (and
  in bf16 for bf16 activations), so the tolerance scales with the output's magnitude."""
  want = np.asarray(qmatmul_reference(x, qw), np.float32)
  assert got.shape == want.shape and got.dtype == x.dtype
  tol = 1e-5 if x.dtype == jnp.float32 else 2e-2
  err = np.abs(np.asarray(got, np.float32) - want).max()
  assert err <= tol * np.abs(want).max(), (err, np.abs(want).max())


@pytest.mark.parametrize("layout", ["gpu", "tpu"])
@pytest.mark.parametrize("M, N, K, bits, g, zp, dtype", CASES)
def test_kernel_equals_reference(layout, M, N, K, bits, g, zp, dtype):
  x, qw = _case(M, N, K, bits, g, zp, dtype)
  _assert_matches_reference(qmatmul_pallas(x, qw, layout=layout, interpret=True), x, qw)


@pytest.mark.parametrize("layout, M, N, K, bits, g, zp, blocks", BLOCK_CASES)
def test_kernel_equals_reference_with_explicit_blocks(layout, M, N, K, bits, g, zp, blocks):
  x, qw = _case(M, N, K, bits, g, zp, jnp.float32)
  got = qmatmul_pallas(x, qw, layout=layout, blocks=blocks, interpret=True)
  _assert_matches_reference(got, x, qw)


# what interpret mode cannot see: ops Triton or Mosaic cannot lower (a slice of a loaded value,
# integer division on TPU) and blocks that break the TPU (8, 128) rule; decode and prefill shapes
EXPORT_CASES = CASES + [(1, 4096, 4096, 4, None, False, jnp.bfloat16),
                        (16, 4096, 4096, 8, None, False, jnp.bfloat16),
                        (128, 8192, 8192, 4, 128, True, jnp.bfloat16)]


@pytest.mark.parametrize("platform, layout", [("cuda", "gpu"), ("tpu", "tpu")])
def test_kernel_lowers_for_gpu_and_tpu(platform, layout):
  import functools
  triton = jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")
  cases = [(*c, None) for c in EXPORT_CASES] + [
      (M, N, K, bits, g, zp, jnp.float32, blocks)
      for lay, M, N, K, bits, g, zp, blocks in BLOCK_CASES if lay == layout]
  for M, N, K, bits, g, zp, dtype, blocks in cases:
    qw = jax.eval_shape(lambda: quantize(jnp.zeros((N, K)), bits, g, zp))
    f = jax.jit(functools.partial(qmatmul_pallas, layout=layout, blocks=blocks))
    exported = jax.export.export(f, platforms=[platform],
                                 disabled_checks=[triton])(jax.ShapeDtypeStruct((M, K), dtype), qw)
    text = exported.mlir_module()
    assert ("triton" in text) if platform == "cuda" else ("tpu_custom_call" in text), (M, N, K)


def test_blocks_a_backend_cannot_load_are_refused():
  """TPU: the (8, 128) rule; GPU: Triton's power-of-two block sides."""
  x, qw = _case(4, 256, 512, 4, None, False, jnp.float32)
  with pytest.raises(ConfigError, match="do not tile"):
    qmatmul_pallas(x, qw, layout="tpu", blocks=(8, 64, 256), interpret=True)
  x, qw = _case(4, 96, 512, 8, None, False, jnp.float32)
  with pytest.raises(ConfigError, match="do not tile"):
    qmatmul_pallas(x, qw, layout="gpu", blocks=(16, 96, 128), interpret=True)


def test_tpu_default_blocks_bound_the_working_set():
  """GLM's FFN width 5504 = 43 x 128 has no 256-multiple divisor: INT4 takes all of K in one
  block, so the column block shrinks until the f32 working set fits."""
  from pallas_kernels.quant_matmul import TPU_BLOCK_BYTES, default_blocks
  bm, bn, bk = default_blocks(1, 2048, 5504, 5504, 4, "tpu")
  assert bk == 5504 and 4 * 4 * bn * (bk // 2) <= TPU_BLOCK_BYTES and bn % 128 == 0


def test_bad_inputs_are_clear_errors():
  w = jnp.ones((8, 12))
  with pytest.raises(ConfigError, match="unsupported bit width 3"):
    quantize(w, 3)
  with pytest.raises(ConfigError, match="not divisible by the group size 5"):
    quantize(w, 4, group_size=5)
  with pytest.raises(ConfigError, match="even input dimension"):
    pack_int4(jnp.ones((2, 3), jnp.int8))
  with pytest.raises(ConfigError, match="do not tile"):
    qmatmul_pallas(jnp.ones((1, 12)), quantize(w, 8), blocks=(8, 8, 8), interpret=True)
  with pytest.raises(ConfigError, match="unknown kernel layout"):
    qmatmul_pallas(jnp.ones((1, 12)), quantize(w, 8), layout="cpu", interpret=True)
  with pytest.raises(ConfigError, match="does not match"):
    qmatmul_pallas(jnp.ones((1, 16)), quantize(w, 8), interpret=True)


@pytest.mark.parametrize("bits, g, zp", [(8, None, False), (4, None, False), (4, 64, False),
                                         (4, None, True)])
def test_tiled_cpu_path_equals_reference(bits, g, zp):
  from pallas_kernels.quant_matmul import qmatmul, qmatmul_xla_tiled
  w = jax.random.normal(jax.random.key(7), (512, 256))
  x = jax.random.normal(jax.random.key(8), (3, 256))
  qw = quantize(w, bits, g, zp)
  want = qmatmul_reference(x, qw)
  assert_close_scaled(qmatmul_xla_tiled(x, qw, tile_rows=128), want, 1e-5)
  assert_close_scaled(qmatmul(x, qw), want, 1e-5)
