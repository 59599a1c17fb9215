"""The VQ-VAE image tokenizer, CogVideo's (and CogView's) first stage: 16x16 grey frames <->
4x4 grids of codes from a codebook of K vectors (van den Oord et al. 2017, "Neural Discrete
Representation Learning", §3.1-3.2).

- Encoder: two stride-2 convolutions and a residual block, then a 1x1 projection to the code
  dimension; the decoder mirrors it with transposed convolutions.
- Quantization: nearest codebook vector; the straight-through estimator copies the decoder's
  gradient to the encoder output (§3.2, eq. 3); commitment loss beta ||z_e - sg(e)||^2, beta=0.25.
- Codebook: updated by exponential moving averages of assignment counts and sums instead of a
  codebook loss (van den Oord et al. 2017, App. A.1), with Laplace-smoothed counts (as Sonnet's
  VectorQuantizerEMA) and restart of dead codes from encoder outputs of the batch (Dhariwal et
  al. 2020, Jukebox §2.3). The EMA state lives in nnx.Variable subclasses that are not nnx.Param,
  so the optimizer never sees it; the jitted step updates it functionally."""
from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from jaxpapers.core.config import with_defaults
from jaxpapers.core.errors import ConfigError, DataError, NonFiniteError

FRAME_SIZE = 16
GRID = 4                                         # codes per side (two stride-2 downsamplings)

DEFAULT_CONFIG = dict(
    codebook_size=128,       # K
    code_dim=32,             # D
    channels=64,             # conv width
    beta=0.25,               # commitment loss weight (§3.2)
    decay=0.99,              # EMA decay of the codebook statistics (App. A.1)
    eps=1e-5,                # Laplace smoothing of the EMA counts
    restart_below=0.5,       # a code whose EMA count (uses per batch) falls below this restarts
    steps=600,
    batch=64,
    lr=1e-3,
    time_limit_s=0.0,        # > 0: stop training after this many seconds (0: run all steps)
    log_every=50,
    eval_size=512,           # held-out frames for the history's recon_mse (0: none)
)


class CodebookState(nnx.Variable):
  """EMA codebook statistics: not a Param, so no gradient or optimizer state."""


