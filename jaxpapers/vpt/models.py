"""VPT's networks (arXiv 2206.11795, App. D) at laptop scale: the non-causal inverse dynamics
model (IDM) and the causal behavioural-cloning policy. Both embed each frame with an
ImpalaCNN-style ResNet and mix time with transformer blocks: the IDM's see its whole window, the
policy's see the last `memory` frames through a cache of their keys and values (VPT's
Transformer-XL-style memory).

Scale deviation (named in experiments/vpt/README.md): Craftax draws its 63x63 frames as a 9x9
grid of 7x7-pixel tiles, so the networks start from that grid (a 7x7 stride-7 "tile stem") instead
of running ImpalaCNN's first stage at full resolution as VPT does on 128x128 frames; on two CPU
cores the full-resolution stage is ~5x slower and sees nothing a tile stem does not.

Second deviation (IDM only, `NetConfig.motion`): the IDM's input tiles also carry `tile_motion`,
a fixed correlation of each tile with its neighbours in the next frame (no parameters); with it
the IDM finds one-tile scrolls (moves) in far fewer steps."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from jaxpapers.core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class NetConfig:
  frame_shape: tuple[int, int, int] = (63, 63, 3)
  num_actions: int = 17
  window: int = 16              # frames the model sees (IDM: the whole window; policy: the past)
  tile: int = 7                 # the stem's patch and stride (Craftax tiles are 7x7 pixels)
  stem_channels: int = 32
  temporal_kernel: int = 5      # IDM: VPT's temporal kernel size
  tile_features: int = 16       # IDM: linear features per tile before the temporal conv
  channels: tuple[int, ...] = (32, 64)       # ImpalaCNN stage widths after the stem
  blocks_per_stage: int = 1     # residual blocks per stage (VPT: 2)
  d_model: int = 128
  heads: int = 4
  layers: int = 2
  mlp_ratio: int = 4
  pooled: bool = False          # also feed the spatial mean of the last stage to the dense layer
  motion: bool = False          # IDM: add tile_motion's 9 match distances per tile to its input
  memory: int = 8               # policy: frames each frame attends to, itself included (VPT: 128)

  @property
  def burn_in(self) -> int:
    """Policy: how many earlier frames position t's output depends on (each of `layers` clipped
    attentions reaches `memory - 1` frames back)."""
    return self.layers * (self.memory - 1)

  def __post_init__(self):
    h, w, _ = self.frame_shape
    if h % self.tile or w % self.tile:
      raise ConfigError(f"frame_shape {self.frame_shape} is not a whole number of {self.tile}-pixel tiles")
    if self.d_model % self.heads:
      raise ConfigError(f"d_model={self.d_model} is not divisible by heads={self.heads}")
    if self.temporal_kernel % 2 != 1:
      raise ConfigError(f"temporal_kernel must be odd, got {self.temporal_kernel}")
    if self.memory < 1:
      raise ConfigError(f"memory must be >= 1 frame, got {self.memory}")


def check_frames(frames, c: NetConfig, name: str = "frames") -> None:
  """One clear error for frames that are not [batch, time, *frame_shape] (shape-level, so it
  works on traced values too)."""
  if frames.ndim != 5 or tuple(frames.shape[2:]) != tuple(c.frame_shape):
    raise ConfigError(f"{name} must be [batch, time, {', '.join(map(str, c.frame_shape))}], got "
                      f"{tuple(frames.shape)}")


def to_tiles(frames, tile: int):
  """[..., H, W, C] uint8/float -> [..., H/tile, W/tile, tile*tile*C] floats in [0, 1]."""
  x = frames.astype(jnp.float32) / 255.0 if frames.dtype == jnp.uint8 else frames.astype(jnp.float32)
  *lead, h, w, c = x.shape
  x = x.reshape(*lead, h // tile, tile, w // tile, tile, c)
  x = jnp.moveaxis(x, -4, -3)                     # [..., H/t, W/t, t, t, C]
  return x.reshape(*lead, h // tile, w // tile, tile * tile * c)


MOTION_SCALE = 10.0   # RMS pixel differences are ~0.01-0.3; scaled to the range of the pixels


def tile_motion(tiles):
  """Where each tile of frame t+1 came from: the RMS difference between tile (i, j) of frame t+1
  and tile (i + dy, j + dx) of frame t for the 9 offsets dy, dx in {-1, 0, 1} (edge tiles padded
  by replication), placed at position t; the window's last frame (no next frame) gets zeros.
  A fixed correlation layer as in optical-flow networks (FlowNet's cost volume, Dosovitskiy et al.
  2015) on the tile grid: a one-tile scroll of the view (a move) is a small distance at one offset
  for every tile, a turn or a crafted item a large one at offset 0 on one tile. Non-causal by
  construction, so the IDM alone uses it.

  tiles [B, T, h, w, D] floats -> [B, T, h, w, 9]."""
  h, w = tiles.shape[2:4]
  cur, nxt = tiles[:, :-1], tiles[:, 1:]
  pad = jnp.pad(cur, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  dist = [jnp.sqrt(jnp.mean((nxt - pad[:, :, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]) ** 2, -1) + 1e-8)
          for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
  return jnp.pad(MOTION_SCALE * jnp.stack(dist, -1), ((0, 0), (0, 1), (0, 0), (0, 0), (0, 0)))


class TemporalConv(nnx.Module):
  """VPT's IDM front end (App. D.1): a 3-D convolution over (time, height, width) with kernel 5
  in time, run on the 9x9 grid of 7x7-pixel tiles, as the sum of two paths:
  - kernel (k, 1, 1) on each tile's raw pixels (VPT's kernel; sees sprite and digit changes);
  - kernel (k, 3, 3) on a linear projection of the tiles to `tile_features`, so a unit can compare
    a tile with its neighbour in the next frame (how a move, a one-tile scroll of the view, shows).
  Both are computed as matmuls/2-D convolutions over k time-shifted copies stacked on channels
  (the same function as the 3-D convolutions; XLA:CPU runs them ~2x faster). 'Same' zero padding."""

  def __init__(self, cin: int, tile_features: int, cout: int, k: int, *, rngs: nnx.Rngs):
    self.k = k
    self.pixels = nnx.Linear(k * cin, cout, rngs=rngs)
    self.proj = nnx.Linear(cin, tile_features, use_bias=False, rngs=rngs)
    self.conv = nnx.Conv(k * tile_features, cout, (3, 3), padding="SAME", use_bias=False, rngs=rngs)

  def _stack(self, x):                            # [B, T, h, w, C] -> [B, T, h, w, k*C]
    t, r = x.shape[1], self.k // 2
    xp = jnp.pad(x, ((0, 0), (r, r), (0, 0), (0, 0), (0, 0)))
    return jnp.concatenate([xp[:, i:i + t] for i in range(self.k)], axis=-1)

  def __call__(self, x):                          # [B, T, h, w, C] -> [B, T, h, w, cout]
    b, t = x.shape[:2]
    near = self._stack(self.proj(x))
    out = self.conv(near.reshape((b * t,) + near.shape[2:]))
    return self.pixels(self._stack(x)) + out.reshape((b, t) + out.shape[1:])


class ResidualBlock(nnx.Module):
  """ImpalaCNN residual block: x + conv(relu(conv(relu(x))))."""

  def __init__(self, c: int, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(c, c, (3, 3), padding="SAME", rngs=rngs)
    self.conv2 = nnx.Conv(c, c, (3, 3), padding="SAME", rngs=rngs)

  def __call__(self, x):
    return x + self.conv2(jax.nn.relu(self.conv1(jax.nn.relu(x))))


class ImpalaStage(nnx.Module):
  """conv 3x3 -> max-pool 3x3 stride 2 -> residual blocks (Espeholt et al. 2018, as VPT)."""

  def __init__(self, cin: int, cout: int, blocks: int, *, rngs: nnx.Rngs):
    self.conv = nnx.Conv(cin, cout, (3, 3), padding="SAME", rngs=rngs)
    self.blocks = nnx.List([ResidualBlock(cout, rngs=rngs) for _ in range(blocks)])

  def __call__(self, x):
    x = nnx.max_pool(self.conv(x), (3, 3), strides=(2, 2), padding="SAME")
    for b in self.blocks:
      x = b(x)
    return x


class ImpalaCNN(nnx.Module):
  """Stages on the stem's tile grid, relu, flatten, dense to d_model, relu: [N,h,w,C] -> [N,d]."""

  def __init__(self, c: NetConfig, *, rngs: nnx.Rngs):
    h, w = c.frame_shape[0] // c.tile, c.frame_shape[1] // c.tile
    stages, cin = [], c.stem_channels
    for cout in c.channels:
      stages.append(ImpalaStage(cin, cout, c.blocks_per_stage, rngs=rngs))
      cin, h, w = cout, -(-h // 2), -(-w // 2)
    self.stages = nnx.List(stages)
    self.pooled = c.pooled
    self.dense = nnx.Linear(cin * h * w + (cin if c.pooled else 0), c.d_model, rngs=rngs)

  def __call__(self, x):
    for s in self.stages:
      x = s(x)
    x = jax.nn.relu(x)
    feats = x.reshape(x.shape[0], -1)
    if self.pooled:
      feats = jnp.concatenate([feats, x.mean(axis=(1, 2))], axis=-1)
    return jax.nn.relu(self.dense(feats))


class Block(nnx.Module):
  """Pre-LN transformer block over the IDM's window, unmasked (the IDM sees past and future)."""

  def __init__(self, c: NetConfig, *, rngs: nnx.Rngs):
    d = c.d_model
    self.heads = c.heads
    self.ln1 = nnx.LayerNorm(d, rngs=rngs)
    self.qkv = nnx.Linear(d, 3 * d, rngs=rngs)
    self.out = nnx.Linear(d, d, rngs=rngs)
    self.ln2 = nnx.LayerNorm(d, rngs=rngs)
    self.fc1 = nnx.Linear(d, c.mlp_ratio * d, rngs=rngs)
    self.fc2 = nnx.Linear(c.mlp_ratio * d, d, rngs=rngs)

  def __call__(self, x):
    b, t, d = x.shape
    q, k, v = jnp.split(self.qkv(self.ln1(x)).reshape(b, t, 3, self.heads, d // self.heads), 3, axis=2)
    a = jax.nn.dot_product_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0])
    x = x + self.out(a.reshape(b, t, d))
    return x + self.fc2(jax.nn.gelu(self.fc1(self.ln2(x))))


class InverseDynamicsModel(nnx.Module):
  """Non-causal IDM (VPT §2.1, App. D.1): temporal 3-D convolution (kernel 5 in time) on the
  frames, ImpalaCNN per frame, learned positions, unmasked attention across the window, action
  logits per frame. Position t predicts a_t, the action taken between frames t and t+1 (the last
  position of a window has no next frame and is never a target).

  frames [B, T <= window, 63, 63, 3] (uint8, or floats in [0, 1]) -> logits [B, T, A]."""

  def __init__(self, c: NetConfig, *, rngs: nnx.Rngs):
    self.c = c
    self.cnn = ImpalaCNN(c, rngs=rngs)
    self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (c.window, c.d_model)))
    self.blocks = nnx.List([Block(c, rngs=rngs) for _ in range(c.layers)])
    self.ln = nnx.LayerNorm(c.d_model, rngs=rngs)
    self.head = nnx.Linear(c.d_model, c.num_actions, rngs=rngs)
    cin = c.tile * c.tile * c.frame_shape[2] + (9 if c.motion else 0)
    self.temporal = TemporalConv(cin, c.tile_features, c.stem_channels, c.temporal_kernel, rngs=rngs)

  def __call__(self, frames):
    check_frames(frames, self.c)
    if frames.shape[1] > self.c.window:
      raise ConfigError(f"the IDM sees at most {self.c.window} frames, got {frames.shape[1]}")
    tiles = to_tiles(frames, self.c.tile)
    if self.c.motion:
      tiles = jnp.concatenate([tiles, tile_motion(tiles)], axis=-1)
    x = jax.nn.relu(self.temporal(tiles))
    b, t = x.shape[:2]
    h = self.cnn(x.reshape((b * t,) + x.shape[2:])).reshape(b, t, -1) + self.pos[...][:t]
    for blk in self.blocks:
      h = blk(h)
    return self.head(self.ln(h))


