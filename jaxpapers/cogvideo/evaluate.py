"""Evaluating generated videos of the caption world (CogVideo §5 reports FVD and human scores;
here the world's captions are checkable, so we also measure caption accuracy):

- a clip classifier trained on real clips of all 32 caption combinations (an evaluation
  instrument that knows the held-out combinations, as FVD's I3D network was trained on other
  data): heads for object, direction and speed; its penultimate layer gives the features of
- the Fréchet distance between Gaussian fits of real and generated features (FID, Heusel et al.
  2017; FVD, Unterthiner et al. 2018, §3);
- a parameter-free motion estimate (circular cross-correlation of consecutive frames) that reads
  direction and speed off a clip exactly when the clip moves as the world does."""
from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from jaxpapers.cogvideo import world
from jaxpapers.core.config import with_defaults
from jaxpapers.core.errors import ConfigError, DataError

ATTRIBUTES = ("object", "direction", "speed")
HEAD_SIZES = (len(world.OBJECTS), len(world.DIRECTIONS), len(world.SPEEDS))

DEFAULT_CONFIG = dict(
    num_frames=9,            # the clips the classifier reads: T frames ...
    fps=8,                   # ... at this frame rate
    channels=32,
    features=64,             # F, the penultimate width (the Fréchet distance's features)
    steps=300,
    batch=64,
    lr=2e-3,
    eval_size=512,           # held-out clips (test-image world) for the reported accuracy
)


# ---------------------------------------------------------------------------------------------
# the classifier

APPEARANCE_FRAMES = 3         # frames the appearance tower reads (evenly spaced)


class ConvTower(nnx.Module):
  """Circular (torus) convolutions 16x16 -> 4x4, then global mean and max pooling: [N, 16, 16,
  cin] -> [N, 4c]."""

  def __init__(self, cin: int, c: int, first_kernel: int, *, rngs: nnx.Rngs):
    k = (first_kernel, first_kernel)
    self.conv1 = nnx.Conv(cin, c, k, padding="CIRCULAR", rngs=rngs)
    self.conv2 = nnx.Conv(c, 2 * c, (3, 3), strides=(2, 2), padding="CIRCULAR", rngs=rngs)
    self.conv3 = nnx.Conv(2 * c, 2 * c, (3, 3), strides=(2, 2), padding="CIRCULAR", rngs=rngs)

  def __call__(self, x):
    x = jax.nn.relu(self.conv1(x))
    x = jax.nn.relu(self.conv2(x))
    x = jax.nn.relu(self.conv3(x))
    return jnp.concatenate([x.mean(axis=(1, 2)), x.max(axis=(1, 2))], axis=-1)


class ClipClassifier(nnx.Module):
  """Two towers: motion (the T frames stacked on channels, 5x5 first kernel: a 2-pixel step is
  inside its reach) and appearance (APPEARANCE_FRAMES evenly spaced frames alone, averaged: the
  sprite's shape, which stacking smears for fast motion); concatenated -> dense F (the features)
  -> three linear heads (object, direction, speed)."""

  def __init__(self, num_frames: int = 9, channels: int = 32, features: int = 64, *,
               rngs: nnx.Rngs):
    self.num_frames = num_frames
    self.motion = ConvTower(num_frames, channels, 5, rngs=rngs)
    self.appearance = ConvTower(1, channels, 3, rngs=rngs)
    self.dense = nnx.Linear(8 * channels, features, rngs=rngs)
    self.heads = nnx.List([nnx.Linear(features, k, rngs=rngs) for k in HEAD_SIZES])

  def features(self, clips):                     # [N, T, 16, 16] -> [N, F]
    n, t = clips.shape[0], min(APPEARANCE_FRAMES, self.num_frames)
    motion = self.motion(jnp.moveaxis(clips, 1, -1))
    picked = clips[:, np.linspace(0, self.num_frames - 1, t).round().astype(int)]
    per_frame = self.appearance(picked.reshape((n * t,) + clips.shape[2:] + (1,)))
    appearance = per_frame.reshape(n, t, -1).mean(axis=1)
    return jax.nn.relu(self.dense(jnp.concatenate([motion, appearance], axis=-1)))

  def __call__(self, clips):                     # -> (object, direction, speed) logits
    f = self.features(clips)
    return tuple(h(f) for h in self.heads)


def check_clips(clf: ClipClassifier, clips) -> None:
  shape = (clf.num_frames, world.FRAME_SIZE, world.FRAME_SIZE)
  if clips.ndim != 4 or tuple(clips.shape[1:]) != shape:
    raise DataError(f"clips must be [n, {', '.join(map(str, shape))}] for this classifier, got "
                    f"{tuple(clips.shape)}")


