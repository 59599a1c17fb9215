"""The IDM is non-causal and the policy causal with a clipped memory (perturbing frames); the
acting loop's key/value cache reproduces the policy's sequence forward; a few training steps on 8
fake devices."""
import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from jaxpapers.core.errors import ConfigError
from jaxpapers.core.mesh import make_mesh
from jaxpapers.vpt.env import random_act
from jaxpapers.vpt.learners import fit, initial_policy_carry, make_policy_act, pseudo_label
from jaxpapers.vpt.models import MOTION_SCALE, InverseDynamicsModel, NetConfig, Policy, tile_motion, to_tiles
from jp_testutil import assert_close_scaled

NET = NetConfig(window=6, stem_channels=8, tile_features=4, channels=(8,), d_model=16, heads=2, layers=2,
                memory=3)


def frames(key, b=2, t=6):
  return jax.random.randint(key, (b, t, 63, 63, 3), 0, 256).astype(jnp.uint8)


def perturb_from(x, t, key):
  noise = frames(key, x.shape[0], x.shape[1] - t)
  return x.at[:, t:].set(noise)


def test_policy_is_causal_and_idm_is_not():
  k1, k2 = jax.random.split(jax.random.key(0))
  x = frames(k1)
  y = perturb_from(x, 3, k2)                        # frames 3.. changed
  pol = Policy(NET, rngs=nnx.Rngs(0))
  a, b = pol(x), pol(y)
  np.testing.assert_array_equal(a[:, :3], b[:, :3])     # positions 0..2 never see frames >= 3
  assert not np.allclose(a[:, 3], b[:, 3], atol=1e-4)
  for motion in (False, True):
    idm = InverseDynamicsModel(dataclasses.replace(NET, motion=motion), rngs=nnx.Rngs(0))
    a, b = idm(x), idm(y)
    assert not np.allclose(a[:, 1], b[:, 1], atol=1e-4)   # the IDM at t=1 looks ahead
    assert not np.allclose(a[:, 0], b[:, 0], atol=1e-4)   # ... through attention, beyond the conv kernel


def test_tile_motion_finds_a_one_tile_scroll():
  """Hand-made video: frame 1 is frame 0 with the view scrolled one tile (the player moved
  left, so tile (i, j) of frame 1 shows tile (i, j - 1) of frame 0); frame 2 repeats frame 1."""
  rng = np.random.default_rng(0)
  grid = rng.integers(0, 256, (9, 10, 7, 7, 3), dtype=np.uint8)     # 10 tile columns of world
  img = lambda cols: grid[:, cols].transpose(0, 2, 1, 3, 4).reshape(63, 63, 3)
  video = np.stack([img(np.arange(1, 10)), img(np.arange(0, 9)), img(np.arange(0, 9))])
  m = np.asarray(tile_motion(to_tiles(jnp.asarray(video[None]), 7)))[0] / MOTION_SCALE
  assert m.shape == (3, 9, 9, 9)
  left = 3                                                           # offset (dy, dx) = (0, -1)
  np.testing.assert_allclose(m[0, :, 1:, left], 0.0, atol=1e-3)     # every tile matched one to the left
  assert (m[0, :, 1:, 4] > 0.1).all()                                # ... and not where it was
  np.testing.assert_allclose(m[1, ..., 4], 0.0, atol=1e-3)          # no motion between frames 1 and 2
  np.testing.assert_array_equal(m[2], 0.0)                           # the last frame has no next frame


def test_policy_memory_is_clipped_to_its_burn_in():
  """Position t sees frames t - layers x (memory - 1) .. t and nothing earlier (each clipped
  attention reaches memory - 1 frames back)."""
  pol = Policy(NET, rngs=nnx.Rngs(0))
  x = frames(jax.random.key(3), b=2, t=10)
  t = 9
  first_seen = t - NET.burn_in                          # 9 - 2 x 2 = 5
  before = x.at[:, :first_seen].set(frames(jax.random.key(4), 2, first_seen))
  np.testing.assert_array_equal(pol(x)[:, t], pol(before)[:, t])
  at = x.at[:, first_seen].set(frames(jax.random.key(5), 2, 1)[:, 0])
  assert not np.allclose(pol(x)[:, t], pol(at)[:, t], atol=1e-4)


