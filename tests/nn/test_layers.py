"""Shared layers against their formulas."""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxpapers.nn.attention import layer_scaled_attention
from jaxpapers.nn.embedding import shrink_gradient
from jaxpapers.nn.mlp import geglu
from jaxpapers.nn.rope import apply_rope
from jaxpapers.nn.sampling import sample_logits
from jp_testutil import assert_close_scaled


def test_rope_is_rotate_half_rotation():
  """Dim i pairs with i + D/2 and rotates by pos * 10000^(-2i/D) (RoFormer; rotate-half layout)."""
  rng = np.random.default_rng(0)
  B, T, H, D = 2, 5, 3, 8
  x = rng.normal(size=(B, T, H, D)).astype(np.float32)
  pos = rng.integers(0, 50, size=(B, T))
  got = np.asarray(apply_rope(jnp.asarray(x), jnp.asarray(pos)))
  want = np.empty_like(x)
  for b in range(B):
    for t in range(T):
      for i in range(D // 2):
        th = pos[b, t] * 10000.0 ** (-2 * i / D)
        a, c = x[b, t, :, i], x[b, t, :, i + D // 2]
        want[b, t, :, i] = a * math.cos(th) - c * math.sin(th)
        want[b, t, :, i + D // 2] = c * math.cos(th) + a * math.sin(th)
  assert_close_scaled(got, want, 1e-5)


def test_rope_scores_depend_on_relative_position_only():
  rng = np.random.default_rng(1)
  q = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)
  s = lambda m, n: float((apply_rope(q, jnp.array([[m]])) * apply_rope(k, jnp.array([[n]]))).sum())
  assert_close_scaled(s(7, 3), s(24, 20), 1e-4)


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_layer_scaled_softmax_matches_formula():
  """softmax((q / (sqrt(d)(l+1)) . k) * (l+1)) = softmax(q.k / sqrt(d)), in FP32 (GLM-130B §2.3)."""
  rng = np.random.default_rng(2)
  q, k, v = (rng.normal(size=(2, 4, 2, 8)).astype(np.float32) * 3 for _ in range(3))
  mask = rng.random((2, 4, 4)) > 0.3
  mask[:, :, 0] = True
  for layer in (0, 5):
    got = np.asarray(layer_scaled_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v),
                                            jnp.asarray(mask), layer))
    s = np.einsum("bqhd,bkhd->bhqk", q.astype(np.float64), k) / math.sqrt(8)
    s = np.where(mask[:, None], s, -np.inf)
    want = np.einsum("bhqk,bkhd->bqhd", _softmax(s), v)
    assert_close_scaled(got, want, 1e-5)


def test_layer_scaled_softmax_runs_softmax_in_fp32_for_bf16_inputs():
  q = jnp.full((1, 1, 1, 4), 30.0, jnp.bfloat16)
  k = jnp.concatenate([jnp.full((1, 1, 1, 4), 30.0), jnp.full((1, 1, 1, 4), 29.9)], 1).astype(jnp.bfloat16)
  v = jnp.asarray([[[[1.0] * 4]], [[[0.0] * 4]]], jnp.bfloat16).reshape(1, 2, 1, 4)
  out = layer_scaled_attention(q, k, v, jnp.ones((1, 1, 2), bool), 3)
  assert out.dtype == jnp.bfloat16
  jaxpr = jax.make_jaxpr(lambda q, k, v: layer_scaled_attention(q, k, v, jnp.ones((1, 1, 2), bool), 3))(q, k, v)
  exps = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "exp"]
  assert exps and all(e.outvars[0].aval.dtype == jnp.float32 for e in exps)


def test_geglu_gate_is_second_half():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(3, 6)).astype(np.float32)
  w_in = rng.normal(size=(6, 2, 5)).astype(np.float32)
  b_in = rng.normal(size=(2, 5)).astype(np.float32)
  w_out = rng.normal(size=(5, 6)).astype(np.float32)
  b_out = rng.normal(size=(6,)).astype(np.float32)
  h = np.concatenate([x @ w_in[:, 0] + b_in[0], x @ w_in[:, 1] + b_in[1]], -1)  # [u | g]
  u, g = h[:, :5], h[:, 5:]
  gelu = 0.5 * g * (1 + np.vectorize(math.erf)(g / math.sqrt(2)))
  want = (u * gelu) @ w_out + b_out
  got = geglu(*map(jnp.asarray, (x, w_in, b_in, w_out, b_out)))
  assert_close_scaled(got, want, 1e-5)


def test_embedding_gradient_shrink():
  """Forward unchanged bit for bit; gradient multiplied by alpha (GLM-130B §3)."""
  x = jax.random.normal(jax.random.key(0), (4, 8))
  chex.assert_trees_all_equal(shrink_gradient(x, 0.1), x)
  f = lambda x: jnp.sum(jnp.sin(x) * 3.0)
  g = jax.grad(lambda x: f(shrink_gradient(x, 0.1)))(x)
  np.testing.assert_allclose(np.asarray(g), 0.1 * np.asarray(jax.grad(f)(x)), rtol=1e-6)


def test_sampling_strategies():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  assert int(sample_logits(logits, jax.random.key(0))[0]) == 0
  keys = jax.random.split(jax.random.key(1), 400)
  topk = jax.vmap(lambda k: sample_logits(logits, k, "top_k", top_k=2))(keys)
  assert set(np.unique(topk).tolist()) == {0, 1}
  topp = jax.vmap(lambda k: sample_logits(logits, k, "top_p", top_p=0.75))(keys)
  assert set(np.unique(topp).tolist()) == {0, 1}   # 0.5 + 0.3 reaches 0.75
  full = jax.vmap(lambda k: sample_logits(logits, k, "sample"))(keys)
  assert len(np.unique(full)) == 4
