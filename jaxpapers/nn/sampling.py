"""Next-token sampling: greedy, top-k and top-p (nucleus), with temperature."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def sample_logits(logits: jnp.ndarray, key, strategy: str = "greedy", top_k: int = 0,
                  top_p: float = 1.0, temperature: float = 1.0) -> jnp.ndarray:
  """Token ids [B] from logits [B, V]."""
  if strategy == "greedy":
    return jnp.argmax(logits, axis=-1)
  logits = logits.astype(jnp.float32) / max(temperature, 1e-6)
  if strategy == "top_k":
    if not 1 <= top_k <= logits.shape[-1]:
      raise ValueError(f"top_k must be in [1, {logits.shape[-1]}], got {top_k}")
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  elif strategy == "top_p":
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
    # keep the smallest prefix whose mass reaches top_p (always at least one token)
    cutoff_idx = jnp.minimum(jnp.sum(cum < top_p, axis=-1, keepdims=True), logits.shape[-1] - 1)
    cutoff = jnp.take_along_axis(sorted_logits, cutoff_idx, axis=-1)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  elif strategy != "sample":
    raise ValueError(f"unknown sampling strategy {strategy!r}; use greedy, sample, top_k or top_p")
  return jax.random.categorical(key, logits, axis=-1)
