"""How GACT's activation-memory ratio depends on depth (compile-only, no training).

  python experiments/bench/gact_depth.py [--layers 8 16 24] [--d-model 256] [--batch 1024]
                                         [--chunk 8] [--max-batch]

For a GLM stack (8 heads, seq 64, vocab 1024) at each depth, XLA's compiled temp bytes of the
whole train step for: L0 (`gact.stack.compressed_stack` with every layer input kept in FP32),
2-bit compressed-recompute (every input at 2 bits, the same stack), GLM's own remat scan
(`jax.checkpoint`) and no remat; layers and tied head in in-place micro-batches of `--chunk`
sequences (0: whole batch) except for no remat. Activation memory two ways: temp bytes at
`--batch` minus at batch 1 (the acceptance measure) and at 2 x `--batch` minus at `--batch`
(marginal: no reuse of batch-1 temporaries). With --max-batch, also the largest batch of L0 and
of 2-bit under the budget of L0's step at --batch (`gact.measure.max_batch`, multiples of
--chunk). Prints one JSON row per depth, then all rows.
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
  ap.add_argument("--layers", type=int, nargs="+", default=[8, 16, 24])
  ap.add_argument("--d-model", type=int, default=256)
  ap.add_argument("--batch", type=int, default=1024)
  ap.add_argument("--chunk", type=int, default=8)
  ap.add_argument("--max-batch", action="store_true")
  a = ap.parse_args()
  T, out, B = 64, [], a.batch
  batch = lambda b: {"tokens": jnp.zeros((b, T), jnp.int32), "positions": jnp.zeros((b, T), jnp.int32),
                     "context_len": jnp.zeros((b,), jnp.int32), "targets": jnp.zeros((b, T), jnp.int32)}
  tx = optax.adamw(1e-3)
  for L in a.layers:
    row = {"layers": L, "d_model": a.d_model}
    budget = None
    for name, remat, stack in [("L0", True, [32] * L), ("2bit", True, [2] * L),
                               ("remat", True, None), ("plain", False, None)]:
      chunk = a.chunk if remat else 0
      cfg = GLMConfig(vocab_size=1024, num_layers=L, d_model=a.d_model, num_heads=8, dropout=0.0,
                      remat=remat, layer_chunk=chunk)
      model = nnx.eval_shape(lambda: GLM(cfg, rngs=nnx.Rngs(params=0)))
      graphdef, params = nnx.split(model, nnx.Param)
      loss_fn = loss_fn_for({"layer_stack": compressed_stack(stack)} if stack else {}, chunk)
      temp_at = temp_probe(graphdef, loss_fn, tx, params, batch)
      row[f"act_mib_{name}"] = (temp_at(B) - temp_at(1)) / 2**20
      row[f"marginal_mib_{name}"] = (temp_at(2 * B) - temp_at(B)) / 2**20
      if a.max_batch and name in ("L0", "2bit"):
        budget = budget or temp_at(B)
        row[f"max_batch_{name}"] = max_batch(temp_at, budget, B, 32 * B, multiple=max(1, a.chunk))
    if a.max_batch:
      row["budget_mib"] = budget / 2**20
      row["max_batch_ratio"] = row["max_batch_2bit"] / row["max_batch_L0"]
    for ref in ("L0", "remat", "plain"):
      row[f"ratio_{ref}_over_2bit"] = row[f"act_mib_{ref}"] / max(row["act_mib_2bit"], 1e-9)
      row[f"marginal_ratio_{ref}_over_2bit"] = row[f"marginal_mib_{ref}"] / row["marginal_mib_2bit"]
    row["saved_inputs_mib_fp32"] = L * B * T * a.d_model * 4 / 2**20
    out.append(row)
    print(json.dumps(row), flush=True)
  print(json.dumps({"batch": B, "chunk": a.chunk, "rows": out}, indent=1))


if __name__ == "__main__":
  main()
