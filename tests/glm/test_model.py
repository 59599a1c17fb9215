"""The GLM model: a DeepNorm layer against a NumPy reference, init, KV cache."""
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxpapers.glm.model import GLM, GLMConfig, _layer, rope_for, head_loss
from jaxpapers.glm.objective import SpecialIds, gmask_sample
from jp_testutil import assert_close_scaled


def tiny(**kw):
  cfg = dict(vocab_size=64, num_layers=3, d_model=16, num_heads=2, dropout=0.0, remat=False)
  cfg.update(kw)
  return GLM(GLMConfig(**cfg), rngs=nnx.Rngs(params=0))


def _ln(x, s, b, eps=1e-5):
  m = x.mean(-1, keepdims=True)
  v = ((x - m) ** 2).mean(-1, keepdims=True)
  return (x - m) / np.sqrt(v + eps) * s + b


def _rope(x, pos):
  D = x.shape[-1]
  inv = 10000.0 ** (-np.arange(0, D, 2) / D)
  ang = pos[..., None] * inv
  ang = np.concatenate([ang, ang], -1)[:, :, None, :]
  rot = np.concatenate([-x[..., D // 2:], x[..., :D // 2]], -1)
  return x * np.cos(ang) + rot * np.sin(ang)


def test_deepnorm_layer_matches_reference():
  """a = LN1(h); h' = alpha a + Attn(a); m = LN2(h'); out = alpha m + FFN(m), alpha = sqrt(2N)."""
  model = tiny()
  cfg = model.cfg
  rng = np.random.default_rng(0)
  p = {n: np.asarray(getattr(model, n)[...])[1] for n in GLM.LAYER_PARAMS}
  for n in ("bq", "bk", "bv", "bo", "b_in", "b_out", "ln1_bias", "ln2_bias"):
    p[n] = rng.normal(size=p[n].shape).astype(np.float32) * 0.1
  B, T = 2, 6
  h = rng.normal(size=(B, T, 16)).astype(np.float32)
  pos = np.tile(np.arange(T), (B, 1))
  ctx = np.array([2, 4])
  mask = (np.arange(T)[None, None, :] < ctx[:, None, None]) | (np.arange(T)[None, None, :] <= np.arange(T)[None, :, None])
  got, _ = _layer(cfg, jnp.asarray(h), {k: jnp.asarray(v) for k, v in p.items()}, 1, rope_for(cfg, jnp.asarray(pos)),
                  jnp.asarray(mask), None, None, 0)
  alpha = math.sqrt(2 * 3)
  a = _ln(h, p["ln1_scale"], p["ln1_bias"])
  q = _rope(np.einsum("bte,ehd->bthd", a, p["wq"]) + p["bq"], pos)
  k = _rope(np.einsum("bte,ehd->bthd", a, p["wk"]) + p["bk"], pos)
  v = np.einsum("bte,ehd->bthd", a, p["wv"]) + p["bv"]
  s = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(8)
  s = np.where(mask[:, None], s, -np.inf)
  e = np.exp(s - s.max(-1, keepdims=True))
  attn = np.einsum("bhqk,bkhd->bqhd", e / e.sum(-1, keepdims=True), v)
  attn = np.einsum("bthd,hde->bte", attn, p["wo"]) + p["bo"]
  h2 = alpha * a + attn
  m = _ln(h2, p["ln2_scale"], p["ln2_bias"])
  u = m @ p["w_in"][:, 0] + p["b_in"][0]
  g = m @ p["w_in"][:, 1] + p["b_in"][1]
  ffn = (u * 0.5 * g * (1 + np.vectorize(math.erf)(g / math.sqrt(2)))) @ p["w_out"] + p["b_out"]
  want = alpha * m + ffn
  assert_close_scaled(np.asarray(got), want, 2e-4)


def test_deepnorm_init_gains():
  """Xavier normal with gain (2N)^(-1/2) on value, output and FFN; gain 1 on query/key (§2.3)."""
  model = GLM(GLMConfig(vocab_size=64, num_layers=8, d_model=256, num_heads=4), rngs=nnx.Rngs(params=0))
  beta = (2 * 8) ** -0.5
  xavier = lambda fi, fo: math.sqrt(2 / (fi + fo))
  np.testing.assert_allclose(np.std(model.wq[...]), xavier(256, 256), rtol=0.02)
  np.testing.assert_allclose(np.std(model.wv[...]), beta * xavier(256, 256), rtol=0.02)
  np.testing.assert_allclose(np.std(model.wo[...]), beta * xavier(256, 256), rtol=0.02)
  F = model.cfg.ffn
  np.testing.assert_allclose(np.std(model.w_in[...]), beta * xavier(256, 2 * F), rtol=0.02)
  np.testing.assert_allclose(np.std(model.w_out[...]), beta * xavier(F, 256), rtol=0.02)


def test_tied_embeddings():
  model = tiny()
  names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]]
  assert not any("head" in n or "unembed" in n for n in names)


def _kv_cache_matches_full(positions):
  model = tiny(positions=positions)
  ids = SpecialIds(pad=0, mask=1, gmask=2, sop=3, eop=4)
  raw = np.random.default_rng(0).integers(5, 64, size=14).astype(np.int32)
  s = gmask_sample(raw, 5, ids, 16, two_d=positions == "2d")
  tokens = jnp.asarray(s["tokens"][None])
  pos = jnp.asarray(s["positions"][None])
  c = int(s["context_len"])
  full = model(tokens, pos, jnp.asarray([c]))
  cache = model.init_cache(1, 16)
  p = lambda a, b: pos[..., a:b]
  _, cache = model(tokens[:, :c], p(0, c), jnp.asarray([c]), cache=cache, cache_index=0)
  for i in range(c, 16):
    logits, cache = model(tokens[:, i:i + 1], p(i, i + 1), jnp.asarray([c]), cache=cache, cache_index=i)
    assert_close_scaled(np.asarray(logits[0, 0]), np.asarray(full[0, i]), 1e-4)


def test_kv_cache_decoding_equals_full_recomputation():
  _kv_cache_matches_full("1d")


def test_kv_cache_decoding_equals_full_recomputation_2d_positions():
  _kv_cache_matches_full("2d")


def test_generated_part_is_causal_and_context_bidirectional():
  """Changing a generated token changes no logit before it; changing a context token changes
  logits at every context position."""
  model = tiny()
  tokens = jnp.asarray(np.random.default_rng(1).integers(5, 64, (1, 10)), jnp.int32)
  pos, ctx = jnp.arange(10)[None], jnp.asarray([4])
  base = model(tokens, pos, ctx)
  gen_changed = model(tokens.at[0, 7].set(5), pos, ctx)
  np.testing.assert_array_equal(np.asarray(base[0, :7]), np.asarray(gen_changed[0, :7]))
  ctx_changed = model(tokens.at[0, 3].set(5), pos, ctx)
  assert not np.allclose(np.asarray(base[0, 0]), np.asarray(ctx_changed[0, 0]))


def test_model_shrinks_only_the_input_embedding_gradient():
  """With tied embeddings, d loss / d E = alpha * (input path) + (output path) (GLM-130B §3):
  grad(0.1) = 0.1 * (grad(1) - grad(0)) + grad(0)."""
  tokens = jnp.asarray(np.random.default_rng(2).integers(5, 64, (2, 8)), jnp.int32)
  pos, ctx = jnp.tile(jnp.arange(8), (2, 1)), jnp.asarray([3, 5])

  def embed_grad(alpha):
    model = tiny(emb_grad_shrink=alpha)
    g, p = nnx.split(model, nnx.Param)
    f = lambda p: jnp.sum(jnp.sin(nnx.merge(g, p)(tokens, pos, ctx)))
    return np.asarray(jax.grad(f)(p)["embed"].get_value())

  g0, g01, g1 = embed_grad(0.0), embed_grad(0.1), embed_grad(1.0)
  assert np.abs(g1 - g0).max() > 1e-3
  assert_close_scaled(g01, 0.1 * (g1 - g0) + g0, 1e-4)


def test_output_layer_is_the_transposed_input_embedding():
  model = tiny()
  tokens = jnp.asarray([[5, 6, 7]], jnp.int32)
  logits = model(tokens, jnp.arange(3)[None], jnp.asarray([3]))
  model.embed[...] = model.embed[...].at[9].set(0.0)        # one vocabulary row to zero
  logits2 = model(tokens, jnp.arange(3)[None], jnp.asarray([3]))
  np.testing.assert_array_equal(np.asarray(logits2[..., 9]), 0.0)
  assert not np.allclose(np.asarray(logits[..., 9]), 0.0)


def _loss_and_grads(model, tokens, pos, ctx, chunk, w):
  def loss(m):
    h = m(tokens, pos, ctx, return_hidden=True)
    return head_loss(m, h, tokens, w, chunk) / w.sum()
  return nnx.value_and_grad(loss)(model)


def test_micro_batched_layers_and_head_equal_the_full_batch():
  """layer_chunk / head_loss micro-batches (5 rows in parts of 2: two full parts and a
  remainder) change memory, not values: the loss and every gradient equal the unchunked model's
  (remat, the default; without remat the layers take the same `micro_batched` path); head_loss
  is the weighted sum of the logits' token NLL."""
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(0, 64, (5, 8)), jnp.int32)
  pos = jnp.asarray(np.tile(np.arange(8), (5, 1)), jnp.int32)
  ctx = jnp.asarray([3, 8, 1, 5, 2])
  w = jnp.asarray(rng.uniform(0, 1, (5, 8)), jnp.float32)
  ref_l, ref_g = _loss_and_grads(tiny(remat=True), tokens, pos, ctx, 0, w)
  got_l, got_g = _loss_and_grads(tiny(remat=True, layer_chunk=2), tokens, pos, ctx, 2, w)
  np.testing.assert_allclose(float(got_l), float(ref_l), rtol=1e-6)
  assert_close_scaled(nnx.state(got_g), nnx.state(ref_g), 1e-5)
  m = tiny(remat=True)
  full = m(tokens, pos, ctx)
  want = -jnp.take_along_axis(jax.nn.log_softmax(full, -1), tokens[..., None], -1)[..., 0]
  np.testing.assert_allclose(float(head_loss(m, m(tokens, pos, ctx, return_hidden=True), tokens, w)),
                             float((want * w).sum()), rtol=1e-5)
  assert_close_scaled(tiny(remat=True, layer_chunk=2)(tokens, pos, ctx), full, 1e-5)


