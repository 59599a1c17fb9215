"""Activation memory of the GCN train step under different layer layouts (compile only).

  python experiments/bench/gact_gnn_layouts.py [--nodes 117659] [--layers 3 8]

The GCN of `gact/memory` (hidden 64, residual GCN layers) on a graph of `--nodes` nodes at
WordNet's mean degree; XLA's compiled temp bytes of the whole train step (AdamW) minus the same at
a 1,000-node graph, for: layers in a Python loop (plain; GACT residual mode at 2 bits), `nnx.remat`
per layer, the identical layers stacked under `lax.scan` (plain; `jax.checkpoint`), and the
stack with every layer input compressed (`gact.stack.compressed_stack`, 4 and 2 bits).
"""
from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxpapers.gact.measure import temp_bytes
from jaxpapers.gact.stack import compressed_stack
from jaxpapers.gact.wrapper import compress_block
from jaxpapers.nn.gcn import GCN

EDGES_PER_NODE = 2 * 183_789 / 117_659      # WordNet, both directions


def graph(n: int) -> dict:
  m = round(n * EDGES_PER_NODE)
  return {"x": jnp.zeros((n, 64)), "y": jnp.zeros((n,), jnp.int32), "s": jnp.zeros((m,), jnp.int32),
          "r": jnp.zeros((m,), jnp.int32)}


def hidden(model, b, layout: str, bits: int):
  h = model.inp(b["x"])
  if layout in ("loop", "loop_remat", "loop_resid"):
    for layer in model.layers:
      if layout == "loop":
        h = layer(h, b["s"], b["r"])
      elif layout == "loop_remat":
        h = nnx.remat(lambda l, h: l(h, b["s"], b["r"]))(layer, h)
      else:
        g, _ = nnx.split(layer)
        fn = compress_block(lambda st, h: nnx.merge(g, st)(h, b["s"], b["r"]), bits, "residuals")
        h = fn(nnx.state(layer), h, jnp.uint32(7))
    return h
  gdef = nnx.split(model.layers[0])[0]
  xs = jax.tree.map(lambda *a: jnp.stack(a), *[nnx.state(l) for l in model.layers])
  layer_fn = lambda shared, xs_l, h, part: nnx.merge(gdef, xs_l)(h, shared["s"], shared["r"])
  shared = {"s": b["s"], "r": b["r"]}
  if layout == "stack_compressed":
    L = len(model.layers)
    return compressed_stack([bits] * L)(layer_fn, h, xs, shared, jnp.arange(L, dtype=jnp.uint32))
  body = lambda h, xs_l: (layer_fn(shared, xs_l, h, None), None)
  if layout == "scan_remat":
    body = jax.checkpoint(body, prevent_cse=False)
  return jax.lax.scan(body, h, xs)[0]


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--nodes", type=int, default=117_659)
  ap.add_argument("--layers", type=int, nargs="+", default=[3, 8])
  a = ap.parse_args()
  tx = optax.adamw(1e-3)
  rows = []
  for L in a.layers:
    model = GCN(64, 64, L, 45, rngs=nnx.Rngs(params=0))
    g, p = nnx.split(model, nnx.Param)
    row = {"layers": L, "nodes": a.nodes}
    for name, layout, bits in [("loop", "loop", 32), ("loop_remat", "loop_remat", 32),
                               ("loop_residuals_2bit", "loop_resid", 2), ("scan", "scan", 32),
                               ("scan_remat", "scan_remat", 32),
                               ("stack_4bit", "stack_compressed", 4), ("stack_2bit", "stack_compressed", 2)]:
      def lf(model, b, key, layout=layout, bits=bits):
        logits = model.out(hidden(model, b, layout, bits))
        return -jnp.take_along_axis(jax.nn.log_softmax(logits), b["y"][:, None], -1).mean(), {}
      t = [temp_bytes(g, lf, tx, p, graph(n)) for n in (a.nodes, 1000)]
      row[name] = round((t[0] - t[1]) / 2**20, 1)
      print(name, row[name], "MiB", flush=True)
    rows.append(row)
  print(json.dumps(rows, indent=1))


if __name__ == "__main__":
  main()