@nnx.jit
def _features(clf, clips):
  return clf.features(clips)


@nnx.jit
def _predict(clf, clips):
  return jnp.stack([jnp.argmax(l, -1) for l in clf(clips)], -1).astype(jnp.int32)


def _batched(fn, clf, clips, batch: int) -> np.ndarray:
  clips = np.asarray(clips, np.float32)
  check_clips(clf, clips)
  return np.concatenate([np.asarray(fn(clf, jnp.asarray(clips[i:i + batch])))
                         for i in range(0, max(len(clips), 1), batch)])[:len(clips)]


def features(clf: ClipClassifier, clips, batch: int = 512) -> np.ndarray:
  """clips [n, T, 16, 16] -> penultimate features float32[n, F]."""
  return _batched(_features, clf, clips, batch).astype(np.float32)


def predict(clf: ClipClassifier, clips, batch: int = 512) -> np.ndarray:
  """clips [n, T, 16, 16] -> predicted (object, direction, speed) indices int32[n, 3]."""
  return _batched(_predict, clf, clips, batch).astype(np.int32)


def resolve_config(cfg: dict | None) -> dict:
  c = with_defaults("classifier", DEFAULT_CONFIG, cfg,
                    ("num_frames", "channels", "features", "steps", "batch", "eval_size"))
  world.check_frame_rate(c["fps"])
  if not (np.isfinite(c["lr"]) and c["lr"] > 0):
    raise ConfigError(f"classifier config lr must be a finite positive number, got {c['lr']!r}")
  return c


ClipFn = Callable[[np.random.Generator, int], dict]


def world_clip_fns(num_frames: int = 9, fps: int = 8) -> tuple[ClipFn, ClipFn]:
  """(train_fn, eval_fn): single-object clips of all 32 combinations with Fashion-MNIST train
  images (training) and test images (held-out evaluation)."""
  def make(images):
    return lambda rng, n: world.sample_clips(rng, "all", n, num_frames, fps, images=images)
  return make("train"), make("test")


def classifier_loss(clf: ClipClassifier, clips, attrs):
  """Sum over the three heads of the mean cross-entropy."""
  logits = clf(clips)
  return sum(optax.softmax_cross_entropy_with_integer_labels(l, attrs[:, i]).mean()
             for i, l in enumerate(logits))


def train_classifier(cfg: dict | None = None, seed: int = 0, train_fn: ClipFn | None = None,
                     eval_fn: ClipFn | None = None, progress: bool = True
                     ) -> tuple[ClipClassifier, dict]:
  """Train the clip classifier with Adam on batches train_fn(rng, batch) (dicts with frames
  [n, T, 16, 16] and attrs [n, 3]; default world_clip_fns). Returns (clf, metrics): held-out
  accuracy per attribute (object, direction, speed, mean, all) on eval_size clips of eval_fn,
  train_time_s, steps and final_loss."""
  c = resolve_config(cfg)
  default_train, default_eval = world_clip_fns(c["num_frames"], c["fps"])
  train_fn, eval_fn = train_fn or default_train, eval_fn or default_eval
  rng = np.random.default_rng(seed)
  clf = ClipClassifier(c["num_frames"], c["channels"], c["features"],
                       rngs=nnx.Rngs(jax.random.key(seed)))
  graphdef, params = nnx.split(clf)
  tx = optax.adam(c["lr"])
  opt_state = tx.init(params)

  def step(params, opt_state, clips, attrs):
    loss, grads = jax.value_and_grad(
        lambda p: classifier_loss(nnx.merge(graphdef, p), clips, attrs))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  step = jax.jit(step, donate_argnums=(0, 1))
  start = time.perf_counter()
  loss = jnp.nan
  for _ in tqdm(range(c["steps"]), desc="classifier", disable=not progress, leave=False):
    b = train_fn(rng, c["batch"])
    params, opt_state, loss = step(params, opt_state, jnp.asarray(b["frames"], jnp.float32),
                                   jnp.asarray(b["attrs"], jnp.int32))
  train_time = time.perf_counter() - start
  clf = nnx.merge(graphdef, params)
  held_out = eval_fn(np.random.default_rng([seed, 1]), c["eval_size"])
  acc = caption_accuracy(predict(clf, held_out["frames"]), held_out["attrs"])
  return clf, dict(acc, train_time_s=train_time, steps=c["steps"], final_loss=float(loss))


# ---------------------------------------------------------------------------------------------
# metrics

