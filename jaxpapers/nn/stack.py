"""Running a stack of identical layers as one `lax.scan` (as MaxText stacks its layers)."""
from __future__ import annotations

from typing import Callable

import jax

from jaxpapers.nn.micro_batch import micro_batched


def scan_stack(remat: bool = True) -> Callable:
  """`layer_stack(layer_fn, h, xs, shared, seeds, chunk=0) -> h`: lax.scan of
  layer_fn(shared, xs_l, h, part) over the stacked per-layer inputs xs, each layer under
  `jax.checkpoint` when `remat` (the backward then keeps only the layer inputs), and over
  micro-batches of `chunk` rows when chunk > 0 (`nn.micro_batch.micro_batched`: rows independent,
  every `shared` leaf with the batch leading). `seeds` is unused (the signature of the
  layer-stack hooks, e.g. `jaxpapers.gact.stack.compressed_stack`)."""
  def layer_stack(layer_fn, h, xs, shared, seeds=None, chunk: int = 0):
    part_fn = lambda xs_l, x, sh, part: layer_fn(sh, xs_l, x, part)
    body = lambda h, xs_l: (micro_batched(part_fn, chunk, xs_l, h, shared), None)
    if remat:
      body = jax.checkpoint(body, prevent_cse=False)
    return jax.lax.scan(body, h, xs)[0]
  return layer_stack
