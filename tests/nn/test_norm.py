"""`fused_layer_norm`'s hand-written backward against autodiff of `layer_norm`."""
import jax
import jax.numpy as jnp
import pytest

from jaxpapers.nn.norm import fused_layer_norm, layer_norm
from jp_testutil import assert_close_scaled


@pytest.mark.parametrize("shape", [(6, 16), (3, 5, 32)])
def test_fused_layer_norm_value_and_gradients_equal_autodiff_of_the_formula(shape):
  k = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(k[0], shape) * 3 + 1
  scale, bias = jax.random.normal(k[1], shape[-1:]), jax.random.normal(k[2], shape[-1:])
  w = jax.random.normal(k[3], shape)
  loss = lambda f: lambda x, s, b: jnp.sum(f(x, s, b) * w)
  for case in ("random rows", "a constant row"):
    if case == "a constant row":     # rstd = 1/sqrt(eps): its gradient dominates, so the other
      x = x.at[0].set(2.5)           # rows are compared apart from it as well
    assert_close_scaled(fused_layer_norm(x, scale, bias), layer_norm(x, scale, bias), rel=1e-6)
    ours = jax.grad(loss(fused_layer_norm), argnums=(0, 1, 2))(x, scale, bias)
    ref = jax.grad(loss(layer_norm), argnums=(0, 1, 2))(x, scale, bias)
    for a, r in zip(ours, ref):
      assert a.shape == r.shape
      assert_close_scaled(a, r, rel=1e-5, err_msg=case)
    assert_close_scaled(ours[0][1:], ref[0][1:], rel=1e-5, err_msg=case)


def test_fused_layer_norm_in_bfloat16_matches_autodiff_and_refuses_other_parameter_shapes():
  x = (jax.random.normal(jax.random.key(1), (4, 64)) * 2).astype(jnp.bfloat16)
  one, zero = jnp.ones(64), jnp.zeros(64)
  assert fused_layer_norm(x, one, zero).dtype == jnp.bfloat16
  grad = lambda f: jax.grad(lambda x: jnp.sum(f(x, one, zero).astype(jnp.float32) ** 3))(x)
  g, ref = grad(fused_layer_norm), grad(layer_norm)
  assert g.dtype == jnp.bfloat16
  # both compute in FP32 from the same bf16 input; they differ by the final bf16 rounding
  assert_close_scaled(g.astype(jnp.float32), ref.astype(jnp.float32), rel=1e-2)
  with pytest.raises(ValueError, match="scale has shape"):
    fused_layer_norm(x, jnp.ones((4, 64)), zero)
