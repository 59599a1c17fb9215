"""The VQ-VAE tokenizer (van den Oord et al. 2017, §3.2 and App. A.1): shapes, nearest-code
quantization, the straight-through gradient, the EMA codebook update and dead-code restart."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxpapers.cogvideo import vqvae
from jaxpapers.core.errors import ConfigError, DataError

TINY = dict(codebook_size=16, code_dim=4, channels=8)


def tiny_model(seed=0):
  return vqvae.VQVAE(**TINY, rngs=nnx.Rngs(seed))


def test_encode_decode_shapes_and_ranges():
  model = tiny_model()
  frames = jax.random.uniform(jax.random.key(1), (2, 3, 16, 16))
  codes = nnx.jit(vqvae.encode)(model, frames)
  assert codes.shape == (2, 3, 4, 4) and codes.dtype == jnp.int32
  assert int(codes.min()) >= 0 and int(codes.max()) < 16
  out = nnx.jit(vqvae.decode)(model, codes)
  assert out.shape == (2, 3, 16, 16) and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  with pytest.raises(DataError, match=r"frames must be \[\.\.\., 16, 16\], got \(2, 8, 8\)"):
    vqvae.encode(model, jnp.zeros((2, 8, 8)))
  with pytest.raises(DataError, match=r"codes must be \[\.\.\., 4, 4\]"):
    vqvae.decode(model, jnp.zeros((2, 16), jnp.int32))


def test_quantize_picks_nearest_code_forward():
  codebook = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
  z_e = jnp.array([[0.9, 0.1], [0.1, 0.2], [0.2, 0.7]])
  z_st, idx, z_q = vqvae.quantize(codebook, z_e)
  np.testing.assert_array_equal(idx, [1, 0, 2])
  np.testing.assert_allclose(z_q, [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
  np.testing.assert_allclose(z_st, z_q, atol=1e-7)


def test_straight_through_gradient_equals_gradient_at_the_quantized_vectors():
  """d loss(decoder(z_q)) / d z_e through the straight-through path = d loss / d z_q (§3.2)."""
  model = tiny_model()
  target = jax.random.uniform(jax.random.key(2), (2, 16, 16))
  z_e = jax.random.normal(jax.random.key(3), (2, 4, 4, 4))
  codebook = model.codebook[...]
  loss = lambda z: jnp.mean((model.decoder(z)[..., 0] - target) ** 2)
  g_e = jax.jit(jax.grad(lambda z: loss(vqvae.quantize(codebook, z)[0])))(z_e)
  z_q = vqvae.quantize(codebook, z_e)[2]
  g_q = jax.jit(jax.grad(loss))(z_q)
  assert float(jnp.abs(g_q).max()) > 0
  np.testing.assert_allclose(g_e, g_q, rtol=1e-6, atol=1e-9)
  assert not np.allclose(z_e, z_q)        # the gradient is taken at z_q, not at z_e


def test_ema_update_hand_built():
  """decay 0.5, two codes; vectors 2 -> code 0, 4 and 4 -> code 1."""
  count, total = jnp.array([1.0, 1.0]), jnp.array([[1.0], [3.0]])
  z, idx = jnp.array([[2.0], [4.0], [4.0]]), jnp.array([0, 1, 1])
  c, t, e = vqvae.ema_update(count, total, z, idx, decay=0.5, eps=0.0)
  np.testing.assert_allclose(c, [1.0, 1.5])          # 0.5 * 1 + 0.5 * n_k
  np.testing.assert_allclose(t, [[1.5], [5.5]])      # 0.5 * sum + 0.5 * (2 | 4 + 4)
  np.testing.assert_allclose(e, [[1.5], [5.5 / 1.5]], rtol=1e-6)
  # Laplace smoothing: (count + eps) / (n + K eps) * n with n = 2.5, eps = 0.5
  _, _, e = vqvae.ema_update(count, total, z, idx, decay=0.5, eps=0.5)
  smoothed = np.array([1.5, 2.0]) / 3.5 * 2.5
  np.testing.assert_allclose(e, [[1.5 / smoothed[0]], [5.5 / smoothed[1]]], rtol=1e-6)


def test_dead_codes_restart_at_encoder_outputs():
  count = jnp.array([2.0, 0.01, 4.0])
  total = jnp.array([[2.0, 2.0], [0.0, 0.0], [4.0, 0.0]])
  codebook = jnp.array([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
  z = jnp.array([[7.0, -7.0]] * 5)                   # whichever vector is drawn: (7, -7)
  c, t, e = vqvae.restart_dead(count, total, codebook, z, jax.random.key(0), threshold=0.5)
  mean = (2.0 + 0.01 + 4.0) / 3
  np.testing.assert_allclose(c, [2.0, mean, 4.0], rtol=1e-6)
  np.testing.assert_allclose(e, [[1.0, 1.0], [7.0, -7.0], [1.0, 0.0]])
  np.testing.assert_allclose(t, [[2.0, 2.0], [7.0 * mean, -7.0 * mean], [4.0, 0.0]], rtol=1e-6)


def test_train_few_steps_keeps_codebook_the_smoothed_ema_mean():
  rng_frames = lambda rng, n: rng.uniform(size=(n, 16, 16)).astype(np.float32) * (rng.uniform(size=(n, 1, 1)) > 0.5)
  cfg = dict(TINY, steps=3, batch=4, eval_size=8, log_every=1, restart_below=0.0)
  model, history = vqvae.train_vqvae(rng_frames, cfg, seed=0, progress=False)
  assert [h["step"] for h in history] == [1, 2, 3]
  assert all(np.isfinite(h["loss"]) and 0 < h["eval_codebook_usage"] <= 1 for h in history)
  count, total = np.asarray(model.ema_count[...]), np.asarray(model.ema_sum[...])
  n = count.sum()
  smoothed = (count + 1e-5) / (n + 16 * 1e-5) * n
  np.testing.assert_allclose(model.codebook[...], total / smoothed[:, None], rtol=1e-5, atol=1e-6)
  m = vqvae.vq_metrics(model, rng_frames(np.random.default_rng(1), 6))
  assert set(m) == {"recon_mse", "codebook_usage", "perplexity"}
  assert 1.0 <= m["perplexity"] <= 16 and 0 < m["codebook_usage"] <= 1
  with pytest.raises(ConfigError, match="unknown vqvae config key.*codebok_size"):
    vqvae.train_vqvae(rng_frames, dict(codebok_size=8), progress=False)