RELATIVE_BASIS = 10   # VPT's relative-attention bias mixes 10 learned offset profiles per head


class MemoryAttention(nnx.Module):
  """The policy's attention as VPT's (App. D.2; `MaskedAttention` with `relattn` in the release's
  lib/masked_attention.py and lib/xf.py): clipped causal attention, frame t attends to frames
  t - memory + 1 .. t and never to an earlier episode, with a relative-position bias instead of
  absolute positions: logits[t, s] += r(x_t) . B[:, t - s], r a linear map of the querying frame
  to RELATIVE_BASIS coefficients per head and B a learned [RELATIVE_BASIS, memory] table. So the
  same weights run over a training sequence (`__call__`) and over an endless stream with a cache
  of the last memory - 1 frames' keys and values (`step`, Transformer-XL's memory)."""

  def __init__(self, c: NetConfig, *, rngs: nnx.Rngs):
    d = c.d_model
    self.heads, self.memory = c.heads, c.memory
    self.qkv = nnx.Linear(d, 3 * d, rngs=rngs)
    self.out = nnx.Linear(d, d, rngs=rngs)
    self.rel = nnx.Linear(d, RELATIVE_BASIS * c.heads, rngs=rngs)
    self.basis = nnx.Param(0.02 * jax.random.normal(rngs.params(), (RELATIVE_BASIS, c.memory)))

  def _qkv(self, x):                              # [..., d] -> 3 x [..., H, dh]
    q, k, v = jnp.split(self.qkv(x), 3, axis=-1)
    return (y.reshape(*y.shape[:-1], self.heads, -1) for y in (q, k, v))

  def _logits(self, x, q, k, offsets):
    """x, q [B, T, ...], k [B, S, ...], offsets [T, S] (t - s) -> masked logits [B, H, T, S]."""
    r = self.rel(x).reshape(*x.shape[:-1], self.heads, RELATIVE_BASIS)
    allowed = (offsets >= 0) & (offsets < self.memory)
    table = self.basis[...][:, jnp.clip(offsets, 0, self.memory - 1)]        # [n, T, S]
    logits = (jnp.einsum("bthd,bshd->bhts", q, k) / jnp.sqrt(q.shape[-1])
              + jnp.einsum("bthn,nts->bhts", r, table))
    return jnp.where(allowed, logits, -1e30)

  def _mix(self, logits, v):                      # [B, H, T, S], [B, S, H, dh] -> [B, T, d]
    a = jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(logits, axis=-1), v)
    return self.out(a.reshape(*a.shape[:2], -1))

  def __call__(self, x):                          # [B, T, d] -> [B, T, d]
    q, k, v = self._qkv(x)
    t = jnp.arange(x.shape[1])
    return self._mix(self._logits(x, q, k, t[:, None] - t[None, :]), v)

  def step(self, x, keys, values, count):
    """One frame of a stream: x [N, d], the cached keys/values [N, memory - 1, H, dh] of the
    frames before it (oldest first; `count` of them real, the rest of the cache empty) ->
    (out [N, d], the cache with this frame appended and the oldest dropped)."""
    q, k, v = self._qkv(x[:, None])
    keys, values = jnp.concatenate([keys, k], 1), jnp.concatenate([values, v], 1)
    offsets = (self.memory - 1 - jnp.arange(self.memory))[None, :]            # slot -> t - s
    logits = self._logits(x[:, None], q, keys, offsets)
    logits = jnp.where(offsets <= count, logits, -1e30)                        # empty slots
    return self._mix(logits, values)[:, 0], keys[:, 1:], values[:, 1:]


