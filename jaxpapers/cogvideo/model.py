"""The CogVideo transformer (arXiv 2205.15868 §3) and its text-to-image base (the CogView2
analogue), one module: `dual_channel=False` is the image model, `True` the video model.

One Sandwich-LN layer (CogView §2.4, as CogView2 and CogVideo's release run) on h [B, T, E]:
    a = LN1(h)
    s = Dense_s(Attn(a; QKV_s, spatial mask))                the inherited image attention
    t = Dense_t(Attn(a; QKV_t, temporal mask))               the new channel (video only)
    h = h + LN3(alpha * s + (1 - alpha) * t)   at image positions, h + LN3(s) at text (§3.2)
    h = h + LN4(FFN(LN2(h)))
alpha = sigmoid(gate), one gate vector per layer, zero at initialisation (release:
`attn_distribution`). A video model built from an image model (`inherit`) copies every image
parameter and freezes them all (release: `transformer.requires_grad_(False)`); the temporal QKV
starts as a copy of the spatial QKV, the temporal output projection at random (N(0, 0.02)), so
the trainable parameters are the temporal channel, the gates and the position table of frames
after the first. A model trained from scratch (`freeze_inherited=False`) trains everything.

Inputs are token ids over one vocabulary: text ids [0, text_vocab), image codes
[text_vocab, text_vocab + K) and the BOI id text_vocab + K. Position embeddings: a text slot
table for text; for image tokens a cell table (cells 0..G*G-1, BOI = G*G) for the first frame
(time 0: the image model's) and a table per later frame, initialised as copies of the cell
table (release: `extra_position_embedding`, CogView2's rows tiled). The head predicts the next
image code (K logits). Text padding is masked as a key in both channels.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from jaxpapers.core.mesh import constrain
from jaxpapers.nn.attention import layer_scaled_attention, update_cache
from jaxpapers.nn.norm import layer_norm
from jaxpapers.nn.param import param, xavier_normal
from jaxpapers.nn.quantized import dense

SPATIAL = ("wqkv_s", "bqkv_s", "wo_s", "bo_s")
TEMPORAL = ("wqkv_t", "bqkv_t", "wo_t", "bo_t", "gate")
SHARED = ("ln1_scale", "ln1_bias", "ln2_scale", "ln2_bias", "ln3_scale", "ln3_bias",
          "ln4_scale", "ln4_bias", "w1", "b1", "w2", "b2")
NEW_IN_VIDEO = TEMPORAL + ("frame_pos",)   # what a video model has that its image model lacks


@dataclasses.dataclass(frozen=True)
class CogVideoConfig:
  text_vocab: int
  codebook: int = 128          # K image codes
  text_len: int = 12
  grid: int = 4                # G: a frame is G x G codes
  num_frames: int = 5          # frames per sequence (§3.1: 5)
  num_layers: int = 4
  d_model: int = 128
  num_heads: int = 4
  ffn_dim: int = 512
  window: int = 2              # temporal window (cells per side) of windowed layouts (§3.3)
  dual_channel: bool = False   # False: the text-to-image base model
  freeze_inherited: bool = True  # video model: the image model's parameters are frozen
  pad_id: int = 0              # text padding, masked as a key
  remat: bool = True

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  @property
  def vocab(self) -> int:
    return self.text_vocab + self.codebook + 1

  @property
  def boi(self) -> int:
    return self.text_vocab + self.codebook

  def video(self, freeze_inherited: bool = True) -> "CogVideoConfig":
    return dataclasses.replace(self, dual_channel=True, freeze_inherited=freeze_inherited)


def mix(spatial, temporal, gate):
  """§3.2's learned mix of the two channels: alpha * x_spatial + (1 - alpha) * x_temporal with
  alpha = sigmoid(gate) elementwise over the channel dimension (`gate` [E]; release:
  `attn_distribution`, zeros at init, so alpha = 0.5)."""
  alpha = jax.nn.sigmoid(gate).astype(spatial.dtype)
  return alpha * spatial + (1.0 - alpha) * temporal


class CogVideo(nnx.Module):
  """Layers stacked on a leading [L] axis and run under lax.scan."""

  def __init__(self, cfg: CogVideoConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    L, E, H, D, F = cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.ffn_dim
    if E % H:
      raise ValueError(f"d_model {E} is not divisible by num_heads {H}")
    if cfg.grid % cfg.window:
      raise ValueError(f"window {cfg.window} does not divide the grid {cfg.grid}")
    zeros, ones = (lambda k, s, d: jnp.zeros(s, d)), (lambda k, s, d: jnp.ones(s, d))
    normal = nnx.initializers.normal(0.02)
    inh = dict(frozen=True) if cfg.dual_channel and cfg.freeze_inherited else {}
    P = lambda *a, **kw: param(*a, **kw, **inh)          # a parameter the image model has
    self.embed = P(rngs.params(), normal, (cfg.vocab, E), ("vocab", "embed"))
    self.text_pos = P(rngs.params(), normal, (cfg.text_len, E), (None, "embed"))
    self.cell_pos = P(rngs.params(), normal, (cfg.grid * cfg.grid + 1, E), (None, "embed"))
    qkv_init = xavier_normal(1.0, fan_in_axes=(1,), fan_out_axes=(3, 4))
    qkv_axes = ("layers", "embed", None, "heads", "kv")
    o_axes = ("layers", "heads", "kv", "embed")
    self.wqkv_s = P(rngs.params(), qkv_init, (L, E, 3, H, D), qkv_axes, dense_in=1)
    self.bqkv_s = P(None, zeros, (L, 3, H, D), ("layers", None, "heads", "kv"), decay=False)
    self.wo_s = P(rngs.params(), normal, (L, H, D, E), o_axes, dense_in=2)
    self.bo_s = P(None, zeros, (L, E), ("layers", "embed"), decay=False)
    for ln in ("ln1", "ln2", "ln3", "ln4"):
      setattr(self, f"{ln}_scale", P(None, ones, (L, E), ("layers", "embed"), decay=False))
      setattr(self, f"{ln}_bias", P(None, zeros, (L, E), ("layers", "embed"), decay=False))
    self.w1 = P(rngs.params(), xavier_normal(1.0, (1,), (2,)), (L, E, F), ("layers", "embed", "mlp"),
                dense_in=1)
    self.b1 = P(None, zeros, (L, F), ("layers", "mlp"), decay=False)
    self.w2 = P(rngs.params(), normal, (L, F, E), ("layers", "mlp", "embed"), dense_in=1)
    self.b2 = P(None, zeros, (L, E), ("layers", "embed"), decay=False)
    self.final_scale = P(None, ones, (E,), ("embed",), decay=False)
    self.final_bias = P(None, zeros, (E,), ("embed",), decay=False)
    self.head = P(rngs.params(), xavier_normal(1.0), (E, cfg.codebook), ("embed", "vocab"),
                  dense_in=1)
    if cfg.dual_channel:
      self.wqkv_t = param(rngs.params(), qkv_init, (L, E, 3, H, D), qkv_axes, dense_in=1)
      self.bqkv_t = param(None, zeros, (L, 3, H, D), ("layers", None, "heads", "kv"), decay=False)
      self.wo_t = param(rngs.params(), normal, (L, H, D, E), o_axes, dense_in=2)
      self.bo_t = param(None, zeros, (L, E), ("layers", "embed"), decay=False)
      self.gate = param(None, zeros, (L, E), ("layers", "embed"), decay=False)
      tiled = jnp.tile(self.cell_pos.get_value()[None], (cfg.num_frames - 1, 1, 1))
      self.frame_pos = param(None, lambda k, s, d: tiled.astype(d), tiled.shape,
                             (None, None, "embed"), decay=False)

  def layer_names(self) -> tuple[str, ...]:
    return SPATIAL + SHARED + (TEMPORAL if self.cfg.dual_channel else ())

  def value(self, name: str):
    """A parameter's value; a frozen one behind stop_gradient (no backward into it)."""
    var = getattr(self, name)
    v = var.get_value()
    return jax.lax.stop_gradient(v) if getattr(var, "frozen", False) else v

  def stacked(self) -> dict:
    return {n: self.value(n) for n in self.layer_names()}

  def embed_tokens(self, tokens, lay):
    """[B, T, E] input embeddings of tokens [B, T] at layout arrays lay (each [B, T])."""
    cfg = self.cfg
    x = jnp.take(self.value("embed"), tokens, axis=0)
    pos = jnp.arange(tokens.shape[1])[None, :] + lay["offset"][:, None]
    text_pos = jnp.take(self.value("text_pos"), jnp.clip(pos, 0, cfg.text_len - 1), axis=0)
    cell = jnp.clip(lay["cell"], 0, None)
    img_pos = jnp.take(self.value("cell_pos"), cell, axis=0)
    if cfg.dual_channel:
      later = self.value("frame_pos")[jnp.clip(lay["time"] - 1, 0, None), cell]
      img_pos = jnp.where((lay["time"] > 0)[..., None], later, img_pos)
    return x + jnp.where((lay["block"] < 0)[..., None], text_pos, img_pos)

  def __call__(self, tokens, lay, masks, *, layer_wrapper=None, cache=None, cache_index=0,
               spatial_only: bool = False):
    """Logits [B, T, K] over the next image code (and the new cache when `cache` is given).

    tokens [B, T]; lay: layout arrays [B, T] ("block", "time", "cell"), "offset" [B] (the
    absolute position of tokens[:, 0], = cache_index) and "text_ok" [B, text_len] (False at
    padding); masks: {"spatial": [B, T, S], "temporal": [2, B, T, S]} (the temporal masks of
    even and odd layers), S the key length (T, or the cache length). With a cache
    (`init_cache`), tokens sit at cache_index..cache_index+T-1. `spatial_only`: the temporal
    channel is not mixed in (a video model then computes its image model; the release's
    `enforce_no_swin`, used for the first frame). `layer_wrapper(fn) -> g` replaces
    `jax.checkpoint` around each scanned layer, as GLM's does (fn(ctx, h) -> h, g(ctx, h,
    seed)); e.g. GACT's `compress_block`."""
    cfg = self.cfg
    lay, masks = jax.tree.map(jnp.asarray, (lay, masks))
    x = constrain(self.embed_tokens(tokens, lay), "batch", "length", "embed")
    text_ok = lay["text_ok"][:, None, :]
    ok = lambda m: m.at[..., :cfg.text_len].set(m[..., :cfg.text_len] & text_ok)
    masks = {"spatial": ok(masks["spatial"]),
             "temporal": None if spatial_only or not cfg.dual_channel else ok(masks["temporal"])}
    is_image = (lay["block"] >= 0)[..., None]
    xs = {"p": self.stacked(), "idx": jnp.arange(cfg.num_layers)}
    if cache is not None:
      xs["cache"] = cache

    def layer(ctx, h):
      return _layer(cfg, h, ctx["xs"]["p"], ctx["xs"]["idx"], ctx["masks"], ctx["is_image"],
                    ctx["xs"].get("cache"), cache_index)

    ctx0 = {"masks": masks, "is_image": is_image}
    if cache is not None:
      h, new_cache = jax.lax.scan(lambda h, xs_l: layer({"xs": xs_l, **ctx0}, h), x, xs)
    elif layer_wrapper is not None:
      wrapped = layer_wrapper(lambda ctx, h: layer(ctx, h)[0])

      def body(h, xs_l):
        seed = xs_l["idx"].astype(jnp.uint32) * jnp.uint32(2654435761)
        return wrapped({"xs": xs_l, **ctx0}, h, seed), None
      h, _ = jax.lax.scan(body, x, xs)
    else:
      body = lambda h, xs_l: (layer({"xs": xs_l, **ctx0}, h)[0], None)
      if cfg.remat:
        body = jax.checkpoint(body, prevent_cse=False)
      h, _ = jax.lax.scan(body, x, xs)
    h = layer_norm(h, self.value("final_scale"), self.value("final_bias"))
    logits = dense(h, self.value("head"), 1).astype(jnp.float32)
    logits = constrain(logits, "batch", "length", "vocab")
    return (logits, new_cache) if cache is not None else logits

  def init_cache(self, batch: int, length: int, dtype=jnp.float32) -> dict:
    cfg = self.cfg
    shape = (cfg.num_layers, batch, length, cfg.num_heads, cfg.head_dim)
    names = ("k_s", "v_s", "k_t", "v_t") if cfg.dual_channel else ("k_s", "v_s")
    return {n: jnp.zeros(shape, dtype) for n in names}


