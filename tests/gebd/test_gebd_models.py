"""The video MAE and the boundary heads: patch order, masking, the release's head grouping, and
the MAE trained by core.train on the 8-device mesh equal to the same run on one device."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxpapers.core.mesh import make_mesh
from jaxpapers.core.train import train
from jaxpapers.gebd.models import (MAEBoundary, MAEConfig, VideoMAE, head_loss, head_scores,
                                   mae_loss, patchify, random_keep)
from tests.conftest import assert_close_scaled

TINY = MAEConfig(hidden=16, layers=1, heads=2, mlp=32, dec_hidden=16, dec_layers=1, dec_heads=2)


def test_patchify_is_time_major_tubes():
  x = jnp.arange(1 * 40 * 32 * 32 * 3, dtype=jnp.float32).reshape(1, 40, 32, 32, 3)
  p = patchify(x, 2, 8)
  assert p.shape == (1, 320, 2 * 8 * 8 * 3)
  # token 17 = tube step 1 (frames 2-3), patch row 0, column 1; its first value is frame 2,
  # pixel (0, 8), channel 0; its second frame starts after 8 x 8 x 3 values
  assert p[0, 17, 0] == x[0, 2, 0, 8, 0] and p[0, 17, 192] == x[0, 3, 0, 8, 0]
  assert p[0, 16 * 3 + 4 * 2 + 3, 0] == x[0, 6, 16, 24, 0]


def test_random_keep_and_loss_only_on_masked_patches():
  keep = random_keep(np.random.default_rng(0), 4, TINY)
  assert keep.shape == (4, 32) and all(len(set(k)) == 32 for k in keep)
  assert (np.diff(keep, axis=1) > 0).all()
  graphdef, state = nnx.split(VideoMAE(TINY, rngs=nnx.Rngs(0)))
  frames = jnp.asarray(np.random.default_rng(1).integers(0, 256, (4, 40, 32, 32, 3), np.uint8))
  pred, target, loss = jax.jit(lambda st, f, k: (
      *nnx.merge(graphdef, st)(f, k),
      mae_loss(nnx.merge(graphdef, st), dict(frames=f, keep=k), None)[0]))(state, frames, jnp.asarray(keep))
  # targets are each patch's pixels normalised per channel (unbiased variance)
  per_channel = np.asarray(target).reshape(4, 320, -1, 3)
  np.testing.assert_allclose(per_channel.mean(-2), 0, atol=1e-4)
  np.testing.assert_allclose(per_channel.std(-2, ddof=1), 1, atol=1e-3)
  masked = np.ones((4, 320), bool)
  masked[np.arange(4)[:, None], keep] = False
  per = np.asarray(((pred - target) ** 2).mean(-1))
  np.testing.assert_allclose(loss, per[masked].mean(), rtol=1e-5)


def test_heads_as_the_release():
  """MSE head: section g reads tokens 8g .. 8g+7 as 4 adjacent pairs (each pair concatenated),
  averaged, then linear; BCE head: each token's mean feature, LayerNorm over the 320 tokens,
  linear to the 40 sections; the score is the mean of sigmoid(BCE) and the MSE head."""
  m = MAEBoundary(TINY, rngs=nnx.Rngs(0))
  h = np.asarray(jax.random.normal(jax.random.key(0), (2, 320, 16)))
  bce, mse = m.heads(jnp.asarray(h))
  w, b = np.asarray(m.mse_w.get_value())[:, 0], float(m.mse_b.get_value()[0])
  pairs = np.concatenate([h[:, 40:48:2], h[:, 41:48:2]], -1)    # section 5: tokens 40..47
  assert_close_scaled(mse[:, 5], pairs.mean(1) @ w + b, 1e-4)
  t = h.mean(-1)
  t = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, keepdims=True) + 1e-6)
  ref = (t * np.asarray(m.ln_scale.get_value()) + np.asarray(m.ln_bias.get_value())) @ np.asarray(
      m.bce_w.get_value()) + np.asarray(m.bce_b.get_value())
  assert_close_scaled(bce, ref, 1e-4)
  y = np.zeros((2, 40), np.float32)
  y[:, 3] = 1
  # BCE with positive weight 8 plus the MSE head's squared error, on the same targets
  sig = 1 / (1 + np.exp(-ref))
  l_bce, l_mse = head_loss(jnp.asarray(ref), mse, y, TINY.pos_weight)
  np.testing.assert_allclose(l_bce, (-(8 * y * np.log(sig) + (1 - y) * np.log(1 - sig))).mean(), rtol=1e-4)
  np.testing.assert_allclose(l_mse, ((np.asarray(mse) - y) ** 2).mean(), rtol=1e-5)
  np.testing.assert_allclose(head_scores(jnp.asarray(ref), mse), (sig + np.asarray(mse)) / 2, rtol=1e-5)


def test_bert_positions_default_is_arange():
  from jaxpapers.nn.bert import Bert, BertConfig
  bert = Bert(BertConfig(vocab_size=3, hidden=8, num_layers=1, num_heads=2, mlp_dim=16,
                         max_positions=10), rngs=nnx.Rngs(0))
  ids, mask = jnp.array([[0, 1, 2, 1]]), jnp.ones((1, 4), jnp.int32)
  np.testing.assert_allclose(bert(ids, mask), bert(ids, mask, positions=jnp.arange(4)[None]), rtol=1e-6)
  # positions are read from the table: a token placed at 7 differs from the same token at 0
  assert not np.allclose(bert(ids[:, :1], mask[:, :1], positions=jnp.array([[7]])),
                         bert(ids[:, :1], mask[:, :1]))


def _train_mae(mesh, wd):
  cfg = ml_collections.ConfigDict(dict(seed=0, train=dict(
      steps=3, batch=8, lr=1e-2, warmup=0, end_lr_ratio=1.0, weight_decay=0.0, b1=0.9, b2=0.999,
      eps=1e-8, clip=0.0, grad_accum=1, log_every=1, eval_every=0, ckpt_every=0, keep=1,
      on_nonfinite="stop", inject_nan_step=-1, tensorboard=False)))
  frames = np.random.default_rng(2).integers(0, 256, (8, 40, 32, 32, 3), np.uint8)
  keep = random_keep(np.random.default_rng(3), 8, TINY)
  out = train(cfg=cfg, workdir=wd, model=VideoMAE(TINY, rngs=nnx.Rngs(0)), loss_fn=mae_loss,
              get_batch=lambda step: dict(frames=frames, keep=keep), mesh=mesh, progress=False)
  return out


def test_mae_trains_on_the_8_device_mesh(tmp_path):
  mesh8 = make_mesh((-1,), ("data",))
  assert mesh8.devices.size == 8
  out8 = _train_mae(mesh8, tmp_path / "a")
  out1 = _train_mae(make_mesh((1,), ("data",), jax.devices()[:1]), tmp_path / "b")
  losses = [h["loss"] for h in out8.history]
  assert losses[-1] < losses[0]
  np.testing.assert_allclose(losses, [h["loss"] for h in out1.history], rtol=1e-4)
  # parameters after Adam steps: every entry moves by about lr per step, so the bound is over
  # the whole tree (see assert_close_scaled)
  assert_close_scaled(jax.device_get(out8.state.params), jax.device_get(out1.state.params), 1e-4,
                      per_leaf=False)
