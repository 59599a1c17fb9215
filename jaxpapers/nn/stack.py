"""Running a stack of identical layers as one `lax.scan` (as MaxText stacks its layers)."""
from __future__ import annotations

from typing import Callable

import jax


def scan_stack(remat: bool = True) -> Callable:
  """`layer_stack(layer_fn, h, xs, shared, seeds) -> h`: lax.scan of layer_fn(shared, xs_l, h)
  over the stacked per-layer inputs xs, each layer under `jax.checkpoint` when `remat` (the
  backward then keeps only the layer inputs). `seeds` is unused (the signature of the layer-stack
  hooks, e.g. `jaxpapers.gact.stack.compressed_stack`)."""
  def layer_stack(layer_fn, h, xs, shared, seeds=None):
    body = lambda h, xs_l: (layer_fn(shared, xs_l, h), None)
    if remat:
      body = jax.checkpoint(body, prevent_cse=False)
    return jax.lax.scan(body, h, xs)[0]
  return layer_stack
