"""The GLM-130B transformer (arXiv 2210.02414 §2.2–2.3, §3), layers stored stacked.

One layer, in the released DeepNorm form (§2.3):
    a = LN1(h);  h' = alpha * a + Attn(a);  m = LN2(h');  out = alpha * m + FFN(m)
with alpha = (2N)^(1/2), a final LN after the last layer, and Xavier-normal init whose gain is
(2N)^(-1/2) on the FFN, value and output projections. Attention uses RoPE over the full head
dimension and the layer-scaled FP32 softmax; the FFN is GeGLU; input and output embeddings are
tied and the embedding gradient is shrunk by alpha_emb = 0.1 (§3). The QKV, attention-output and
both FFN kernels are marked `dense_in`, so `nn.quantized.quantize` can turn them into INT8/INT4
(§5); the embedding and norms stay in floating point.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxpapers.core.mesh import constrain
from jaxpapers.nn.attention import layer_scaled_attention, update_cache
from jaxpapers.nn.embedding import lookup, shrink_gradient
from jaxpapers.nn.micro_batch import micro_batched, micro_batched_sum
from jaxpapers.nn.mlp import geglu
from jaxpapers.nn.norm import layer_norm
from jaxpapers.nn.param import param, xavier_normal
from jaxpapers.nn.quantized import DecodeKernel, dense
from jaxpapers.nn.rope import apply_rope_tables, rope_tables
from pallas_kernels.int_quant import QuantizedWeight


@dataclasses.dataclass(frozen=True)
class GLMConfig:
  vocab_size: int
  num_layers: int = 4
  d_model: int = 256
  num_heads: int = 4
  ffn_dim: int = 0            # 0: 8/3 * d_model rounded to a multiple of 64 (GLM-130B §2.3)
  dropout: float = 0.1
  emb_grad_shrink: float = 0.1
  positions: str = "1d"       # "1d" (GLM-130B) or "2d" (original GLM)
  rope_base: float = 10000.0
  remat: bool = True          # True: each layer rematerialised (jax.checkpoint) under lax.scan
                              # (each layer's input kept, its inner activations recomputed).
                              # False: the layers unrolled, every activation kept: under a scan
                              # they went into stacked [L, ...] buffers, zero-filled and written
                              # layer by layer (the gradient 3.17 -> 2.69 s on 2 CPU cores at
                              # d_model 512, experiments/glm/README.md "Behind PyTorch"); with
                              # remat the two ran equally fast, so the scan stays there
  layer_chunk: int = 0        # > 0 (no KV cache): each layer runs over the batch in micro-batches of
                              # this many sequences under lax.map, each micro-batch rematerialised
                              # (memory: one micro-batch's working set; see micro_batched)
  embed_init_std: float = 0.02

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  @property
  def ffn(self) -> int:
    return self.ffn_dim or int(-(-(8 * self.d_model // 3) // 64) * 64)

  @property
  def deepnorm_alpha(self) -> float:
    return (2.0 * self.num_layers) ** 0.5

  @property
  def deepnorm_beta(self) -> float:
    return (2.0 * self.num_layers) ** -0.5


def attention_mask_from_context(context_len, q_index, k_len: int):
  """mask[b,i,j] = j < context_len[b] or j <= q_index[i]: the context is bidirectional and the
  generated part causal (GLM-130B §2.1). q_index: [Tq] absolute positions of the queries."""
  j = jnp.arange(k_len)
  return (j[None, None, :] < context_len[:, None, None]) | (j[None, None, :] <= q_index[None, :, None])


def rope_for(cfg: GLMConfig, positions):
  """RoPE (cos, sin) tables of 1-D [B,T] or 2-D [B,2,T] positions."""
  if cfg.positions == "2d":
    return rope_tables(positions[:, 0], cfg.head_dim, cfg.rope_base, block_positions=positions[:, 1])
  return rope_tables(positions, cfg.head_dim, cfg.rope_base)


def _layer(cfg: GLMConfig, h, p, layer_index, rope, mask, dropout_key, cache_kv, cache_index):
  """One DeepNorm GLM layer on [B,T,E]; returns (out, new (k, v) or None)."""
  alpha = cfg.deepnorm_alpha
  train = dropout_key is not None and cfg.dropout > 0.0
  keys = jax.random.split(dropout_key, 3) if train else (None, None, None)

  def dropout(x, key):
    if not train:
      return x
    keep = jax.random.bernoulli(key, 1.0 - cfg.dropout, x.shape)
    return jnp.where(keep, x / (1.0 - cfg.dropout), 0.0)

  a = layer_norm(h, p["ln1_scale"], p["ln1_bias"])
  q = dense(a, p["wq"], 1) + p["bq"]
  k = dense(a, p["wk"], 1) + p["bk"]
  v = dense(a, p["wv"], 1) + p["bv"]
  two_d = cfg.positions == "2d"
  q = apply_rope_tables(q, *rope, two_d=two_d)
  k = apply_rope_tables(k, *rope, two_d=two_d)
  new_kv = None
  if cache_kv is not None:
    k = update_cache(cache_kv[0], k, cache_index)
    v = update_cache(cache_kv[1], v, cache_index)
    new_kv = (k, v)
  ctx = layer_scaled_attention(q, k, v, mask, layer_index, dropout_rate=cfg.dropout if train else 0.0,
                               dropout_key=keys[0])
  attn = dense(ctx, p["wo"], 2) + p["bo"]
  h2 = alpha * a + dropout(attn, keys[1])
  h2 = constrain(h2, "batch", "length", "embed")
  m = layer_norm(h2, p["ln2_scale"], p["ln2_bias"])
  ffn = geglu(m, p["w_in"], p["b_in"], p["w_out"], p["b_out"])
  out = alpha * m + dropout(ffn, keys[2])
  return constrain(out, "batch", "length", "embed"), new_kv


def _part_layer(cfg: GLMConfig, params, h, rows, part):
  """One layer without a KV cache on the rows h (a micro-batch `part`, or the whole batch when
  part is None: `nn.micro_batch` calls it so); params = (layer params, layer index, dropout key
  or None), the key folded with the part index; rows = (positions, context_len) of these rows,
  from which the RoPE tables and the mask are made here, so that no [B, ...] table lives
  across the stack."""
  p, layer_index, key = params
  positions, context_len = rows
  if key is not None and part is not None:
    key = jax.random.fold_in(key, part)
  T = h.shape[1]
  mask = attention_mask_from_context(context_len, jnp.arange(T), T)
  return _layer(cfg, h, p, layer_index, rope_for(cfg, positions), mask, key, None, 0)[0]


def _uncached_layer(cfg: GLMConfig, h, p, layer_index, positions, context_len, dropout_key):
  """One layer without a KV cache (training, full-sequence scoring), micro-batched in place when
  cfg.layer_chunk > 0 (`nn.micro_batch.micro_batched`)."""
  return micro_batched(functools.partial(_part_layer, cfg), cfg.layer_chunk,
                       (p, layer_index, dropout_key), h, (positions, context_len))


class GLM(nnx.Module):
  """GLM with `num_layers` identical layers stored stacked ([L, ...]), run under lax.scan when
  rematerialised and unrolled otherwise (`GLMConfig.remat`)."""

  def __init__(self, cfg: GLMConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    L, E, H, D, F, V = cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.ffn, cfg.vocab_size
    if E % H:
      raise ValueError(f"d_model {E} is not divisible by num_heads {H}")
    beta = cfg.deepnorm_beta
    zeros, ones = (lambda k, s, d: jnp.zeros(s, d)), (lambda k, s, d: jnp.ones(s, d))
    qk_init = xavier_normal(1.0, fan_in_axes=(1,), fan_out_axes=(2, 3))
    v_init = xavier_normal(beta, fan_in_axes=(1,), fan_out_axes=(2, 3))
    o_init = xavier_normal(beta, fan_in_axes=(1, 2), fan_out_axes=(3,))
    in_init = xavier_normal(beta, fan_in_axes=(1,), fan_out_axes=(2, 3))
    out_init = xavier_normal(beta, fan_in_axes=(1,), fan_out_axes=(2,))
    self.embed = param(rngs.params(), nnx.initializers.normal(cfg.embed_init_std), (V, E), ("vocab", "embed"))
    self.wq = param(rngs.params(), qk_init, (L, E, H, D), ("layers", "embed", "heads", "kv"),
                    dense_in=1)
    self.wk = param(rngs.params(), qk_init, (L, E, H, D), ("layers", "embed", "heads", "kv"),
                    dense_in=1)
    self.wv = param(rngs.params(), v_init, (L, E, H, D), ("layers", "embed", "heads", "kv"),
                    dense_in=1)
    self.bq = param(None, zeros, (L, H, D), ("layers", "heads", "kv"), decay=False)
    self.bk = param(None, zeros, (L, H, D), ("layers", "heads", "kv"), decay=False)
    self.bv = param(None, zeros, (L, H, D), ("layers", "heads", "kv"), decay=False)
    self.wo = param(rngs.params(), o_init, (L, H, D, E), ("layers", "heads", "kv", "embed"),
                    dense_in=2)
    self.bo = param(None, zeros, (L, E), ("layers", "embed"), decay=False)
    self.w_in = param(rngs.params(), in_init, (L, E, 2, F), ("layers", "embed", "glu", "mlp"),
                      dense_in=1)
    self.b_in = param(None, zeros, (L, 2, F), ("layers", "glu", "mlp"), decay=False)
    self.w_out = param(rngs.params(), out_init, (L, F, E), ("layers", "mlp", "embed"), dense_in=1)
    self.b_out = param(None, zeros, (L, E), ("layers", "embed"), decay=False)
    self.ln1_scale = param(None, ones, (L, E), ("layers", "embed"), decay=False)
    self.ln1_bias = param(None, zeros, (L, E), ("layers", "embed"), decay=False)
    self.ln2_scale = param(None, ones, (L, E), ("layers", "embed"), decay=False)
    self.ln2_bias = param(None, zeros, (L, E), ("layers", "embed"), decay=False)
    self.final_scale = param(None, ones, (E,), ("embed",), decay=False)
    self.final_bias = param(None, zeros, (E,), ("embed",), decay=False)

  LAYER_PARAMS = ("wq", "wk", "wv", "bq", "bk", "bv", "wo", "bo", "w_in", "b_in", "w_out", "b_out",
                  "ln1_scale", "ln1_bias", "ln2_scale", "ln2_bias")

  def init_cache(self, batch: int, max_len: int, dtype=jnp.float32):
    """The KV cache: one {"k", "v"} of [B, max_len, H, D] per layer (see `decode_step`)."""
    return init_cache(self.cfg, batch, max_len, dtype)

  def decode_weights(self) -> dict:
    """The weights as `decode_step` reads them: each layer's parameters as arrays of their own
    (materialised once here), plus the embedding and the final norm. FP dense kernels are held
    as `DecodeKernel`s (decode's few rows go to the CPU decode kernel, as quantized ones do)."""
    stacked = {name: getattr(self, name).get_value() for name in self.LAYER_PARAMS}

    def layer(l):
      out = {}
      for name, a in stacked.items():
        one = jax.tree.map(lambda v: jnp.array(v[l]), a)
        dense_kernel = getattr(getattr(self, name), "dense_in", None) is not None
        out[name] = DecodeKernel(one) if dense_kernel and not isinstance(a, QuantizedWeight) else one
      return out
    layers = tuple(layer(l) for l in range(self.cfg.num_layers))
    return {"embed": self.embed.get_value(), "final_scale": self.final_scale.get_value(),
            "final_bias": self.final_bias.get_value(), "layers": layers}

  def __call__(self, tokens, positions, context_len, *, dropout_key=None, cache=None,
               cache_index=0, layer_stack=None, return_hidden=False):
    """Logits [B,T,V] (and the updated cache when `cache` is given).

    `layer_stack(layer_fn, h, xs, shared, seeds, chunk) -> h` (training only) replaces the
    layer loop (scanned with remat, unrolled without): layer_fn(shared, xs_l, h, part) -> h is
    layer l on the rows h (xs_l: its parameters under "p", its index under "idx", its dropout key
    under "key"; shared = {"positions", "context_len"}, the batch leading, sliced with h; part =
    the micro-batch index or None), seeds [L] uint32 (one per layer and step, drawn from
    dropout_key), chunk = cfg.layer_chunk;
    it must compute lax.scan of layer_fn over xs (e.g. the unrolled, activation-compressed
    layers of `jaxpapers.gact.families`).

    tokens [B,T] int; positions [B,T] (1-D) or [B,2,T] (2-D); context_len [B]: the first
    context_len tokens attend bidirectionally. With a cache (`init_cache`), tokens sit at
    absolute positions cache_index..cache_index+T-1 of the cache (without one, cache_index is
    unused); that path is `decode_step` on `decode_weights()`, which copies every layer out of
    the stack on each call: for decoding, take `decode_weights()` once and call `decode_step`
    (`glm.generate.forward_cached`), as generation does.
    `return_hidden` (no cache): the last layer's output [B,T,E], before the final norm and the
    head (both in `head_loss`)."""
    cfg = self.cfg
    if cache is not None:
      return decode_step(cfg, self.decode_weights(), tokens, positions, context_len, cache,
                         cache_index)
    # the shrink on the table the lookup reads, not on its [B,T,E] output: the same gradient
    # (alpha * scatter(g) = scatter(alpha * g)) without a scaled copy of the cotangent
    x = lookup(shrink_gradient(self.embed[...], cfg.emb_grad_shrink), tokens)
    x = constrain(x, "batch", "length", "embed")
    stacked = {name: getattr(self, name).get_value() for name in self.LAYER_PARAMS}
    layer_keys = (jax.random.split(dropout_key, cfg.num_layers) if dropout_key is not None
                  else jnp.zeros((cfg.num_layers,), jnp.uint32))

    def body(h, xs):
      p, idx, key = xs["p"], xs["idx"], xs["key"]
      key = key if dropout_key is not None else None
      return _uncached_layer(cfg, h, p, idx, positions, context_len, key), None

    xs = {"p": stacked, "idx": jnp.arange(cfg.num_layers), "key": layer_keys}
    if layer_stack is not None:
      def layer_fn(shared, xs_l, h, part):
        key = xs_l["key"] if dropout_key is not None else None
        return _part_layer(cfg, (xs_l["p"], xs_l["idx"], key), h,
                           (shared["positions"], shared["context_len"]), part)
      h = layer_stack(layer_fn, x, xs, {"positions": positions, "context_len": context_len},
                      jax.vmap(_seed_of)(layer_keys), cfg.layer_chunk)
    elif cfg.remat:     # memory first: each layer's input kept, the rest recomputed, scanned
      h, _ = jax.lax.scan(jax.checkpoint(body, prevent_cse=False), x, xs)
    else:               # speed first: the layers unrolled (see GLMConfig.remat)
      h = x
      for l in range(cfg.num_layers):
        h, _ = body(h, jax.tree.map(lambda a, l=l: a[l], xs))
    if return_hidden:    # [B,T,E] before the final norm (see `head_loss`)
      return h
    h = layer_norm(h, self.final_scale[...], self.final_bias[...])
    logits = jnp.einsum("bte,ve->btv", h, self.embed[...]).astype(jnp.float32)
    return constrain(logits, "batch", "length", "vocab")


def init_cache(cfg: GLMConfig, batch: int, max_len: int, dtype=jnp.float32) -> list[dict]:
  shape = (batch, max_len, cfg.num_heads, cfg.head_dim)
  return [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
          for _ in range(cfg.num_layers)]


def decode_step(cfg: GLMConfig, weights: dict, tokens, positions, context_len, cache: list,
                cache_index):
  """(logits [B,T,V], new cache) of tokens at absolute positions cache_index..cache_index+T-1
  (prefill: the context; decode: one token), each layer run on its own weight arrays
  (`GLM.decode_weights`) in an unrolled loop. A scan over the stacked [L, ...] weights would
  slice, i.e. copy, one layer's weights out of the stack per layer and token: at batch 1, where
  decode is bound by reading the weights, that copy had doubled the bytes moved per token."""
  x = weights["embed"][tokens]
  mask = attention_mask_from_context(context_len, jnp.arange(tokens.shape[1]) + cache_index,
                                     cache[0]["k"].shape[1])
  rope = rope_for(cfg, positions)
  new_cache = []
  for l, p in enumerate(weights["layers"]):
    x, (k, v) = _layer(cfg, x, p, l, rope, mask, None, (cache[l]["k"], cache[l]["v"]), cache_index)
    new_cache.append({"k": k, "v": v})
  h = layer_norm(x, weights["final_scale"], weights["final_bias"])
  return jnp.einsum("bte,ve->btv", h, weights["embed"]).astype(jnp.float32), new_cache


def head_loss(model: GLM, hidden, targets, weights, chunk: int = 0):
  """sum_bt weights[b,t] * -log p(targets[b,t]) through the final norm and the tied output head
  from `hidden` [B,T,E] (`GLM(..., return_hidden=True)`), the loss and its gradient computed
  together for `chunk` sequences at a time (`nn.micro_batch.micro_batched_sum`): the [B,T,V]
  logits exist for one part at a time, and the gradient w.r.t. `hidden` takes its buffer. Weights
  are data (no gradient). Divide by the weight total for the mean."""
  def part(params, h, side):
    embed, scale, bias = params
    t, w = side
    logits = jnp.einsum("bte,ve->btv", layer_norm(h, scale, bias), embed).astype(jnp.float32)
    return (optax.softmax_cross_entropy_with_integer_labels(logits, t) * w).sum()

  params = (model.embed[...], model.final_scale[...], model.final_bias[...])
  return micro_batched_sum(part, chunk, params, hidden, (targets, weights))


def _seed_of(key):
  """A uint32 seed from a layer's dropout key (typed or raw)."""
  raw = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
  return jnp.asarray(raw, jnp.uint32).reshape(-1)[-1]


def param_counts(cfg: GLMConfig) -> dict[str, int]:
  """Matmul parameters per token: layers (non-embedding) and the tied output projection."""
  E, F = cfg.d_model, cfg.ffn
  per_layer = 4 * E * E + 3 * E * F
  return {"layers": cfg.num_layers * per_layer, "head": E * cfg.vocab_size}


def train_flops_per_token(cfg: GLMConfig, seq_len: int) -> float:
  """Model FLOPs per trained token: 6 x matmul params + attention (12 L E T), as in PaLM App. B;
  the embedding lookup costs no FLOPs, the tied output projection does."""
  pc = param_counts(cfg)
  return 6.0 * (pc["layers"] + pc["head"]) + 12.0 * cfg.num_layers * cfg.d_model * seq_len