def _attend(a, wqkv, bqkv, mask, kv, cache_index, names):
  """Multi-head softmax attention context [B,T,H,D] of a [B,T,E] (mask [B,T,S]); with kv (a
  cache dict) the new keys and values are written at cache_index and attention runs over the
  cache."""
  qkv = dense(a, wqkv, 1) + bqkv                        # [B, T, 3, H, D]
  q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
  new = {}
  if kv is not None:
    k = update_cache(kv[names[0]], k, cache_index)
    v = update_cache(kv[names[1]], v, cache_index)
    new = {names[0]: k, names[1]: v}
  return layer_scaled_attention(q, k, v, mask, 0), new   # layer 0: plain 1/sqrt(d) scaling


def _layer(cfg: CogVideoConfig, h, p, idx, masks, is_image, kv, cache_index):
  a = layer_norm(h, p["ln1_scale"], p["ln1_bias"])
  ctx_s, new_kv = _attend(a, p["wqkv_s"], p["bqkv_s"], masks["spatial"], kv, cache_index,
                          ("k_s", "v_s"))
  attn = dense(ctx_s, p["wo_s"], 2) + p["bo_s"]
  if masks["temporal"] is not None:
    tmask = jnp.where(idx % 2 == 0, masks["temporal"][0], masks["temporal"][1])
    ctx_t, new_t = _attend(a, p["wqkv_t"], p["bqkv_t"], tmask, kv, cache_index, ("k_t", "v_t"))
    new_kv = {**new_kv, **new_t}
    t = dense(ctx_t, p["wo_t"], 2) + p["bo_t"]
    attn = jnp.where(is_image, mix(attn, t, p["gate"]), attn)
  elif kv is not None and "k_t" in kv:   # spatial only: the temporal cache passes through
    new_kv = {**new_kv, "k_t": kv["k_t"], "v_t": kv["v_t"]}
  h = constrain(h + layer_norm(attn, p["ln3_scale"], p["ln3_bias"]), "batch", "length", "embed")
  m = layer_norm(h, p["ln2_scale"], p["ln2_bias"])
  ffn = dense(jax.nn.gelu(dense(m, p["w1"], 1) + p["b1"]), p["w2"], 1) + p["b2"]
  ffn = layer_norm(ffn, p["ln4_scale"], p["ln4_bias"])
  return constrain(h + ffn, "batch", "length", "embed"), new_kv


