"""How GACT's activation-memory ratio depends on depth (compile-only, no training).

  python experiments/bench/gact_depth.py [--layers 8 32 64] [--batch 128]

For a GLM stack (d_model 256, 8 heads, seq 64, vocab 1024) at each depth: XLA's compiled temp
bytes of the whole train step at `--batch` minus at batch 1, for L0 (scanned layers under
jax.checkpoint, the default), 2-bit compressed-recompute (every layer input at 2 bits) and no
remat; prints JSON with the ratios L0 / 2-bit and plain / 2-bit.
"""
from __future__ import annotations

import argparse
import json

import jax.numpy as jnp
import optax
from flax import nnx

from jaxpapers.gact.measure import temp_bytes
from jaxpapers.gact.wrapper import compress_block
from jaxpapers.glm.model import GLM, GLMConfig


def loss_fn_for(wrapper):
  def loss_fn(model, batch, key):
    import jax
    logits = model(batch["tokens"], batch["positions"], batch["context_len"], dropout_key=key,
                   layer_wrapper=wrapper)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits, -1), batch["targets"][..., None], -1)
    return nll.mean(), {}
  return loss_fn


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--layers", type=int, nargs="+", default=[8, 32, 64])
  ap.add_argument("--batch", type=int, default=128)
  a = ap.parse_args()
  T, out = 64, []
  batch = lambda b: {"tokens": jnp.zeros((b, T), jnp.int32), "positions": jnp.zeros((b, T), jnp.int32),
                     "context_len": jnp.zeros((b,), jnp.int32), "targets": jnp.zeros((b, T), jnp.int32)}
  tx = optax.adamw(1e-3)
  for L in a.layers:
    row = {"layers": L}
    for name, remat, wrapper in [("L0", True, None), ("plain", False, None),
                                 ("2bit", True, lambda fn: compress_block(fn, 2, "recompute"))]:
      cfg = GLMConfig(vocab_size=1024, num_layers=L, d_model=256, num_heads=8, dropout=0.0, remat=remat)
      model = nnx.eval_shape(lambda: GLM(cfg, rngs=nnx.Rngs(params=0)))
      graphdef, params = nnx.split(model, nnx.Param)
      t = [temp_bytes(graphdef, loss_fn_for(wrapper), tx, params, batch(b)) for b in (a.batch, 1)]
      row[f"act_mib_{name}"] = (t[0] - t[1]) / 2**20
    row["ratio_L0_over_2bit"] = row["act_mib_L0"] / row["act_mib_2bit"]
    row["ratio_plain_over_2bit"] = row["act_mib_plain"] / row["act_mib_2bit"]
    row["saved_inputs_mib_fp32"] = L * a.batch * T * 256 * 4 / 2**20
    out.append(row)
    print(json.dumps(row), flush=True)
  print(json.dumps({"batch": a.batch, "rows": out}, indent=1))


if __name__ == "__main__":
  main()