class ResBlock(nnx.Module):
  def __init__(self, c: int, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(c, c, (3, 3), padding="SAME", rngs=rngs)
    self.conv2 = nnx.Conv(c, c, (1, 1), rngs=rngs)

  def __call__(self, x):
    return x + self.conv2(jax.nn.relu(self.conv1(jax.nn.relu(x))))


class Encoder(nnx.Module):
  """[N, 16, 16, 1] -> [N, 4, 4, D]."""

  def __init__(self, c: int, d: int, *, rngs: nnx.Rngs):
    self.stem = nnx.Conv(1, c // 2, (3, 3), padding="SAME", rngs=rngs)
    self.down1 = nnx.Conv(c // 2, c, (4, 4), strides=(2, 2), padding="SAME", rngs=rngs)
    self.down2 = nnx.Conv(c, c, (4, 4), strides=(2, 2), padding="SAME", rngs=rngs)
    self.res = ResBlock(c, rngs=rngs)
    self.out = nnx.Conv(c, d, (1, 1), rngs=rngs)

  def __call__(self, x):
    x = jax.nn.relu(self.stem(x))
    x = jax.nn.relu(self.down1(x))
    x = self.res(self.down2(x))
    return self.out(jax.nn.relu(x))


class Decoder(nnx.Module):
  """[N, 4, 4, D] -> [N, 16, 16, 1]."""

  def __init__(self, c: int, d: int, *, rngs: nnx.Rngs):
    self.inp = nnx.Conv(d, c, (3, 3), padding="SAME", rngs=rngs)
    self.res = ResBlock(c, rngs=rngs)
    self.up1 = nnx.ConvTranspose(c, c, (4, 4), strides=(2, 2), padding="SAME", rngs=rngs)
    self.up2 = nnx.ConvTranspose(c, c // 2, (4, 4), strides=(2, 2), padding="SAME", rngs=rngs)
    self.out = nnx.Conv(c // 2, 1, (3, 3), padding="SAME", rngs=rngs)

  def __call__(self, z):
    x = jax.nn.relu(self.res(self.inp(z)))
    x = jax.nn.relu(self.up1(x))
    x = jax.nn.relu(self.up2(x))
    return self.out(x)


class VQVAE(nnx.Module):
  """Encoder, EMA codebook [K, D] (with its count and sum statistics), decoder."""

  def __init__(self, codebook_size: int = 128, code_dim: int = 32, channels: int = 64, *,
               rngs: nnx.Rngs):
    if channels < 2 or channels % 2:
      raise ConfigError(f"vqvae channels must be an even int >= 2, got {channels!r}")
    self.codebook_size, self.code_dim = codebook_size, code_dim
    self.encoder = Encoder(channels, code_dim, rngs=rngs)
    self.decoder = Decoder(channels, code_dim, rngs=rngs)
    init = jax.random.normal(rngs.params(), (codebook_size, code_dim))
    self.codebook = CodebookState(init)
    self.ema_count = CodebookState(jnp.ones((codebook_size,)))
    self.ema_sum = CodebookState(init)


# ---------------------------------------------------------------------------------------------
# quantization and the EMA codebook update (pure functions)

def nearest_code(codebook: jax.Array, z: jax.Array) -> jax.Array:
  """Index of the nearest codebook row (squared Euclidean) for each vector z [..., D]."""
  d = (jnp.sum(z ** 2, -1, keepdims=True) - 2 * z @ codebook.T + jnp.sum(codebook ** 2, -1))
  return jnp.argmin(d, axis=-1).astype(jnp.int32)


def quantize(codebook: jax.Array, z_e: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(z_q with the straight-through gradient, indices, z_q): the forward value of the first is
  the codebook vector, its gradient flows to z_e unchanged (van den Oord 2017 §3.2)."""
  idx = nearest_code(codebook, z_e)
  z_q = jnp.take(codebook, idx, axis=0)
  return z_e + jax.lax.stop_gradient(z_q - z_e), idx, z_q


def ema_update(count: jax.Array, total: jax.Array, z: jax.Array, idx: jax.Array, decay: float,
               eps: float) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One EMA step of the codebook statistics (App. A.1) for vectors z [N, D] assigned idx [N]:
  count <- decay count + (1 - decay) n_k, total <- decay total + (1 - decay) sum_{i: k} z_i,
  codebook = total / smoothed count, with the Laplace smoothing
  (count + eps) / (sum count + K eps) * sum count. Returns (count, total, codebook)."""
  k = count.shape[0]
  onehot = jax.nn.one_hot(idx, k, dtype=z.dtype)
  count = decay * count + (1 - decay) * onehot.sum(0)
  total = decay * total + (1 - decay) * onehot.T @ z
  n = count.sum()
  smoothed = (count + eps) / (n + k * eps) * n
  return count, total, total / smoothed[:, None]


def restart_dead(count, total, codebook, z, key, threshold: float):
  """Codes whose EMA count is below `threshold` restart at random vectors of z [N, D], their
  count reset to the mean count (Jukebox §2.3)."""
  pick = jnp.take(z, jax.random.randint(key, (count.shape[0],), 0, z.shape[0]), axis=0)
  dead = count < threshold
  fresh = jnp.full_like(count, count.mean())
  count = jnp.where(dead, fresh, count)
  codebook = jnp.where(dead[:, None], pick, codebook)
  total = jnp.where(dead[:, None], pick * fresh[:, None], total)
  return count, total, codebook


# ---------------------------------------------------------------------------------------------
# encode / decode

def check_frames(frames, name: str = "frames") -> None:
  if frames.ndim < 2 or tuple(frames.shape[-2:]) != (FRAME_SIZE, FRAME_SIZE):
    raise DataError(f"{name} must be [..., {FRAME_SIZE}, {FRAME_SIZE}], got {tuple(frames.shape)}")


def check_codes(codes) -> None:
  if codes.ndim < 2 or tuple(codes.shape[-2:]) != (GRID, GRID):
    raise DataError(f"codes must be [..., {GRID}, {GRID}], got {tuple(codes.shape)}")


def encode_continuous(model: VQVAE, frames: jax.Array) -> jax.Array:
  """frames [N, 16, 16] -> encoder outputs z_e [N, 4, 4, D]."""
  return model.encoder(frames[..., None])


def forward(model: VQVAE, frames: jax.Array):
  """frames [N, 16, 16] -> (reconstruction [N, 16, 16], z_e, z_q straight-through, codes)."""
  z_e = encode_continuous(model, frames)
  z_st, idx, _ = quantize(model.codebook[...], z_e)
  return model.decoder(z_st)[..., 0], z_e, z_st, idx


def encode(model: VQVAE, frames) -> jax.Array:
  """frames [..., 16, 16] -> codes int32[..., 4, 4]."""
  frames = jnp.asarray(frames, jnp.float32)
  check_frames(frames)
  lead = frames.shape[:-2]
  z_e = encode_continuous(model, frames.reshape((-1, FRAME_SIZE, FRAME_SIZE)))
  return nearest_code(model.codebook[...], z_e).reshape(lead + (GRID, GRID))


def decode(model: VQVAE, codes) -> jax.Array:
  """codes int[..., 4, 4] -> frames float32[..., 16, 16] (clipped to [0, 1])."""
  codes = jnp.asarray(codes)
  check_codes(codes)
  lead = codes.shape[:-2]
  z = jnp.take(model.codebook[...], codes.reshape((-1, GRID, GRID)), axis=0)
  x = model.decoder(z)[..., 0]
  return jnp.clip(x, 0.0, 1.0).reshape(lead + (FRAME_SIZE, FRAME_SIZE))


@nnx.jit
def _reconstruct(model: VQVAE, frames):
  codes = encode(model, frames)
  return decode(model, codes), codes


def vq_metrics(model: VQVAE, frames, batch: int = 1024) -> dict[str, float]:
  """recon_mse (per pixel, decoded codes vs frames), codebook_usage (fraction of the K codes used
  on these frames) and perplexity (exp of the entropy of the code histogram)."""
  frames = np.asarray(frames, np.float32)
  check_frames(frames)
  flat = frames.reshape(-1, FRAME_SIZE, FRAME_SIZE)
  sq, hist = 0.0, np.zeros(model.codebook_size)
  for i in range(0, len(flat), batch):
    recon, codes = _reconstruct(model, jnp.asarray(flat[i:i + batch]))
    sq += float(jnp.sum((recon - flat[i:i + batch]) ** 2))
    hist += np.bincount(np.asarray(codes).reshape(-1), minlength=model.codebook_size)
  p = hist / hist.sum()
  entropy = -np.sum(p[p > 0] * np.log(p[p > 0]))
  return dict(recon_mse=sq / flat.size, codebook_usage=float((hist > 0).mean()),
              perplexity=float(np.exp(entropy)))


# ---------------------------------------------------------------------------------------------
# training

def resolve_config(cfg: dict | None) -> dict:
  c = with_defaults("vqvae", DEFAULT_CONFIG, cfg,
                    ("codebook_size", "code_dim", "channels", "steps", "batch", "log_every"))
  if not 0.0 <= c["decay"] < 1.0:
    raise ConfigError(f"vqvae config decay must be in [0, 1), got {c['decay']!r}")
  for k in ("beta", "eps", "restart_below", "lr", "time_limit_s"):
    if not np.isfinite(c[k]) or c[k] < 0:
      raise ConfigError(f"vqvae config {k} must be a finite number >= 0, got {c[k]!r}")
  return c


def vq_loss(model: VQVAE, frames: jax.Array, beta: float):
  """Reconstruction MSE + beta * commitment ||z_e - sg(e)||^2 (§3.2, eq. 3 without the codebook
  term, which the EMA update replaces)."""
  recon, z_e, _, idx = forward(model, frames)
  z_q = jax.lax.stop_gradient(jnp.take(model.codebook[...], idx, axis=0))
  rec = jnp.mean((recon - frames) ** 2)
  commit = jnp.mean((z_e - z_q) ** 2)
  return rec + beta * commit, dict(recon_mse=rec, commit=commit, z_e=z_e, idx=idx)


def make_step(graphdef, tx, c: dict):
  """step(params, stats, opt_state, frames, key) -> (params, stats, opt_state, metrics): Adam on
  the encoder/decoder, then the EMA codebook update and dead-code restart on the batch."""

  def loss_of(params, stats, frames):
    return vq_loss(nnx.merge(graphdef, params, stats), frames, c["beta"])

  def step(params, stats, opt_state, frames, key):
    (loss, aux), grads = jax.value_and_grad(loss_of, has_aux=True)(params, stats, frames)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    z = jax.lax.stop_gradient(aux["z_e"]).reshape(-1, c["code_dim"])
    idx = aux["idx"].reshape(-1)
    count, total, codebook = ema_update(stats["ema_count"][...], stats["ema_sum"][...], z, idx,
                                        c["decay"], c["eps"])
    count, total, codebook = restart_dead(count, total, codebook, z, key, c["restart_below"])
    model = nnx.merge(graphdef, params, stats)
    model.ema_count[...], model.ema_sum[...], model.codebook[...] = count, total, codebook
    stats = nnx.state(model, CodebookState)
    usage = jnp.mean(jnp.bincount(idx, length=c["codebook_size"]) > 0)
    return params, stats, opt_state, dict(loss=loss, recon_mse=aux["recon_mse"],
                                          commit=aux["commit"], batch_usage=usage)

  return jax.jit(step, donate_argnums=(0, 1, 2))


def init_codebook_from(model: VQVAE, frames, key: jax.Array, count: float = 1.0) -> None:
  """Data-dependent start: the codebook is a random sample of encoder outputs of `frames`, each
  code's EMA count `count` (in place; a code unused from the start restarts after about
  log(restart_below / count) / log(decay) steps)."""
  z = encode_continuous(model, jnp.asarray(frames)).reshape(-1, model.code_dim)
  k = model.codebook_size
  pick = jnp.take(z, jax.random.choice(key, z.shape[0], (k,), replace=z.shape[0] < k), axis=0)
  model.codebook[...] = pick
  model.ema_count[...] = jnp.full((k,), count)
  model.ema_sum[...] = pick * count


def train_vqvae(frames_fn: Callable[[np.random.Generator, int], np.ndarray], cfg: dict | None = None,
                seed: int = 0, progress: bool = True) -> tuple[VQVAE, list[dict]]:
  """Train a VQ-VAE on batches frames_fn(rng, batch) -> float32[batch, 16, 16] (rng: a numpy
  Generator seeded from `seed`). Returns (model, history): one row per log_every steps with
  step, loss, recon_mse, commit, batch_usage (fraction of codes used in the batch), elapsed_s, and
  held-out eval_recon_mse / eval_usage / eval_perplexity on eval_size frames drawn first."""
  c = resolve_config(cfg)
  rng = np.random.default_rng(seed)
  key = jax.random.key(seed)
  eval_frames = np.asarray(frames_fn(rng, c["eval_size"]), np.float32) if c["eval_size"] else None
  key, k_model, k_init = jax.random.split(key, 3)
  model = VQVAE(c["codebook_size"], c["code_dim"], c["channels"], rngs=nnx.Rngs(k_model))
  first = np.asarray(frames_fn(rng, c["batch"]), np.float32)
  check_frames(first, "frames_fn output")
  init_codebook_from(model, first, k_init)
  graphdef, params, stats = nnx.split(model, nnx.Param, CodebookState)
  tx = optax.adam(c["lr"])
  opt_state = tx.init(params)
  step = make_step(graphdef, tx, c)
  history, start, batch = [], time.perf_counter(), first
  bar = tqdm(range(c["steps"]), desc="vqvae", disable=not progress, leave=False)
  for i in bar:
    params, stats, opt_state, m = step(params, stats, opt_state, jnp.asarray(batch),
                                       jax.random.fold_in(key, i))
    last = i + 1 == c["steps"] or (c["time_limit_s"] and time.perf_counter() - start > c["time_limit_s"])
    if (i + 1) % c["log_every"] == 0 or last:
      row = {k: float(v) for k, v in m.items()} | dict(step=i + 1, elapsed_s=time.perf_counter() - start)
      if not np.isfinite(row["loss"]):
        raise NonFiniteError(f"vqvae training: non-finite loss at step {i + 1}")
      if eval_frames is not None:
        ev = vq_metrics(nnx.merge(graphdef, params, stats), eval_frames)
        row |= {f"eval_{k}": v for k, v in ev.items()}
      history.append(row)
      bar.set_postfix(recon=f"{row['recon_mse']:.4f}", usage=f"{row['batch_usage']:.2f}")
    if last:
      break
    batch = np.asarray(frames_fn(rng, c["batch"]), np.float32)
  return nnx.merge(graphdef, params, stats), history
