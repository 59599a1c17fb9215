"""GLM train-step throughput on this machine, as ratios measured in one process.

  python experiments/bench/glm_step.py [--preset quick] [--d_model 512 --num_layers 2 ...]

The shape is a glm/pretrain preset's (default: quick, the shape the quick run reports `mfu_cpu`
for), any flag overriding it. Prints JSON: tokens/s of the jitted train step (timed as the train
loop times it: the next step dispatched before the previous one is waited for), its model FLOP/s
(6 x matmul params + attention, per token), this machine's peak matmul FLOP/s measured as the quick
run measures it (`core.flops.measure_peak_matmul_flops`: the best of 5 rounds over the preset's
sizes before the timings and 5 after, pooled), their ratio `mfu_cpu` and its range
`mfu_cpu_spread`, which the quick run also reports (`core.flops.mfu_spread`: the step time's
interquartile range, the peak from its median round to its best); then where the time goes:
forward only, forward + backward, and the full step (optimizer update, the non-finite guard), each
as a fraction of the full step (those two timed waiting on each call, the step as the loop does:
the fractions carry the difference). With torch installed, the same model in PyTorch eager
(`glm_torch.py`), and with `--torch_compile 1` its loss under `torch.compile` too.
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxpapers.core import config as cfglib
from jaxpapers.core.flops import measure_peak_matmul_flops, median_time, mfu_spread
from jaxpapers.core.train import TrainState, make_optimizer, make_train_step
from jaxpapers.glm.evaluate import loss_fn, token_nll
from jaxpapers.glm.model import GLM, GLMConfig, train_flops_per_token
from jaxpapers.glm.objective import BatchSampler, SpecialIds


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--preset", default="quick", help="glm/pretrain preset whose shape is measured")
  for flag in ("d_model", "num_layers", "num_heads", "vocab", "seq_len", "batch", "remat"):
    ap.add_argument(f"--{flag}", type=int, default=None, help="overrides the preset")
  ap.add_argument("--reps", type=int, default=4)
  ap.add_argument("--torch", type=int, default=1,
                  help="1: also time the same model in PyTorch eager (glm_torch.py) when torch is "
                       "installed; it is not a dependency of the project")
  ap.add_argument("--torch_compile", type=int, default=0,
                  help="1: also time it with the loss under torch.compile (inductor; its compile "
                       "takes minutes on this CPU)")
  a = ap.parse_args()
  c = cfglib.load_config_file(Path(__file__).parents[2] / "jaxpapers/configs/glm/pretrain.py",
                              None if a.preset == "default" else a.preset)
  preset = dict(d_model=c.model.d_model, num_layers=c.model.num_layers,
                num_heads=c.model.num_heads, vocab=c.data.vocab_size, seq_len=c.objective.seq_len,
                batch=c.train.batch, remat=int(c.model.remat))
  for k, v in preset.items():
    if getattr(a, k) is None:
      setattr(a, k, v)
  cfg = GLMConfig(vocab_size=a.vocab, num_layers=a.num_layers, d_model=a.d_model,
                  num_heads=a.num_heads, dropout=0.0, remat=bool(a.remat))
  model = GLM(cfg, rngs=nnx.Rngs(params=0))
  # biases and norms away from their 0 / 1 init, so that comparing with PyTorch checks them too
  noise = np.random.default_rng(1)
  for n in ("bq", "bk", "bv", "bo", "b_in", "b_out", "ln1_scale", "ln1_bias", "ln2_scale",
            "ln2_bias", "final_scale", "final_bias"):
    v = getattr(model, n)
    v.set_value(v.get_value() + 0.1 * noise.standard_normal(v.get_value().shape, np.float32))
  ids = SpecialIds(pad=0, mask=1, gmask=2, sop=3, eop=4)
  tokens = np.random.default_rng(0).integers(5, a.vocab, 200_000).astype(np.int32)
  batch = BatchSampler(tokens, ids, seq_len=a.seq_len, batch=a.batch, seed=0, gmask_prob=0.7,
                       mask_ratio=0.15, span_lambda=3.0, two_d=False)(0)
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  t = ml_collections.ConfigDict(dict(steps=1000, lr=1e-3, warmup=10.0, end_lr_ratio=0.1, weight_decay=0.1,
                                     b1=0.9, b2=0.95, eps=1e-8, clip=1.0))
  tx = make_optimizer(t)
  graphdef, params = nnx.split(model, nnx.Param)
  own = jax.tree.map(jnp.copy, params)      # the step donates its state, as the train loop does
  holder = [TrainState(step=jnp.int32(0), params=own, opt_state=tx.init(own),
                       rng=jax.random.key_data(jax.random.key(0)))]
  # the loss the glm/pretrain run trains with (its text_loss metric included)
  step = jax.jit(make_train_step(graphdef, functools.partial(loss_fn, eop=ids.eop), tx),
                 donate_argnums=0)

  def train_step():
    holder[0], m = step(holder[0], batch, one)
    return m["loss"]
  one = jnp.float32(1.0)
  fwd = jax.jit(lambda p, b: token_nll(nnx.merge(graphdef, p), b)[0].sum())
  grad = jax.jit(jax.grad(lambda p, b: loss_fn(nnx.merge(graphdef, p), b, None)[0]))
  peak = measure_peak_matmul_flops(tuple(c.eval.peak_sizes), c.eval.peak_rounds)
  torch_steps, torch_out = _torch_steps(a, cfg, model, batch, t, grad(params, batch))
  # interleaved rounds, medians of each: the machine is shared and its speed drifts
  rounds = {"step": [], "fwd": [], "grad": []} | {k: [] for k in torch_steps}
  step_times = []     # every timed step, for mfu_cpu's spread
  for _ in range(3):
    rounds["step"].append(_loop_step_time(train_step, a.reps, step_times))
    rounds["fwd"].append(median_time(fwd, params, batch, reps=a.reps))
    rounds["grad"].append(median_time(grad, params, batch, reps=a.reps))
    for k, fn in torch_steps.items():
      rounds[k].append(median_time(fn, reps=a.reps))
  # the peak before and after the timings, pooled, as the glm/pretrain run measures it
  peak = measure_peak_matmul_flops(tuple(c.eval.peak_sizes), c.eval.peak_rounds, earlier=peak)
  t_step, t_fwd, t_grad = (statistics.median(rounds[k]) for k in ("step", "fwd", "grad"))
  n_tok = a.batch * a.seq_len
  flops = train_flops_per_token(cfg, a.seq_len) * n_tok
  for k in torch_steps:
    t_k = statistics.median(rounds[k])
    torch_out[f"{k}_tokens_per_s"] = n_tok / t_k
    torch_out[f"jax_over_{k}"] = t_k / t_step       # > 1: the JAX step is faster
  print(json.dumps({
      "config": vars(a), "devices": jax.device_count(), "backend": jax.default_backend(),
      "tokens_per_s": n_tok / t_step, "step_time_s": t_step,
      "model_flops_per_step": flops, "matmul_flops_per_s": peak["peak"],
      "matmul_flops_per_s_spread": peak["spread"], "matmul_best_size": peak["best_size"],
      "mfu_cpu": flops / t_step / peak["peak"],
      "mfu_cpu_spread": mfu_spread(flops, step_times, peak),
      "fraction_forward": t_fwd / t_step, "fraction_forward_backward": t_grad / t_step,
      "fraction_optimizer_and_guard": (t_step - t_grad) / t_step,
      "mfu_forward_only": flops / 3 / t_fwd / peak["peak"],
      "spread": {k: [min(v), max(v)] for k, v in rounds.items()},
      "torch": torch_out,
  }, indent=1))


def _loop_step_time(train_step, reps: int, times: list) -> float:
  """Median seconds per step timed as the train loop (`core.train`) times them: step s+1 is
  dispatched before step s is waited for, and a step's time runs from the previous step's
  completion to its own. The `reps` times are appended to `times`."""
  jax.block_until_ready(train_step())
  pending, done, own = train_step(), None, []
  for _ in range(reps + 1):
    nxt = train_step()
    jax.block_until_ready(pending)
    now = time.perf_counter()
    if done is not None:
      own.append(now - done)
    done, pending = now, nxt
  jax.block_until_ready(pending)
  times.extend(own)
  return statistics.median(own)


def _torch_steps(a, cfg, model, batch, t, jax_grads) -> tuple[dict, dict]:
  """({name: zero-argument train step}, facts) for PyTorch eager on the same
  weights and batch; the two frameworks' losses and gradients at those weights are compared
  (`grad_max_rel_diff`: the largest over parameters of max |g_torch - g_jax| / max |g_jax|)."""
  import importlib.util
  if not a.torch or importlib.util.find_spec("torch") is None:
    return {}, {"skipped": "torch is not installed" if a.torch else "--torch 0"}
  import torch
  import glm_torch   # noqa: PLC0415 (next to this script)
  names = GLM.LAYER_PARAMS + ("embed", "final_scale", "final_bias")
  weights = {n: np.asarray(getattr(model, n).get_value()) for n in names}
  tm = glm_torch.TorchGLM(cfg, weights)
  tb = glm_torch.to_torch(jax.device_get(batch))
  jax_loss = float(loss_fn(model, batch, None)[0])
  loss = tm.loss(tb)
  torch_loss = float(loss.detach())
  loss.backward()
  tg = glm_torch.grads_in_jax_layout(tm)
  jg = {n: np.asarray(jax_grads[n].get_value()) for n in names}
  rel = {n: float(np.abs(tg[n] - jg[n]).max() / np.abs(jg[n]).max()) for n in names}
  tm.zero_grad(set_to_none=True)
  steps = {"torch_eager": glm_torch.make_step(tm, t)}
  if a.torch_compile:      # its own copy of the weights: the two steps update their own
    tc = glm_torch.TorchGLM(cfg, weights)
    steps["torch_compile"] = glm_torch.make_step(tc, t, compiled=True)
    out_compile = float(steps["torch_compile"](tb).detach())     # compiles; the first step's loss
  out = {"version": torch.__version__, "threads": torch.get_num_threads(),
         **({"loss_torch_compile": out_compile} if a.torch_compile else {}),
         "loss_jax": jax_loss, "loss_torch": torch_loss,
         "loss_rel_diff": abs(jax_loss - torch_loss) / abs(jax_loss),
         "grad_max_rel_diff": max(rel.values()), "grad_worst_param": max(rel, key=rel.get)}
  return {k: (lambda f=f: float(f(tb).detach())) for k, f in steps.items()}, out


if __name__ == "__main__":
  main()
