"""Micro-batching a row-independent function over the batch axis, in place, with recomputation
(used for GLM's layers and tied head, `glm.model.GLMConfig.layer_chunk`, `glm.model.head_loss`).

The batch is cut into parts of `chunk` rows (full parts under `lax.fori_loop`, then the
remainder) and each part's output is written over its input's rows, so a layer's forward holds
one [B, ...] buffer, not an input and an output. The backward does the same over the output
cotangent: part by part it recomputes the function from the part's input (saved, or
decompressed), pulls the part's cotangent back and writes it over the same rows. What a
layer's backward holds is then its input, one cotangent buffer and one part's working set.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxpapers.nn.float_tree import cotangent_tree, merge_float, split_float


def take(x, start, size):
  """Rows start..start+size of x (all of x when start is None: the whole batch as one part)."""
  return x if start is None else jax.lax.dynamic_slice_in_dim(x, start, size, 0)


def put(x, y, start):
  """x with rows from `start` replaced by y (y itself when start is None)."""
  return y if start is None else jax.lax.dynamic_update_slice_in_dim(x, y, start, 0)


def rewrite_parts(x, chunk: int, step: Callable, state):
  """(x', state): each part i of `chunk` rows of x replaced, in place, by the rows of
  (rows, state) = step(i, start, size, x_i, state). Part i+1 is read from x after part i is
  written and carried into the next iteration as a buffer of its own: if a part were sliced
  from x inside the iteration that overwrites it, XLA would fuse the slice into its readers, and
  a reader not on the path to the write (a compressor, a parameter gradient) could be scheduled
  after it, so XLA would copy the whole [B, ...] buffer on every part to keep it intact (seen in
  the GACT stack's forward: two full copies per part). With chunk <= 0 or >= batch: one call
  on the whole of x, with i = start = None."""
  batch = x.shape[0]
  if chunk <= 0 or chunk >= batch:
    return step(None, None, batch, x, state)
  n, tail = divmod(batch, chunk)

  def body(i, carry):
    x, rows, st = carry
    y, st = step(i, i * chunk, chunk, rows, st)
    x = put(x, y, i * chunk)
    return x, take(x, jnp.minimum(i + 1, n - 1) * chunk, chunk), st

  x, _, state = jax.lax.fori_loop(0, n, body, (x, take(x, 0, chunk), state))
  if tail:
    y, state = step(n, n * chunk, tail, take(x, n * chunk, tail), state)
    x = put(x, y, n * chunk)
  return x, state


def forward_in_parts(fn: Callable, h, side, chunk: int, state=None, save: Callable | None = None):
  """(h', state): h' = fn(h, side, part) computed part by part over h's buffer (fn(h_i, side_i, i)
  must return rows shaped like h_i, and rows must not interact); save(state, i, start, h_i) ->
  state sees each part's input (e.g. to compress it)."""
  def step(i, start, size, x, st):
    if save is not None:
      st = save(st, i, start, x)
    return fn(x, jax.tree.map(lambda s: take(s, start, size), side), i), st
  return rewrite_parts(h, chunk, step, state)


def backward_in_parts(fn: Callable, params, rows_of: Callable, side, g, chunk: int):
  """Cotangents (params, h, side) of h -> fn(params, h, side, ·) run by `forward_in_parts`, for
  the output cotangent g: part by part, fn(params, h_i, side_i, i) is recomputed from
  rows_of(i, start, size) (the part's saved or decompressed input), pulled back, and its
  cotangent written over g's rows. Integer and key leaves of params and side get None."""
  p_f, p_o, p_def = split_float(params)
  s_f, s_o, s_def = split_float(side)

  def step(i, start, size, g_i, carry):
    gp, gs = carry
    rows = lambda leaves: [None if a is None else take(a, start, size) for a in leaves]
    s_o_i = rows(s_o)
    f = lambda pf, x, sf: fn(merge_float(pf, p_o, p_def), x, merge_float(sf, s_o_i, s_def), i)
    _, vjp = jax.vjp(f, p_f, rows_of(i, start, size), rows(s_f))
    dp, dx, ds = vjp(g_i)
    gs = [None if a is None else put(a, d, start) for a, d in zip(gs, ds)]
    return dx, (jax.tree.map(jnp.add, gp, dp), gs)

  zeros = lambda leaves: [None if a is None else jnp.zeros_like(a) for a in leaves]
  gh, (gp, gs) = rewrite_parts(g, chunk, step, (zeros(p_f), zeros(s_f)))
  return cotangent_tree(params, gp), gh, cotangent_tree(side, gs)


def micro_batched(fn: Callable, chunk: int, params, h, side=None):
  """fn(params, h, side, part) -> like h, run over micro-batches of `chunk` rows in place and
  rematerialised: the backward keeps only (params, h, side) and recomputes one part at a time
  (`backward_in_parts`). Rows must be independent (each row of h and of every `side` leaf is one
  example); `part` is the micro-batch index (None when fn runs on the whole batch: chunk <= 0
  or >= the batch), e.g. to fold into a dropout key."""
  if chunk <= 0 or chunk >= h.shape[0]:
    return fn(params, h, side, None)

  @jax.custom_vjp
  def run(params, h, side):
    return forward_in_parts(lambda x, s, i: fn(params, x, s, i), h, side, chunk)[0]

  def fwd(params, h, side):
    return run(params, h, side), (params, h, side)

  def bwd(res, g):
    params, h, side = res
    return backward_in_parts(fn, params, lambda i, start, size: take(h, start, size), side, g,
                             chunk)

  run.defvjp(fwd, bwd)
  return run(params, h, side)


def micro_batched_sum(fn: Callable, chunk: int, params, h, side):
  """sum_i fn(params, h_i, side_i) (fn returns a scalar per part, e.g. a summed loss) over parts
  of `chunk` rows, with the gradients w.r.t. params and h computed in the forward, part by part,
  and the one w.r.t. h written over h's buffer: the backward only scales them by the incoming
  cotangent (a fused loss and gradient, as a training step's loss head needs). `side` (labels,
  loss weights) is data: it gets no gradient (it passes through `lax.stop_gradient`)."""
  side = jax.lax.stop_gradient(side)

  def value_and_grads(params, h, side):
    p_f, p_o, p_def = split_float(params)
    part_fn = lambda pf, x, s: fn(merge_float(pf, p_o, p_def), x, s)

    def step(i, start, size, x, carry):
      gp, total = carry
      val, (dp, dx) = jax.value_and_grad(part_fn, argnums=(0, 1))(
          p_f, x, jax.tree.map(lambda s: take(s, start, size), side))
      return dx, (jax.tree.map(jnp.add, gp, dp), total + val)
    zeros = [None if a is None else jnp.zeros_like(a) for a in p_f]
    gh, (gp, total) = rewrite_parts(h, chunk, step, (zeros, jnp.zeros((), jnp.float32)))
    return gh, gp, total

  @jax.custom_vjp
  def run(params, h, side):
    return value_and_grads(params, h, side)[2]

  def fwd(params, h, side):
    gh, gp, total = value_and_grads(params, h, side)
    return total, (params, gh, gp)

  def bwd(res, g):
    params, gh, gp = res
    scale = lambda a: None if a is None else (a * g).astype(a.dtype)
    # gh scaled part by part in place: as one elementwise op XLA gave the product a buffer of its
    # own next to gh's (one more [B, ...] buffer at the start of the backward)
    gh = rewrite_parts(gh, chunk, lambda i, start, size, x, st: (scale(x), st), None)[0]
    return cotangent_tree(params, [scale(a) for a in gp]), gh, jax.tree.map(lambda _: None, side)

  run.defvjp(fwd, bwd)
  return run(params, h, side)
