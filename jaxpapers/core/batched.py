"""Applying a model function to a data set in fixed-size batches, one compiled program per
(architecture, function)."""
from __future__ import annotations

import functools

import jax
import numpy as np
from flax import nnx


@functools.lru_cache(maxsize=64)
def _compiled(graphdef, fn):
  return jax.jit(lambda state, batch: fn(nnx.merge(graphdef, state), batch))


def apply_batched(model: nnx.Module, fn, batches: dict, size: int) -> np.ndarray:
  """fn(model, batch) over `batches` (a dict of [N, ...] arrays), `size` rows per call (the last
  call padded with copies of the last row, so every call has one shape), concatenated as numpy.
  Models of one architecture share the compiled program."""
  graphdef, state = nnx.split(model)
  f = _compiled(graphdef, fn)
  n = len(next(iter(batches.values())))
  out = []
  for i in range(0, n, size):
    part = {k: v[i:i + size] for k, v in batches.items()}
    m = len(next(iter(part.values())))
    if m < size:
      part = {k: np.concatenate([v, np.repeat(v[-1:], size - m, 0)]) for k, v in part.items()}
    out.append(np.asarray(f(state, part))[:m])
  return np.concatenate(out)
