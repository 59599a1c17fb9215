"""A BERT encoder (Devlin et al. 2019) in Flax NNX, its layers stacked and scanned, with the PET
hooks of `jaxpapers.nn.pet` built in: LoRA on Q, K, V and the attention output, every bias a
`pet.Bias` (BitFit), and per-layer prefix keys/values (P-tuning v2 deep prompts).

Post-LN layers as BERT: h = LN(h + Drop(Attn(h))); h = LN(h + Drop(W2 GELU(W1 h))), exact (erf)
GELU, LayerNorm eps 1e-12, absolute learned positions and token types. Pretrained weights of a
HuggingFace `BertModel` load with `load_hf_weights` (see `jaxpapers.nn.minilm`).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxpapers.nn import pet
from jaxpapers.nn.norm import layer_norm
from jaxpapers.nn.param import param, uniform_fan_in

NEG_INF = -1e9


@dataclasses.dataclass(frozen=True)
class BertConfig:
  vocab_size: int = 30522
  hidden: int = 384
  num_layers: int = 6
  num_heads: int = 12
  mlp_dim: int = 1536
  max_positions: int = 512
  type_vocab: int = 2
  ln_eps: float = 1e-12
  dropout: float = 0.1          # hidden and attention-probability dropout while training
  init_std: float = 0.02        # BERT's initializer_range (random initialisation only)
  lora_rank: int = 0            # > 0: LoRA adapters on Q, K, V, O
  lora_alpha: float = 16.0
  prefix_len: int = 0           # > 0: that many prefix keys/values at every layer
  prefix_dropout: float = 0.0   # dropout on the prefix keys/values while training (P-tuning v2: 0.1)
  unroll: bool = False          # unroll the layer scan (small models: ~30% faster steps on CPU)

  @property
  def head_dim(self) -> int:
    return self.hidden // self.num_heads

  @classmethod
  def from_hf(cls, hf: dict, **pet_kw) -> "BertConfig":
    """From a HuggingFace BERT config.json dict (the architecture keys BERT defines); `pet_kw`
    (PET sizes, dropout) override."""
    if hf.get("hidden_act", "gelu") != "gelu" or hf.get("position_embedding_type",
                                                           "absolute") != "absolute":
      raise ValueError("only BERT with hidden_act=gelu and absolute positions is supported, got "
                       f"{hf.get('hidden_act')!r}, {hf.get('position_embedding_type')!r}")
    arch = dict(vocab_size=hf["vocab_size"], hidden=hf["hidden_size"],
                num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
                mlp_dim=hf["intermediate_size"], max_positions=hf["max_position_embeddings"],
                type_vocab=hf["type_vocab_size"], ln_eps=hf["layer_norm_eps"],
                dropout=hf.get("hidden_dropout_prob", 0.1),
                init_std=hf.get("initializer_range", 0.02))
    return cls(**(arch | pet_kw))


LAYER_WEIGHTS = ("wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo", "ln1_scale", "ln1_bias",
                 "w_in", "b_in", "w_out", "b_out", "ln2_scale", "ln2_bias")
LORA_WEIGHTS = ("lora_a_q", "lora_b_q", "lora_a_k", "lora_b_k", "lora_a_v", "lora_b_v",
                "lora_a_o", "lora_b_o")


class Bert(nnx.Module):
  """Embeddings + `num_layers` stacked post-LN layers; `__call__` returns the last hidden states."""

  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    if cfg.hidden % cfg.num_heads:
      raise ValueError(f"hidden {cfg.hidden} is not divisible by num_heads {cfg.num_heads}")
    self.cfg = cfg
    L, E, H, D, F = cfg.num_layers, cfg.hidden, cfg.num_heads, cfg.head_dim, cfg.mlp_dim
    normal = nnx.initializers.normal(cfg.init_std)
    zeros, ones = (lambda k, s, d: jnp.zeros(s, d)), (lambda k, s, d: jnp.ones(s, d))

    bias = lambda shape, axes: param(None, zeros, shape, axes, decay=False, kind=pet.Bias)

    self.tok_embed = param(rngs.params(), normal, (cfg.vocab_size, E), ("vocab", "embed"), decay=True)
    self.pos_embed = param(rngs.params(), normal, (cfg.max_positions, E), (None, "embed"), decay=True)
    self.type_embed = param(rngs.params(), normal, (cfg.type_vocab, E), (None, "embed"), decay=True)
    self.emb_ln_scale = param(None, ones, (E,), ("embed",), decay=False)
    self.emb_ln_bias = bias((E,), ("embed",))
    for n in ("q", "k", "v"):
      setattr(self, f"w{n}", param(rngs.params(), normal, (L, E, H, D),
                                   ("layers", "embed", "heads", "kv"), dense_in=1))
      setattr(self, f"b{n}", bias((L, H, D), ("layers", "heads", "kv")))
    self.wo = param(rngs.params(), normal, (L, H, D, E), ("layers", "heads", "kv", "embed"), dense_in=2)
    self.bo = bias((L, E), ("layers", "embed"))
    self.w_in = param(rngs.params(), normal, (L, E, F), ("layers", "embed", "mlp"), dense_in=1)
    self.b_in = bias((L, F), ("layers", "mlp"))
    self.w_out = param(rngs.params(), normal, (L, F, E), ("layers", "mlp", "embed"), dense_in=1)
    self.b_out = bias((L, E), ("layers", "embed"))
    for i in (1, 2):
      setattr(self, f"ln{i}_scale", param(None, ones, (L, E), ("layers", "embed"), decay=False))
      setattr(self, f"ln{i}_bias", bias((L, E), ("layers", "embed")))
    if cfg.lora_rank > 0:
      r = cfg.lora_rank
      # A as loralib's kaiming_uniform(a=sqrt(5)), B zero; weight-decayed like the release's (its optimizer exempts only biases and LayerNorms)
      lora = lambda key, init, shape, axes: pet.LoRA(init(key, shape, jnp.float32), axes=axes,
                                                      decay=True)
      for n in ("q", "k", "v"):
        setattr(self, f"lora_a_{n}", lora(rngs.params(), uniform_fan_in(E), (L, E, r),
                                          ("layers", "embed", None)))
        setattr(self, f"lora_b_{n}", lora(None, zeros, (L, r, H, D), ("layers", None, "heads", "kv")))
      self.lora_a_o = lora(rngs.params(), uniform_fan_in(H * D), (L, H, D, r),
                           ("layers", "heads", "kv", None))
      self.lora_b_o = lora(None, zeros, (L, r, E), ("layers", None, "embed"))
    if cfg.prefix_len > 0:
      # learned directly (no reparameterisation MLP), initialised 0.01 * N(0, 1) as the EH-FT
      # release's prompt_tuning.py
      shape, axes = (L, cfg.prefix_len, H, D), ("layers", None, "heads", "kv")
      init = lambda: 0.01 * jax.random.normal(rngs.params(), shape)
      self.prefix_k = pet.Prefix(init(), axes=axes, decay=True)
      self.prefix_v = pet.Prefix(init(), axes=axes, decay=True)

  def layer_weights(self) -> dict:
    names = LAYER_WEIGHTS + (LORA_WEIGHTS if self.cfg.lora_rank > 0 else ()) + (
        ("prefix_k", "prefix_v") if self.cfg.prefix_len > 0 else ())
    return {n: getattr(self, n).get_value() for n in names}

  def __call__(self, ids, mask, type_ids=None, *, extra=None, causal: bool = False,
               positions=None, dropout_key=None):
    """ids, mask (1 = real token), type_ids: [B, T] -> last hidden states [B, T, E]. `extra`
    [B, T, E] is added to the token embeddings (models whose tokens carry more than an id);
    `causal`: a query attends only to itself and earlier positions (and the prefix);
    `positions` [B, T]: each token's position id (default 0..T-1; e.g. the kept patches of a
    masked autoencoder keep their place in the full sequence)."""
    cfg = self.cfg
    B, T = ids.shape
    if T > cfg.max_positions:
      raise ValueError(f"sequence length {T} exceeds max_positions {cfg.max_positions}")
    type_ids = jnp.zeros_like(ids) if type_ids is None else type_ids
    pos = (self.pos_embed.get_value()[:T][None] if positions is None
           else jnp.take(self.pos_embed.get_value(), positions, axis=0))
    h = (jnp.take(self.tok_embed.get_value(), ids, axis=0) + pos
         + jnp.take(self.type_embed.get_value(), type_ids, axis=0))
    if extra is not None:
      h = h + extra
    h = layer_norm(h, self.emb_ln_scale.get_value(), self.emb_ln_bias.get_value(), cfg.ln_eps)
    h = _dropout(h, cfg.dropout, dropout_key, 0)
    attn_mask = attention_mask(mask, cfg.prefix_len)
    if causal:
      past = jnp.tril(jnp.ones((T, T), bool))
      attn_mask = attn_mask & jnp.concatenate([jnp.ones((T, cfg.prefix_len), bool), past], 1)

    def body(h, xs):
      w, layer = xs
      key = None if dropout_key is None else jax.random.fold_in(dropout_key, layer + 1)
      return _layer(cfg, h, w, attn_mask, key), None

    return jax.lax.scan(body, h, (self.layer_weights(), jnp.arange(cfg.num_layers)),
                        unroll=cfg.num_layers if cfg.unroll else 1)[0]


def attention_mask(mask, prefix_len: int = 0):
  """[B, T, prefix_len + T] bool: every query may attend to every prefix position (P-tuning v2
  extends the attention mask by the prefix) and to the real (mask = 1) tokens, never to padding."""
  keys = mask.astype(bool)
  B, T = keys.shape
  if prefix_len > 0:
    keys = jnp.concatenate([jnp.ones((B, prefix_len), bool), keys], axis=1)
  return jnp.broadcast_to(keys[:, None, :], (B, T, keys.shape[1]))


def _dropout(x, rate: float, key, salt: int):
  if key is None or rate <= 0.0:
    return x
  keep = jax.random.bernoulli(jax.random.fold_in(key, salt), 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0)


def _proj(cfg: BertConfig, x, w, name: str):
  """x W_name + b_name (+ the LoRA update when the model has adapters)."""
  y = jnp.einsum("bte,ehd->bthd", x, w[f"w{name}"]) + w[f"b{name}"]
  if cfg.lora_rank > 0:
    y = y + pet.lora_delta(x, w[f"lora_a_{name}"], w[f"lora_b_{name}"],
                           cfg.lora_alpha / cfg.lora_rank)
  return y


def _layer(cfg: BertConfig, h, w, attn_mask, key):
  q, k, v = (_proj(cfg, h, w, n) for n in ("q", "k", "v"))
  if cfg.prefix_len > 0:
    B = h.shape[0]
    pk, pv = (jnp.broadcast_to(w[n], (B,) + w[n].shape) for n in ("prefix_k", "prefix_v"))
    pk, pv = _dropout(pk, cfg.prefix_dropout, key, 4), _dropout(pv, cfg.prefix_dropout, key, 5)
    k, v = jnp.concatenate([pk, k], axis=1), jnp.concatenate([pv, v], axis=1)
  scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / np.sqrt(cfg.head_dim)
  scores = jnp.where(attn_mask[:, None], scores, NEG_INF)
  probs = _dropout(jax.nn.softmax(scores, axis=-1), cfg.dropout, key, 1)
  ctx = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v)
  out = jnp.einsum("bqhd,hde->bqe", ctx, w["wo"]) + w["bo"]
  if cfg.lora_rank > 0:
    flat = ctx.reshape(ctx.shape[:2] + (-1,))
    out = out + pet.lora_delta(flat, w["lora_a_o"].reshape(-1, cfg.lora_rank), w["lora_b_o"],
                               cfg.lora_alpha / cfg.lora_rank)
  h = layer_norm(h + _dropout(out, cfg.dropout, key, 2), w["ln1_scale"], w["ln1_bias"], cfg.ln_eps)
  f = jax.nn.gelu(jnp.einsum("bte,ef->btf", h, w["w_in"]) + w["b_in"], approximate=False)
  f = jnp.einsum("btf,fe->bte", f, w["w_out"]) + w["b_out"]
  return layer_norm(h + _dropout(f, cfg.dropout, key, 3), w["ln2_scale"], w["ln2_bias"], cfg.ln_eps)


def mean_pool(hidden, mask, normalize: bool = True):
  """sentence-transformers' mean pooling over real tokens, then (its Normalize module) L2
  normalisation with eps 1e-12."""
  m = mask.astype(hidden.dtype)[..., None]
  pooled = (hidden * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)
  if not normalize:
    return pooled
  return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def load_hf_weights(model: Bert, tensors: dict[str, np.ndarray]) -> Bert:
  """Copies a HuggingFace `BertModel` state dict (numpy, torch layout [out, in]) into `model`;
  a missing tensor or a shape mismatch raises ValueError naming it. The pooler is not used."""
  cfg = model.cfg
  L, E, H, D = cfg.num_layers, cfg.hidden, cfg.num_heads, cfg.head_dim
  prefix = "bert." if any(k.startswith("bert.") for k in tensors) else ""

  def get(name, shape):
    key = prefix + name
    if key not in tensors:
      raise ValueError(f"the weights lack {key!r}")
    t = np.asarray(tensors[key], np.float32)
    if t.shape != shape:
      raise ValueError(f"{key!r} has shape {t.shape}, this model needs {shape}")
    return t

  def stack(fmt, shape, fn=lambda t: t):
    return np.stack([fn(get(fmt.format(i), shape)) for i in range(L)])

  lay = "encoder.layer.{}."
  F = cfg.mlp_dim
  values = {
      "tok_embed": get("embeddings.word_embeddings.weight", (cfg.vocab_size, E)),
      "pos_embed": get("embeddings.position_embeddings.weight", (cfg.max_positions, E)),
      "type_embed": get("embeddings.token_type_embeddings.weight", (cfg.type_vocab, E)),
      "emb_ln_scale": get("embeddings.LayerNorm.weight", (E,)),
      "emb_ln_bias": get("embeddings.LayerNorm.bias", (E,)),
      "wo": stack(lay + "attention.output.dense.weight", (E, E), lambda t: t.T.reshape(H, D, E)),
      "bo": stack(lay + "attention.output.dense.bias", (E,)),
      "ln1_scale": stack(lay + "attention.output.LayerNorm.weight", (E,)),
      "ln1_bias": stack(lay + "attention.output.LayerNorm.bias", (E,)),
      "w_in": stack(lay + "intermediate.dense.weight", (F, E), lambda t: t.T),
      "b_in": stack(lay + "intermediate.dense.bias", (F,)),
      "w_out": stack(lay + "output.dense.weight", (E, F), lambda t: t.T),
      "b_out": stack(lay + "output.dense.bias", (E,)),
      "ln2_scale": stack(lay + "output.LayerNorm.weight", (E,)),
      "ln2_bias": stack(lay + "output.LayerNorm.bias", (E,)),
  }
  for n, hf in (("q", "query"), ("k", "key"), ("v", "value")):
    values[f"w{n}"] = stack(lay + f"attention.self.{hf}.weight", (E, E), lambda t: t.T.reshape(E, H, D))
    values[f"b{n}"] = stack(lay + f"attention.self.{hf}.bias", (E,), lambda t: t.reshape(H, D))
  for name, v in values.items():
    getattr(model, name).set_value(jnp.asarray(v))
  return model