class MemoryBlock(nnx.Module):
  """Pre-LN transformer block of the policy: MemoryAttention, then a GELU MLP."""

  def __init__(self, c: NetConfig, *, rngs: nnx.Rngs):
    d = c.d_model
    self.ln1 = nnx.LayerNorm(d, rngs=rngs)
    self.attn = MemoryAttention(c, rngs=rngs)
    self.ln2 = nnx.LayerNorm(d, rngs=rngs)
    self.fc1 = nnx.Linear(d, c.mlp_ratio * d, rngs=rngs)
    self.fc2 = nnx.Linear(c.mlp_ratio * d, d, rngs=rngs)

  def _mlp(self, x):
    return x + self.fc2(jax.nn.gelu(self.fc1(self.ln2(x))))

  def __call__(self, x):
    return self._mlp(x + self.attn(self.ln1(x)))

  def step(self, x, keys, values, count):
    a, keys, values = self.attn.step(self.ln1(x), keys, values, count)
    return self._mlp(x + a), keys, values


class Policy(nnx.Module):
  """Causal BC policy (VPT §2.2, App. D.2): ImpalaCNN per frame, then transformer blocks with
  Transformer-XL-style memory (MemoryAttention: each frame sees the last `memory` frames, itself
  included). `__call__` runs a training sequence of any length; `step` runs one frame of an
  episode with the cache `initial_cache` starts, and gives the logits `__call__` gives at that
  frame once the episode is `burn_in` frames long or from its first frame (tested).

  frames [B, T, 63, 63, 3] -> logits [B, T, A]."""

  def __init__(self, c: NetConfig, *, rngs: nnx.Rngs):
    self.c = c
    self.stem = nnx.Linear(c.tile * c.tile * c.frame_shape[2], c.stem_channels, rngs=rngs)
    self.cnn = ImpalaCNN(c, rngs=rngs)
    self.blocks = nnx.List([MemoryBlock(c, rngs=rngs) for _ in range(c.layers)])
    self.ln = nnx.LayerNorm(c.d_model, rngs=rngs)
    self.head = nnx.Linear(c.d_model, c.num_actions, rngs=rngs)

  def embed(self, frames):                        # [B, T, 63, 63, 3] -> [B, T, d]
    check_frames(frames, self.c)
    x = jax.nn.relu(self.stem(to_tiles(frames, self.c.tile)))
    b, t = x.shape[:2]
    return self.cnn(x.reshape((b * t,) + x.shape[2:])).reshape(b, t, -1)

  def features(self, frames):                     # [B, T, 63, 63, 3] -> [B, T, d], normalised
    h = self.embed(frames)
    for blk in self.blocks:
      h = blk(h)
    return self.ln(h)

  def __call__(self, frames):
    return self.head(self.features(frames))

  def initial_cache(self, num_envs: int) -> dict:
    """Empty memory of `num_envs` streams: keys/values [layers, N, memory - 1, H, dh] and the
    number of frames seen (all streams start together, as the evaluation's episodes do)."""
    c = self.c
    shape = (c.layers, num_envs, c.memory - 1, c.heads, c.d_model // c.heads)
    return {"keys": jnp.zeros(shape), "values": jnp.zeros(shape), "count": jnp.int32(0)}

  def step(self, frame, cache: dict):
    """frame [N, 63, 63, 3] -> (logits [N, A], the cache after this frame)."""
    h = self.embed(frame[:, None])[:, 0]
    keys, values = [], []
    for i, blk in enumerate(self.blocks):
      h, k, v = blk.step(h, cache["keys"][i], cache["values"][i], cache["count"])
      keys.append(k)
      values.append(v)
    count = jnp.minimum(cache["count"] + 1, self.c.memory - 1)
    return self.head(self.ln(h)), {"keys": jnp.stack(keys), "values": jnp.stack(values), "count": count}
