"""Micro-batching a per-example function over the batch axis with rematerialisation: the memory
of a batch-independent computation's backward becomes that of one micro-batch (used for GLM's
layers and tied head, `glm.model.GLMConfig.layer_chunk`, `glm.model.head_nll`)."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def micro_batched(fn, chunk: int, batched, key=None):
  """fn(*batched, key) over the leading (batch) axis in micro-batches of `chunk` rows, one after
  another under lax.map, each under jax.checkpoint: the backward keeps only the micro-batches'
  inputs and holds one micro-batch's recomputation at a time. The batch is padded by repeating
  its last row (rows are independent; padded rows are dropped). Each micro-batch gets its own
  dropout key (split from `key`), so with dropout the draws differ from the unchunked call."""
  B = jax.tree.leaves(batched)[0].shape[0]
  if chunk <= 0 or chunk >= B:
    return fn(*batched, key)
  n = -(-B // chunk)

  def split(x):
    if n * chunk != B:
      x = jnp.pad(x, [(0, n * chunk - B)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    return x.reshape(n, chunk, *x.shape[1:])

  keys = jax.random.split(key, n) if key is not None else jnp.zeros((n,), jnp.uint32)
  step = jax.checkpoint(lambda a: fn(*a[0], a[1] if key is not None else None), prevent_cse=False)
  out = jax.lax.map(step, (jax.tree.map(split, batched), keys))
  return jax.tree.map(lambda y: y.reshape(n * chunk, *y.shape[2:])[:B], out)