def test_relative_bias_offsets_count_back_from_the_querying_frame():
  """Offset k of the bias table is the frame k steps back (VPT's bandify): with no content term
  (zero query/key weights) and all weight on offset 1, every frame reads the previous frame's
  value; the first frame, with no previous one, reads itself."""
  from jaxpapers.vpt.models import MemoryAttention
  att = MemoryAttention(NET, rngs=nnx.Rngs(0))
  d = NET.d_model
  kernel = att.qkv.kernel[...]
  att.qkv.kernel[...] = kernel.at[:, :2 * d].set(0.0)          # q = k = bias only
  att.qkv.bias[...] = att.qkv.bias[...].at[:2 * d].set(0.0)
  att.rel.kernel[...] = jnp.zeros_like(att.rel.kernel[...])
  att.rel.bias[...] = jnp.ones_like(att.rel.bias[...])        # every basis coefficient 1
  att.basis[...] = jnp.zeros_like(att.basis[...]).at[:, 1].set(100.0)
  att.out.kernel[...] = jnp.eye(d)
  att.out.bias[...] = jnp.zeros(d)
  x = jax.random.normal(jax.random.key(0), (1, 5, d))
  v = x @ kernel[:, 2 * d:] + att.qkv.bias[...][2 * d:]
  y = att(x)
  assert_close_scaled(y[0, 1:], v[0, :-1], 1e-5)
  assert_close_scaled(y[0, 0], v[0, 0], 1e-5)


def test_acting_cache_matches_the_sequence_forward():
  """Frame by frame with the key/value cache, from the episode's first frame and well past the
  memory, the policy gives the logits of its training-time forward over the whole sequence."""
  pol = Policy(NET, rngs=nnx.Rngs(1))
  x = frames(jax.random.key(2), b=3, t=11)
  want = np.asarray(pol(x))
  step = nnx.jit(lambda m, f, c: m.step(f, c))
  cache = pol.initial_cache(3)
  for t in range(11):
    logits, cache = step(pol, x[:, t], cache)
    assert_close_scaled(logits, want[:, t], 1e-5)
  act = make_policy_act(pol, sample=False)
  carry = initial_policy_carry(pol, 3)
  for t in range(11):
    a, carry = act(carry, x[:, t], None, jax.random.key(t))
  np.testing.assert_array_equal(a, want[:, -1].argmax(-1))
  # the random baseline through the same rollout: env.random_act's actions for the same key
  for sample in (True, False):
    a, _ = make_policy_act(pol, sample)(initial_policy_carry(pol, 3, uniform=True), x[:, 0], None,
                                        jax.random.key(5))
    np.testing.assert_array_equal(a, random_act(None, x[:, 0], None, jax.random.key(5))[0])


def test_bad_frames_fail_clearly():
  pol = Policy(NET, rngs=nnx.Rngs(0))
  with pytest.raises(ConfigError, match=r"frames must be \[batch, time, 63, 63, 3\]"):
    pol(jnp.zeros((1, 4, 64, 64, 3), jnp.uint8))
  with pytest.raises(ConfigError, match="the IDM sees at most 6 frames"):
    InverseDynamicsModel(NET, rngs=nnx.Rngs(0))(jnp.zeros((1, 7, 63, 63, 3), jnp.uint8))
  with pytest.raises(ConfigError, match="memory must be >= 1"):
    NetConfig(memory=0)
  with pytest.raises(ConfigError, match="whole number of 7-pixel tiles"):
    NetConfig(frame_shape=(64, 64, 3))


def test_training_steps_on_8_devices_and_labelling(tmp_path):
  from jaxpapers.vpt.data import Episodes
  assert jax.device_count() == 8
  rng = np.random.default_rng(0)
  n, t = 4, 10
  ep = Episodes(rng.integers(0, 256, (n, t + 1, 63, 63, 3), dtype=np.uint8),
                rng.integers(0, 17, (n, t)).astype(np.int32), np.ones((n, t), bool))
  train = ml_collections.ConfigDict(dict(
      steps=3, batch=8, lr=1e-3, warmup=0.0, end_lr_ratio=0.1, weight_decay=0.0, b1=0.9, b2=0.999,
      eps=1e-8, clip=1.0, grad_accum=1, log_every=1, eval_every=0, ckpt_every=0, keep=1,
      on_nonfinite="stop", inject_nan_step=-1, tensorboard=False))
  mesh = make_mesh([-1], ["data"])
  out = fit("idm", NET, train, ep, tmp_path / "idm", mesh, seed=0)
  assert np.isfinite(out.final_loss)
  labels = pseudo_label(out.model, ep.frames)
  assert labels.shape == (n, t) and labels.min() >= 0 and labels.max() < 17
  pol = fit("policy", NET, train, ep, tmp_path / "pol", mesh, seed=0)
  assert np.isfinite(pol.final_loss)
