"""Embedding utilities."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def shrink_gradient(x, alpha: float):
  """Identity forward; gradient multiplied by `alpha` (GLM-130B §3 "Embedding Layer Gradient
  Shrink", alpha = 0.1). Exact in the forward, unlike `alpha*x + (1-alpha)*stop_gradient(x)`."""
  return x


def _fwd(x, alpha):
  return x, None


def _bwd(alpha, _, g):
  return (g * alpha,)


shrink_gradient.defvjp(_fwd, _bwd)


@jax.custom_vjp
def lookup(table, ids):
  """table[ids] ([..., E] rows of a [V, E] table), whose gradient scatter-adds the cotangent in
  parts of `SCATTER_ROWS` rows. (`jnp.take`'s own transpose scatters all [N, 1, E] updates at
  once, and XLA CPU first copies the whole [B, T, E] cotangent to relayout that unit axis: one
  more activation-sized buffer in a training step; per part the copy is a part's.)"""
  return jnp.take(table, ids, axis=0)


SCATTER_ROWS = 4096


def _lookup_fwd(table, ids):
  # the residual carries the table's row count and dtype in a zero-size [V, 0] array, not a copy
  return lookup(table, ids), (jnp.zeros((table.shape[0], 0), table.dtype), ids)


def _lookup_bwd(res, g):
  like, ids = res
  grad = jnp.zeros((like.shape[0], g.shape[-1]), like.dtype)
  ids, g = ids.reshape(-1), g.reshape(-1, g.shape[-1])
  n, tail = divmod(ids.shape[0], SCATTER_ROWS)

  def add(start, size, grad):
    rows = jax.lax.dynamic_slice_in_dim(g, start, size, 0)
    return grad.at[jax.lax.dynamic_slice_in_dim(ids, start, size, 0)].add(rows)

  if n:
    grad = jax.lax.fori_loop(0, n, lambda i, gr: add(i * SCATTER_ROWS, SCATTER_ROWS, gr), grad)
  return (add(n * SCATTER_ROWS, tail, grad) if tail else grad), None


lookup.defvjp(_lookup_fwd, _lookup_bwd)