def inherit(video: CogVideo, image: CogVideo) -> CogVideo:
  """Video model <- image model (§3.2; release: `reinit`): every parameter of the image model is
  copied; the temporal QKV (weights and bias) starts as a copy of the spatial QKV of its layer;
  the temporal output projection keeps its random init; the gates stay zero; the tables of later
  frames' positions start as copies of the image's cell table. Returns `video`, changed in
  place."""
  if not video.cfg.dual_channel or image.cfg.dual_channel:
    raise ValueError("inherit(video, image) needs a dual-channel video model and an image model")
  copy = lambda a: jnp.array(a, copy=True)   # own buffers: training donates the video's state
  for name, var in vars(image).items():
    if isinstance(var, nnx.Param):
      getattr(video, name).set_value(copy(var.get_value()))
  video.wqkv_t.set_value(copy(video.wqkv_s.get_value()))
  video.bqkv_t.set_value(copy(video.bqkv_s.get_value()))
  cells = video.cell_pos.get_value()
  video.frame_pos.set_value(jnp.tile(cells[None], (video.cfg.num_frames - 1, 1, 1)))
  return video


def trainable_names(model: CogVideo) -> tuple[str, ...]:
  """Names of the parameters an optimizer may change (those not marked frozen)."""
  return tuple(n for n, v in vars(model).items()
               if isinstance(v, nnx.Param) and not getattr(v, "frozen", False))
