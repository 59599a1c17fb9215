"""The boundary models of the ladder, on the framework's BERT trunk (`jaxpapers.nn.bert`: its
attention, logical axes and scanned layers) and trained by `jaxpapers.core.train`.

* `BoundaryNet` (the ladder's base model): each frame and its differences to the previous and
  the next frame (a change of motion shows within one input) through a small strided CNN (its last feature map flattened), a temporal transformer over the 40 frame embeddings, one logit per
  0.25 s section; plain binary cross-entropy against hard or soft targets. The paper's base model
  (the 2021 winner's) reads precomputed TSN + SlowFast features of Kinetics-pretrained networks,
  which do not exist for our videos: ours learns its frame features from the benchmark.
* `VideoMAE` (§2.3; Tong et al. 2022): tube patches of 2 frames x 8 x 8 pixels (the release's
  2 x 16 x 16 at 224 px, scaled to 32 px), random per-patch masking at 90% (the release masks
  patches independently, not whole tubes), a light decoder over all positions with a shared mask
  token, mean squared error on the masked patches' normalised pixels (each patch's own mean and
  variance).
* `MAEBoundary`: the pre-trained encoder over all patches with the release's two heads: a BCE head
  (each token's features averaged to one number, LayerNorm over the tokens, a linear map to the
  40 sections; BCE with positive weight 8) and an MSE head (the time-major tokens cut into 40
  groups, adjacent pairs concatenated, averaged within the group, a linear map to one number;
  with 2-frame tubes a group is half of one tube step's patches, as in the release), hard
  targets; the score is the mean of sigmoid(BCE head) and the MSE head.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxpapers.gebd.benchmark import SIZE
from jaxpapers.gebd.boundaries import N_SECTIONS
from jaxpapers.nn.bert import Bert, BertConfig
from jaxpapers.nn.param import param

zeros = lambda k, s, d: jnp.zeros(s, d)
ones = lambda k, s, d: jnp.ones(s, d)


def _dense(rngs, din, dout, axes=("embed", "mlp")):
  w = param(rngs.params(), nnx.initializers.lecun_normal(), (din, dout), axes)
  b = param(None, zeros, (dout,), (axes[1],), decay=False)
  return w, b


def _trunk(hidden, layers, heads, mlp, positions, dropout, vocab=1, rngs=None) -> Bert:
  return Bert(BertConfig(vocab_size=vocab, hidden=hidden, num_layers=layers, num_heads=heads,
                         mlp_dim=mlp, max_positions=positions, type_vocab=1, ln_eps=1e-6,
                         dropout=dropout, unroll=True), rngs=rngs)


def frames_to_float(frames):
  return frames.astype(jnp.float32) / 255.0 - 0.5


# ----------------------------------------------------------------------------- base model

@dataclasses.dataclass(frozen=True)
class BaseConfig:
  conv: tuple = (16, 32, 32)
  hidden: int = 64
  layers: int = 2
  heads: int = 4
  mlp: int = 128
  dropout: float = 0.1


class BoundaryNet(nnx.Module):
  def __init__(self, cfg: BaseConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    cin = 9
    self.convs = nnx.List()
    for c in cfg.conv:
      w = param(rngs.params(), nnx.initializers.he_normal(), (3, 3, cin, c), (None, None, None, "mlp"))
      self.convs.append(nnx.List([w, param(None, zeros, (c,), ("mlp",), decay=False)]))
      cin = c
    side = SIZE // 2 ** len(cfg.conv)
    self.proj_w, self.proj_b = _dense(rngs, side * side * cin, cfg.hidden, ("mlp", "embed"))
    self.trunk = _trunk(cfg.hidden, cfg.layers, cfg.heads, cfg.mlp, N_SECTIONS, cfg.dropout, rngs=rngs)
    self.head_w, self.head_b = _dense(rngs, cfg.hidden, 1, ("embed", None))

  def __call__(self, frames, dropout_key=None):
    """frames [B, 40, H, W, 3] uint8 -> section logits [B, 40]."""
    x = frames_to_float(frames)
    prev = jnp.concatenate([x[:, :1], x[:, :-1]], 1)
    nxt = jnp.concatenate([x[:, 1:], x[:, -1:]], 1)
    x = jnp.concatenate([x, x - prev, nxt - x], -1)
    B, T = x.shape[:2]
    h = x.reshape((B * T,) + x.shape[2:])
    for w, b in self.convs:
      h = jax.nn.relu(jax.lax.conv_general_dilated(h, w.get_value(), (2, 2), "SAME",
                                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
                      + b.get_value())
    # flattened, not pooled: where an object is (and so where it moves) stays in the embedding
    h = h.reshape(B, T, -1) @ self.proj_w.get_value() + self.proj_b.get_value()
    ids = jnp.zeros((B, T), jnp.int32)
    h = self.trunk(ids, jnp.ones((B, T), jnp.int32), extra=h, dropout_key=dropout_key)
    return (h @ self.head_w.get_value() + self.head_b.get_value())[..., 0]


def base_loss(model: BoundaryNet, batch: dict, key):
  logits = model(batch["frames"], dropout_key=key)
  loss = optax.sigmoid_binary_cross_entropy(logits, batch["target"]).mean()
  return loss, {}


def base_scores(model: BoundaryNet, batch: dict):
  return jax.nn.sigmoid(model(batch["frames"]))


# ----------------------------------------------------------------------------- video MAE

@dataclasses.dataclass(frozen=True)
class MAEConfig:
  tube: int = 2
  patch: int = 8
  hidden: int = 64
  layers: int = 3
  heads: int = 4
  mlp: int = 128
  dec_hidden: int = 64
  dec_layers: int = 1
  dec_heads: int = 4
  mask_ratio: float = 0.9
  pos_weight: float = 8.0     # the release's BCE positive weight

  @property
  def n_tokens(self) -> int:
    return (N_SECTIONS // self.tube) * (SIZE // self.patch) ** 2

  @property
  def patch_dim(self) -> int:
    return self.tube * self.patch * self.patch * 3

  @property
  def n_keep(self) -> int:
    return max(1, int(round(self.n_tokens * (1 - self.mask_ratio))))


def patchify(x, tube: int, patch: int):
  """[B, T, H, W, C] -> [B, (T/tube)(H/patch)(W/patch), tube*patch*patch*C], time-major."""
  B, T, H, W, C = x.shape
  x = x.reshape(B, T // tube, tube, H // patch, patch, W // patch, patch, C)
  x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(B, (T // tube) * (H // patch) * (W // patch), tube * patch * patch * C)


def normalised_pixels(p):
  """VideoMAE's target: each patch's pixels normalised per channel within the patch (unbiased
  variance, 1e-6 added to the standard deviation). p: [B, N, tube*patch*patch*3], channel last."""
  q = p.reshape(p.shape[:-1] + (-1, 3))
  q = (q - q.mean(-2, keepdims=True)) / (jnp.sqrt(q.var(-2, keepdims=True, ddof=1)) + 1e-6)
  return q.reshape(p.shape)


class MAEEncoder(nnx.Module):
  def __init__(self, cfg: MAEConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed_w, self.embed_b = _dense(rngs, cfg.patch_dim, cfg.hidden, ("mlp", "embed"))
    self.trunk = _trunk(cfg.hidden, cfg.layers, cfg.heads, cfg.mlp, cfg.n_tokens, 0.0, rngs=rngs)

  def __call__(self, patches, positions=None):
    """patches [B, N', P] at `positions` [B, N'] (default: all, in order) -> [B, N', hidden]."""
    B, N = patches.shape[:2]
    h = patches @ self.embed_w.get_value() + self.embed_b.get_value()
    return self.trunk(jnp.zeros((B, N), jnp.int32), jnp.ones((B, N), jnp.int32), extra=h,
                      positions=positions)


class VideoMAE(nnx.Module):
  def __init__(self, cfg: MAEConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.encoder = MAEEncoder(cfg, rngs=rngs)
    self.dec_w, self.dec_b = _dense(rngs, cfg.hidden, cfg.dec_hidden, ("embed", "mlp"))
    # token id 0: a kept patch (its encoding arrives through `extra`); 1: the mask token
    self.decoder = _trunk(cfg.dec_hidden, cfg.dec_layers, cfg.dec_heads, 2 * cfg.dec_hidden,
                          cfg.n_tokens, 0.0, vocab=2, rngs=rngs)
    self.pred_w, self.pred_b = _dense(rngs, cfg.dec_hidden, cfg.patch_dim, ("mlp", "embed"))

  def __call__(self, frames, keep):
    """frames [B, 40, H, W, 3] uint8, keep [B, n_keep] kept patch indices -> predicted
    normalised pixels of every patch [B, N, P] and the target [B, N, P]."""
    c = self.cfg
    p = patchify(frames_to_float(frames), c.tube, c.patch)
    B, N, P = p.shape
    vis = jnp.take_along_axis(p, keep[..., None], axis=1)
    enc = self.encoder(vis, positions=keep)
    d = enc @ self.dec_w.get_value() + self.dec_b.get_value()
    rows = jnp.arange(B)[:, None]
    extra = jnp.zeros((B, N, c.dec_hidden), d.dtype).at[rows, keep].set(d)
    ids = jnp.ones((B, N), jnp.int32).at[rows, keep].set(0)
    h = self.decoder(ids, jnp.ones((B, N), jnp.int32), extra=extra)
    pred = h @ self.pred_w.get_value() + self.pred_b.get_value()
    return pred, normalised_pixels(p)


def mae_loss(model: VideoMAE, batch: dict, key):
  pred, target = model(batch["frames"], batch["keep"])
  masked = 1.0 - jnp.zeros(pred.shape[:2]).at[jnp.arange(pred.shape[0])[:, None],
                                                 batch["keep"]].set(1.0)
  per_patch = ((pred - target) ** 2).mean(-1)
  return (per_patch * masked).sum() / masked.sum(), {}


def random_keep(rng: np.random.Generator, batch: int, cfg: MAEConfig) -> np.ndarray:
  """Per video, the indices of the patches left visible (sorted), drawn uniformly."""
  return np.sort(np.argsort(rng.random((batch, cfg.n_tokens)), 1)[:, :cfg.n_keep], 1).astype(np.int32)


class MAEBoundary(nnx.Module):
  @staticmethod
  def check(cfg: MAEConfig) -> None:
    if N_SECTIONS % cfg.tube or SIZE % cfg.patch:
      raise ValueError(f"tube {cfg.tube} must divide {N_SECTIONS} frames and patch {cfg.patch} "
                       f"must divide {SIZE} pixels")
    if cfg.hidden % cfg.heads or cfg.dec_hidden % cfg.dec_heads:
      raise ValueError("hidden sizes must be divisible by their head counts")
    N = cfg.n_tokens
    if N % N_SECTIONS or (N // N_SECTIONS) % 2:
      raise ValueError(f"{N} tokens do not split into {N_SECTIONS} groups of pairs (the MSE head)")

  def __init__(self, cfg: MAEConfig, *, rngs: nnx.Rngs):
    self.check(cfg)
    self.cfg = cfg
    N, H = cfg.n_tokens, cfg.hidden
    self.encoder = MAEEncoder(cfg, rngs=rngs)
    self.ln_scale = param(None, ones, (N,), (None,), decay=False)
    self.ln_bias = param(None, zeros, (N,), (None,), decay=False)
    self.bce_w, self.bce_b = _dense(rngs, N, N_SECTIONS, (None, None))
    self.mse_w, self.mse_b = _dense(rngs, 2 * H, 1, ("embed", None))

  def __call__(self, frames):
    """-> (BCE-head logits, MSE-head values), each [B, 40]."""
    c = self.cfg
    return self.heads(self.encoder(patchify(frames_to_float(frames), c.tube, c.patch)))

  def heads(self, h):
    """The two heads on the encoder's tokens h [B, N, hidden]."""
    B, N, H = h.shape
    t = h.mean(-1)
    mu, var = t.mean(-1, keepdims=True), t.var(-1, keepdims=True)
    t = (t - mu) / jnp.sqrt(var + 1e-6) * self.ln_scale.get_value() + self.ln_bias.get_value()
    bce = t @ self.bce_w.get_value() + self.bce_b.get_value()
    g = h.reshape(B, N_SECTIONS, N // N_SECTIONS // 2, 2 * H).mean(2)
    mse = (g @ self.mse_w.get_value() + self.mse_b.get_value())[..., 0]
    return bce, mse


def head_loss(bce, mse, y, pos_weight: float):
  """BCE (positive weight `pos_weight`) on the BCE head + squared error on the MSE head."""
  l_bce = (-(pos_weight * y * jax.nn.log_sigmoid(bce) + (1 - y) * jax.nn.log_sigmoid(-bce))).mean()
  return l_bce, ((mse - y) ** 2).mean()


def head_scores(bce, mse):
  return (jax.nn.sigmoid(bce) + mse) / 2


def mae_boundary_loss(model: MAEBoundary, batch: dict, key):
  bce, mse = model(batch["frames"])
  l_bce, l_mse = head_loss(bce, mse, batch["target"], model.cfg.pos_weight)
  return l_bce + l_mse, {"bce": l_bce, "mse": l_mse}


def mae_boundary_scores(model: MAEBoundary, batch: dict):
  return head_scores(*model(batch["frames"]))
