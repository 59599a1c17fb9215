"""`fused_layer_norm`'s hand-written backward against autodiff of `layer_norm` and of the
formula written out."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpapers.nn.norm import fused_layer_norm, layer_norm
from jp_testutil import assert_close_scaled


def _plain(x, scale, bias, eps=1e-5):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias


@pytest.mark.parametrize("shape", [(6, 16), (3, 5, 32)])
def test_layer_norm_value_and_gradients_equal_autodiff_of_the_formula(shape):
  k = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(k[0], shape) * 3 + 1
  x = x.at[0].set(2.5)                                      # a constant row: rstd = 1/sqrt(eps)
  scale, bias = jax.random.normal(k[1], shape[-1:]), jax.random.normal(k[2], shape[-1:])
  w = jax.random.normal(k[3], shape)
  loss = lambda f: lambda x, s, b: jnp.sum(f(x, s, b) * w)
  assert_close_scaled(fused_layer_norm(x, scale, bias), _plain(x, scale, bias), rel=1e-6)
  ours = jax.grad(loss(fused_layer_norm), argnums=(0, 1, 2))(x, scale, bias)
  for reference in (_plain, layer_norm):
    ref = jax.grad(loss(reference), argnums=(0, 1, 2))(x, scale, bias)
    for a, r in zip(ours, ref):
      assert a.shape == r.shape
      assert_close_scaled(a, r, rel=1e-5)


def test_layer_norm_keeps_the_input_dtype_and_computes_in_fp32():
  x = jax.random.normal(jax.random.key(1), (4, 64)).astype(jnp.bfloat16)
  y = fused_layer_norm(x, jnp.ones(64), jnp.zeros(64))
  assert y.dtype == jnp.bfloat16
  g = jax.grad(lambda x: jnp.sum(fused_layer_norm(x, jnp.ones(64), jnp.zeros(64)) ** 2).astype(
      jnp.float32))(x)
  assert g.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(g.astype(jnp.float32))))
  np.testing.assert_allclose(np.asarray(y, np.float32),
                             np.asarray(_plain(x.astype(jnp.float32), 1.0, 0.0)), atol=0.05)