def caption_accuracy(pred_attrs, true_attrs) -> dict[str, float]:
  """Per-attribute accuracy of (object, direction, speed) predictions, their mean, and `all`:
  the fraction of clips with all three right."""
  p, t = np.asarray(pred_attrs), np.asarray(true_attrs)
  if p.shape != t.shape or p.ndim != 2 or p.shape[1] != 3 or not len(p):
    raise DataError(f"predicted and true attrs must both be [n, 3] with n >= 1, got {p.shape} and "
                    f"{t.shape}")
  hits = p == t
  out = {name: float(hits[:, i].mean()) for i, name in enumerate(ATTRIBUTES)}
  return dict(out, mean=float(np.mean([out[a] for a in ATTRIBUTES])),
              all=float(hits.all(axis=1).mean()))


def gaussian_fit(feats) -> tuple[np.ndarray, np.ndarray]:
  """Mean and (unbiased) covariance in float64 of features [n, F], n >= 2."""
  f = np.asarray(feats, np.float64)
  if f.ndim != 2 or f.shape[0] < 2:
    raise DataError(f"features must be [n, F] with n >= 2 samples, got shape {f.shape}")
  if not np.isfinite(f).all():
    raise DataError("features contain NaN or Inf")
  return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh((s + s.T) / 2)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(feat_a, feat_b) -> float:
  """Fréchet distance between Gaussian fits of two feature sets (FID/FVD, Unterthiner 2018 §3):
  ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}), in float64. Tr (S_a S_b)^{1/2} is
  computed as Tr (S_a^{1/2} S_b S_a^{1/2})^{1/2} (a similar matrix, symmetric PSD), from
  eigen-decompositions: stable for the singular covariances of ReLU features, where a general
  matrix square root can turn complex."""
  mu_a, s_a = gaussian_fit(feat_a)
  mu_b, s_b = gaussian_fit(feat_b)
  if mu_a.shape != mu_b.shape:
    raise DataError(f"feature sets differ in width: {mu_a.shape[0]} vs {mu_b.shape[0]}")
  root_a = _psd_sqrt(s_a)
  middle = root_a @ s_b @ root_a
  w = np.linalg.eigvalsh((middle + middle.T) / 2)
  tr_cross = np.sqrt(np.clip(w, 0.0, None)).sum()
  return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * tr_cross)


def estimate_motion(frames, interval_ticks: int) -> dict[str, np.ndarray]:
  """Per clip [n, T, 16, 16] (T >= 2): for each consecutive frame pair, the circular shift
  (dy, dx) maximising the circular cross-correlation (via FFT), wrapped to [-8, 8); the median
  over pairs gives dx, dy (float[n], pixels per frame); speed_px_per_tick = |(dx, dy)| /
  interval_ticks; direction int[n] indexes world.DIRECTIONS by the dominant axis (-1: no motion);
  speed int[n] indexes world.SPEEDS (nearest of SPEED_PX; -1: no motion)."""
  f = np.asarray(frames, np.float64)
  size = world.FRAME_SIZE
  if f.ndim != 4 or f.shape[1] < 2 or f.shape[2:] != (size, size):
    raise DataError(f"frames must be [n, T >= 2, {size}, {size}], got {f.shape}")
  if isinstance(interval_ticks, bool) or not isinstance(interval_ticks, (int, np.integer)) \
      or interval_ticks < 1:
    raise ConfigError(f"interval_ticks must be a positive int, got {interval_ticks!r}")
  spec = np.fft.fft2(f)
  corr = np.fft.ifft2(np.conj(spec[:, :-1]) * spec[:, 1:]).real     # corr[s] = sum a[x] b[x + s]
  flat = corr.reshape(corr.shape[:2] + (-1,)).argmax(-1)
  sy, sx = np.divmod(flat, size)
  wrap = lambda s: (s + size // 2) % size - size // 2
  dy, dx = np.median(wrap(sy), axis=1), np.median(wrap(sx), axis=1)
  speed = np.hypot(dx, dy) / interval_ticks
  moving = speed > 0
  horizontal = np.abs(dx) >= np.abs(dy)
  direction = np.where(horizontal, np.where(dx > 0, 1, 0), np.where(dy > 0, 3, 2))
  direction = np.where(moving, direction, -1).astype(np.int32)
  nearest = np.abs(speed[:, None] - np.asarray(world.SPEED_PX)[None]).argmin(-1)
  return dict(dx=dx, dy=dy, speed_px_per_tick=speed, direction=direction,
              speed=np.where(moving, nearest, -1).astype(np.int32))
