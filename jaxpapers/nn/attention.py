"""Attention pieces: the layer-scaled FP32 softmax of GLM-130B and a simple KV cache."""
from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -1e9


def layer_scaled_attention(q, k, v, mask, layer_index, *, dropout_rate: float = 0.0,
                           dropout_key=None):
  """Softmax attention with the query scaled by 1/(sqrt(d)*(l+1)) and the scores multiplied back
  by (l+1) in FP32 before the softmax (GLM-130B §2.3 / Megatron `apply_query_key_layer_scaling`;
  `l` is the 0-based layer index). q: [B,Tq,H,D]; k, v: [B,Tk,H,D]; mask: [B,Tq,Tk] bool."""
  coeff = (jnp.asarray(layer_index, jnp.float32) + 1.0)
  scale = 1.0 / (jnp.sqrt(jnp.float32(q.shape[-1])) * coeff)
  scores = jnp.einsum("bqhd,bkhd->bhqk", q * scale.astype(q.dtype), k)
  scores = scores.astype(jnp.float32) * coeff
  scores = jnp.where(mask[:, None, :, :], scores, NEG_INF)
  probs = jax.nn.softmax(scores, axis=-1)
  if dropout_rate > 0.0 and dropout_key is not None:
    keep = jax.random.bernoulli(dropout_key, 1.0 - dropout_rate, probs.shape)
    probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
  return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v)


def update_cache(cache: jnp.ndarray, new: jnp.ndarray, index) -> jnp.ndarray:
  """Writes new [B,T,H,D] into cache [B,S,H,D] at time `index`."""
  return jax.lax.dynamic_update_slice_in_dim(cache, new.astype(cache.dtype), index, axis=1)
