"""GLM train-step throughput on this machine, as ratios measured in one process.

  python experiments/bench/glm_step.py [--d_model 512 --num_layers 2 --seq_len 128 --batch 16]

Prints JSON: tokens/s, model FLOP/s of the jitted train step (6 x matmul params + attention, per
token), this machine's matmul FLOP/s (n=2048, best of 8) and their ratio `mfu_cpu`; then where
the time goes: forward only, forward + backward, and the full step (optimizer update, the
non-finite guard), each as a fraction of the full step.
"""
from __future__ import annotations

import argparse
import json
import statistics

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxpapers.core.flops import measure_matmul_flops, median_time
from jaxpapers.core.train import TrainState, make_optimizer, make_train_step
from jaxpapers.glm.evaluate import loss_fn, token_nll
from jaxpapers.glm.model import GLM, GLMConfig, train_flops_per_token
from jaxpapers.glm.objective import BatchSampler, SpecialIds


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--d_model", type=int, default=512)
  ap.add_argument("--num_layers", type=int, default=2)
  ap.add_argument("--num_heads", type=int, default=8)
  ap.add_argument("--vocab", type=int, default=4096)
  ap.add_argument("--seq_len", type=int, default=128)
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--remat", type=int, default=1)
  ap.add_argument("--reps", type=int, default=4)
  a = ap.parse_args()
  cfg = GLMConfig(vocab_size=a.vocab, num_layers=a.num_layers, d_model=a.d_model,
                  num_heads=a.num_heads, dropout=0.0, remat=bool(a.remat))
  model = GLM(cfg, rngs=nnx.Rngs(params=0))
  ids = SpecialIds(pad=0, mask=1, gmask=2, sop=3, eop=4)
  tokens = np.random.default_rng(0).integers(5, a.vocab, 200_000).astype(np.int32)
  batch = BatchSampler(tokens, ids, seq_len=a.seq_len, batch=a.batch, seed=0, gmask_prob=0.7,
                       mask_ratio=0.15, span_lambda=3.0, two_d=False)(0)
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  t = ml_collections.ConfigDict(dict(steps=1000, lr=1e-3, warmup=10.0, end_lr_ratio=0.1, weight_decay=0.1,
                                     b1=0.9, b2=0.95, eps=1e-8, clip=1.0))
  tx = make_optimizer(t)
  graphdef, params = nnx.split(model, nnx.Param)
  state = TrainState(step=jnp.int32(0), params=params, opt_state=tx.init(params),
                     rng=jax.random.key_data(jax.random.key(0)))
  step = jax.jit(make_train_step(graphdef, loss_fn, tx))
  one = jnp.float32(1.0)
  fwd = jax.jit(lambda p, b: token_nll(nnx.merge(graphdef, p), b)[0].sum())
  grad = jax.jit(jax.grad(lambda p, b: loss_fn(nnx.merge(graphdef, p), b, None)[0]))
  # interleaved rounds, medians of each: the machine is shared and its speed drifts
  rounds = {"peak": [], "step": [], "fwd": [], "grad": []}
  for _ in range(3):
    rounds["peak"].append(measure_matmul_flops(reps=4))
    rounds["step"].append(median_time(lambda s: step(s, batch, one)[1]["loss"], state, reps=a.reps))
    rounds["fwd"].append(median_time(fwd, params, batch, reps=a.reps))
    rounds["grad"].append(median_time(grad, params, batch, reps=a.reps))
  peak, t_step, t_fwd, t_grad = (statistics.median(rounds[k]) for k in ("peak", "step", "fwd", "grad"))
  n_tok = a.batch * a.seq_len
  flops = train_flops_per_token(cfg, a.seq_len) * n_tok
  print(json.dumps({
      "config": vars(a), "devices": jax.device_count(), "backend": jax.default_backend(),
      "tokens_per_s": n_tok / t_step, "step_time_s": t_step,
      "model_flops_per_step": flops, "matmul_flops_per_s": peak,
      "mfu_cpu": flops / t_step / peak,
      "fraction_forward": t_fwd / t_step, "fraction_forward_backward": t_grad / t_step,
      "fraction_optimizer_and_guard": (t_step - t_grad) / t_step,
      "mfu_forward_only": flops / 3 / t_fwd / peak,
      "spread": {k: [min(v), max(v)] for k, v in rounds.items()},
  }, indent=1))


if __name__ == "__main__":
  main()
