"""How GACT's activation-memory ratio depends on depth (compile-only, no training).

  python experiments/bench/gact_depth.py [--layers 8 32 64] [--batch 1024] [--chunk 8] [--max-batch]

For a GLM stack (d_model 256, 8 heads, seq 64, vocab 1024) at each depth: XLA's compiled temp
bytes of the whole train step at `--batch` minus at batch 1, for L0 (scanned layers under
jax.checkpoint), 2-bit compressed-recompute (every layer input at 2 bits, one
`gact.stack.compressed_stack`) and no remat; layers and tied head in micro-batches of `--chunk`
sequences (0: whole batch) for L0 and 2-bit, never for no remat; prints JSON with the ratios
L0 / 2-bit and plain / 2-bit. With --max-batch, also the largest batch of L0 and of 2-bit under
the budget of L0's step at --batch (`gact.measure.max_batch`, multiples of --chunk), which no
batch-1 subtraction affects.
"""
from __future__ import annotations

import argparse
import json

import jax.numpy as jnp
import optax
from flax import nnx

from jaxpapers.gact.measure import max_batch, temp_probe
from jaxpapers.gact.stack import compressed_stack
from jaxpapers.glm.model import GLM, GLMConfig, head_loss


def loss_fn_for(hooks, head_chunk):
  def loss_fn(model, batch, key):
    h = model(batch["tokens"], batch["positions"], batch["context_len"], dropout_key=key,
              return_hidden=True, **hooks)
    t = batch["targets"]
    return head_loss(model, h, t, jnp.ones(t.shape, jnp.float32), head_chunk) / t.size, {}
  return loss_fn


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--layers", type=int, nargs="+", default=[8, 32, 64])
  ap.add_argument("--batch", type=int, default=1024)
  ap.add_argument("--chunk", type=int, default=8)
  ap.add_argument("--max-batch", action="store_true")
  a = ap.parse_args()
  T, out = 64, []
  batch = lambda b: {"tokens": jnp.zeros((b, T), jnp.int32), "positions": jnp.zeros((b, T), jnp.int32),
                     "context_len": jnp.zeros((b,), jnp.int32), "targets": jnp.zeros((b, T), jnp.int32)}
  tx = optax.adamw(1e-3)
  for L in a.layers:
    row = {"layers": L}
    budget = None
    for name, remat, stack in [("L0", True, None), ("plain", False, None), ("2bit", True, [2] * L)]:
      chunk = a.chunk if remat else 0
      cfg = GLMConfig(vocab_size=1024, num_layers=L, d_model=256, num_heads=8, dropout=0.0,
                      remat=remat, layer_chunk=chunk)
      model = nnx.eval_shape(lambda: GLM(cfg, rngs=nnx.Rngs(params=0)))
      graphdef, params = nnx.split(model, nnx.Param)
      loss_fn = loss_fn_for({"layer_stack": compressed_stack(stack)} if stack else {}, chunk)
      temp_at = temp_probe(graphdef, loss_fn, tx, params, batch)
      row[f"act_mib_{name}"] = (temp_at(a.batch) - temp_at(1)) / 2**20
      if a.max_batch and name != "plain":
        budget = budget or temp_at(a.batch)
        row[f"max_batch_{name}"] = max_batch(temp_at, budget, a.batch, 32 * a.batch,
                                             multiple=max(1, a.chunk))
    if a.max_batch:
      row["budget_mib"] = budget / 2**20
      row["max_batch_ratio"] = row["max_batch_2bit"] / row["max_batch_L0"]
    row["ratio_L0_over_2bit"] = row["act_mib_L0"] / row["act_mib_2bit"]
    row["ratio_plain_over_2bit"] = row["act_mib_plain"] / row["act_mib_2bit"]
    row["saved_inputs_mib_fp32"] = L * a.batch * T * 256 * 4 / 2**20
    out.append(row)
    print(json.dumps(row), flush=True)
  print(json.dumps({"batch": a.batch, "chunk": a.chunk, "rows": out}, indent=1))


if __name__ == "__main__":
  main()