def test_unrolled_layers_equal_the_scanned_stack():
  """remat=False unrolls the layers (no [L, ...] stacked activations, no while loop in the
  compiled step); remat=True scans them: the same loss, gradients and dropout masks."""
  rng = np.random.default_rng(1)
  tokens = jnp.asarray(rng.integers(0, 64, (3, 8)), jnp.int32)
  pos = jnp.asarray(np.tile(np.arange(8), (3, 1)), jnp.int32)
  ctx = jnp.asarray([3, 8, 1])
  w = jnp.asarray(rng.uniform(0, 1, (3, 8)), jnp.float32)
  scan_l, scan_g = _loss_and_grads(tiny(remat=True), tokens, pos, ctx, 0, w)
  unrolled = tiny(remat=False)
  unroll_l, unroll_g = _loss_and_grads(unrolled, tokens, pos, ctx, 0, w)
  np.testing.assert_allclose(float(unroll_l), float(scan_l), rtol=1e-6)
  assert_close_scaled(nnx.state(unroll_g), nnx.state(scan_g), 1e-5)
  key = jax.random.key(3)     # dropout: each layer gets its own key on both paths
  assert_close_scaled(tiny(remat=False, dropout=0.5)(tokens, pos, ctx, dropout_key=key),
                      tiny(remat=True, dropout=0.5)(tokens, pos, ctx, dropout_key=key), 1e-5)
  graphdef, params = nnx.split(unrolled)
  step = jax.jit(jax.grad(lambda p: nnx.merge(graphdef, p)(tokens, pos, ctx).sum()))
  assert " while(" not in step.lower(params).compile().as_text()
