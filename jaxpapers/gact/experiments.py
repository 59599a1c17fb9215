"""`jaxpapers run gact/memory`: GACT levels on the paper's three model families (GACT §6, Tables
2-4 style): the transformer family here (a GLM layer stack), the CNN and GNN families in
`gact.block_families`.

For each level (L0 = the framework's most memory-frugal uncompressed layout: the layer stack of
the compressed levels with every input kept in FP32, `compressed_stack([32] * L)`: one scan
saving each layer's input, recomputing each layer in the backward, every layer and the tied
head over in-place micro-batches of `model.layer_chunk` / `head_chunk` sequences; L1/L1.1/L1.2
fixed 4/8/2 bits; L2/L2.1/L2.2 adaptive with average 4/3/2 bits) and two uncompressed references,
GLM's own remat path ("remat": layers scanned under `jax.checkpoint`, micro-batched) and no
remat or micro-batches ("plain"): the same GLM, data and seed trained for the same steps;
held-out loss; activation memory = XLA's compiled temp bytes of the whole train step (AdamW
included) at `memory_batch` minus the same at batch 1 (the acceptance measure), and the marginal
bytes of `memory_batch` more sequences (temp bytes at 2 x `memory_batch` minus at
`memory_batch`), which no reuse of the batch-1 temporaries hides; the largest batch under a fixed
budget (the L0 step's temp bytes at `budget_batch`), found by search over compiled steps at
multiples of the micro-batch; median step time. Compression runs in
"recompute" mode: each layer saves only its compressed input and recomputes itself in the
backward (GACT combined with checkpointing), all layers in one `gact.stack.compressed_stack`;
adaptive levels allocate one width per layer from GACT's sensitivity estimate, re-estimated every
`adapt_interval` steps.
"""
from __future__ import annotations

import logging
import math
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxpapers.core import config as cfglib
from jaxpapers.core.errors import ConfigError
from jaxpapers.core.report import Report, Row, fmt, plot_curves, write_report
from jaxpapers.core.train import TrainState, make_optimizer, make_train_step
from jaxpapers.gact import adaptive, block_families
from jaxpapers.gact.adaptive import REFERENCE_LEVELS
from jaxpapers.gact.measure import max_batch, temp_probe
from jaxpapers.gact.stack import compressed_stack
from jaxpapers.gact.wrapper import compress_block, probe_block

log = logging.getLogger("jaxpapers")

FAMILIES = ("transformer", "cnn", "gnn")
BLOCK_FAMILIES = {"cnn": ("ResNet on Fashion-MNIST", block_families.cnn_spec),
                  "gnn": ("GCN on WordNet lexnames", block_families.gnn_spec)}
PAPER = {"memory_ratio": "up to 8.1x (L2.2 vs FP, §6)", "max_batch": "4.2x-24.7x",
         "accuracy": "within 0.5 points (L2, L2.2 ~0.1-1)"}


def validate(c: ml_collections.ConfigDict) -> None:
  for name in c.levels:
    if name not in REFERENCE_LEVELS:
      adaptive.get_level(name)
  for fam in c.families:
    if fam not in FAMILIES:
      raise ConfigError(f"unknown family {fam!r}; use one of {', '.join(FAMILIES)}")
  for key in ("train.steps", "train.batch", "budget_batch", "memory_batch", "adapt_interval",
              "probe_batch"):
    cfglib.check(c, key, lambda v: isinstance(v, int) and v > 0, "a positive int")
  cfglib.check(c, "mode", lambda v: v in ("recompute", "residuals"), "'recompute' or 'residuals'")
  cfglib.check(c, "gnn.layout", lambda v: v in ("stack", "blocks"), "'stack' or 'blocks'")
  if c.mode == "residuals" and any(adaptive.LEVELS[n].adaptive for n in c.levels
                                   if n not in REFERENCE_LEVELS):
    raise ConfigError("mode 'residuals' on the GLM stack takes one width for every layer; use mode "
                      "'recompute' with the adaptive levels (L2, L2.1, L2.2)")
  if "transformer" in c.families:     # the corpus itself (its tokens), before anything is written
    from jaxpapers.glm import data as glmdata
    glmdata.check_tokens(c.data.corpus, c.data.vocab_size, 0.05, c.seq_len)


# --- GLM on the Austen blank-infilling task (composition: GLM is another paper's model) --------

def _glm_parts(c, workdir):
  from jaxpapers.glm import data as glmdata
  from jaxpapers.glm import evaluate as ev
  from jaxpapers.glm.model import GLM, GLMConfig, head_loss
  from jaxpapers.glm.objective import BatchSampler
  corpus = glmdata.prepare(c.data.corpus, c.data.vocab_size, 0.05, workdir, c.seq_len)
  cfg = GLMConfig(vocab_size=corpus.vocab_size, dropout=0.0, remat=True, **c.model.to_dict())
  model = GLM(cfg, rngs=nnx.Rngs(params=c.seed))

  def sampler(batch):
    return BatchSampler(corpus.train, corpus.ids, seq_len=c.seq_len, batch=batch, seed=c.seed,
                        gmask_prob=0.7, mask_ratio=0.15, span_lambda=3.0, two_d=False)   # GLM §2.1

  val = ev.ppl_set(corpus.val, corpus.ids, c.seq_len, c.eval_samples, 32, False)

  def loss_fn_for(hooks: dict):
    """The loss with GLM's layer hooks (`layer_wrapper` / `layer_stack`, see GLM.__call__)."""
    def loss_fn(model, batch, key):
      h = model(batch["tokens"], batch["positions"], batch["context_len"], dropout_key=key,
                return_hidden=True, **hooks)
      w = batch["weights"]
      return head_loss(model, h, batch["targets"], w, c.head_chunk) / jnp.maximum(w.sum(), 1.0), {}
    return loss_fn

  def held_out(model):
    tot = ev.evaluate(model, val, corpus.ids.eop)
    return tot["nll"] / tot["n"]

  return model, sampler, loss_fn_for, held_out


def _hooks_for(level: str, bits_per_layer, mode: str) -> dict:
  """GLM's layer hooks for a level: "remat" / "plain" none (GLM's scan under jax.checkpoint / a
  model without remat); mode "recompute": one compressed_stack with a width per layer, L0 the
  same stack at 32 bits (every input kept in FP32: exactly the uncompressed computation);
  mode "residuals": L0 none, levels compress_block around every layer (one width)."""
  if level in REFERENCE_LEVELS:
    return {}
  if mode == "recompute":
    return {"layer_stack": compressed_stack([32] * len(bits_per_layer) if level == "L0"
                                            else bits_per_layer)}
  if level == "L0":
    return {}
  if len(set(bits_per_layer)) != 1:
    raise ConfigError("mode 'residuals' on the GLM stack takes one width for every layer; "
                      "use mode 'recompute' for the adaptive levels")
  b = int(bits_per_layer[0])
  return {"layer_wrapper": lambda fn: compress_block(fn, b, "residuals")}


def run(c: ml_collections.ConfigDict, workdir: str, command: str) -> dict:
  validate(c)
  wd = Path(workdir)
  results = {}
  if "transformer" in c.families:
    results.update(transformer_family(c, wd))
  for fam in ("cnn", "gnn"):
    if fam in c.families:
      k = c[fam]
      run_family = (block_families.stack_family if k.get("layout", "blocks") == "stack"
                    else block_families.block_family)
      out = run_family(fam, k, c.levels, c.seed, BLOCK_FAMILIES[fam][1](k, c.seed))
      _ratios(out["levels"], "acc")
      results[fam] = out
  _report(wd, command, c, results)
  return results


def _ratios(levels: dict, quality: str) -> None:
  ref = levels.get("L0")
  if not ref:
    return
  for r in levels.values():
    r["memory_ratio"] = ref["act_bytes"] / max(r["act_bytes"], 1)
    if "act_bytes_marginal" in r:
      r["memory_ratio_marginal"] = ref["act_bytes_marginal"] / max(r["act_bytes_marginal"], 1)
    r["max_batch_ratio"] = r["max_batch"] / ref["max_batch"]
    r["step_time_ratio"] = r["step_time"] / ref["step_time"]
    if quality == "loss":
      r["loss_rel_change"] = r["loss"] / ref["loss"] - 1.0
    else:
      r["acc_change"] = r["acc"] - ref["acc"]


def transformer_family(c, wd: Path) -> dict:
  """Levels on a scanned GLM stack (see the module docstring)."""
  model, sampler, loss_fn_for, held_out = _glm_parts(c, wd)
  graphdef, params0 = nnx.split(model, nnx.Param)
  tx = make_optimizer(c.train)
  L = model.cfg.num_layers
  train_sampler = sampler(c.train.batch)
  probe_sampler = sampler(c.probe_batch)
  probe_grad = _probe_grad(graphdef, loss_fn_for)
  example = lambda b: {k: jnp.asarray(v) for k, v in sampler(b)(0).items()}
  results = {"levels": {}, "model": {"num_layers": L, "d_model": model.cfg.d_model,
                                      "seq_len": c.seq_len, "batch": c.train.batch}}
  budget = None
  for level in c.levels:
    lv = adaptive.get_level(level) if level not in REFERENCE_LEVELS else None
    log.info("GACT level %s", level)
    state = TrainState(step=jnp.int32(0), params=params0, opt_state=jax.jit(tx.init)(params0),
                       rng=jax.random.key_data(jax.random.key(c.seed)))
    bits = [int(lv.bits)] * L if lv is not None and lv.bits is not None and not lv.adaptive else None
    alloc_history, losses, times, steps = [], [], [], {}
    for start in range(0, c.train.steps, c.adapt_interval):
      if lv is not None and lv.adaptive:
        probe = {k: jnp.asarray(v) for k, v in probe_sampler(start).items()}
        sens = adaptive.probe_sensitivities(probe_grad, state.params, probe, L, c.seed + start)
        sizes = [1] * L            # every layer input has the same size
        bits = list(adaptive.allocate_bits(sens, sizes, lv.bits))
        alloc_history.append({"step": start, "sensitivity": sens, "bits": bits})
      key = tuple(bits or ())
      if key not in steps:      # a new allocation is a new compiled step
        loss_fn = loss_fn_for(_hooks_for(level, bits or [32] * L, c.mode))
        gd = graphdef if level != "plain" else nnx.split(_no_remat(model), nnx.Param)[0]
        steps[key] = (jax.jit(make_train_step(gd, loss_fn, tx)), loss_fn, gd)
      step, loss_fn, gd = steps[key]
      for i in range(start, min(c.train.steps, start + c.adapt_interval)):
        batch = {k: jnp.asarray(v) for k, v in train_sampler(i).items()}
        t0 = time.perf_counter()
        state, m = step(state, batch, jnp.float32(1.0))
        loss = float(m["loss"])
        times.append(time.perf_counter() - t0)
        losses.append(loss)
    gd_final = gd
    trained = nnx.merge(gd_final, state.params)
    val_loss = held_out(trained)
    temp_at = temp_probe(gd_final, loss_fn, tx, params0, example)
    t_b, t_1, t_2b = temp_at(c.memory_batch), temp_at(1), temp_at(2 * c.memory_batch)
    if budget is None:   # the budget: the first level's (L0's) step at budget_batch
      budget = temp_at(c.budget_batch)
    mb = max_batch(temp_at, budget, c.memory_batch, c.max_batch_limit,
                   multiple=math.lcm(max(1, c.model.get("layer_chunk", 0)), max(1, c.head_chunk)))
    results["levels"][level] = {
        "loss": val_loss, "train_loss_last": float(np.mean(losses[-max(1, len(losses) // 10):])),
        "act_bytes": t_b - t_1, "act_bytes_marginal": t_2b - t_b, "temp_bytes": t_b,
        "temp_bytes_batch1": t_1, "max_batch": mb,
        "temp_bytes_probed": {str(b): v for b, v in sorted(temp_at.probed.items())},
        "step_time": statistics.median(times[1:] if len(times) > 1 else times),
        "bits": bits, "allocations": alloc_history, "losses": losses}
    log.info("%s: held-out loss %.4f, act %.1f MiB (marginal %.1f MiB), max batch %d, step %.3fs",
             level, val_loss, (t_b - t_1) / 2**20, (t_2b - t_b) / 2**20, mb,
             results["levels"][level]["step_time"])
  results["budget_bytes"] = budget
  _ratios(results["levels"], "loss")
  if "L0" in results["levels"] and "L2.2" in results["levels"]:
    top = results["levels"]["L2.2"]
    results.update({"memory_ratio_L2.2": top["memory_ratio"],
                    "memory_ratio_marginal_L2.2": top["memory_ratio_marginal"],
                    "max_batch_ratio_L2.2": top["max_batch_ratio"],
                    "step_time_ratio_L2.2": top["step_time_ratio"],
                    "residual_ratio_L2.2": _residual_ratio(top["bits"], c.mode)})
    for ref in REFERENCE_LEVELS:
      if ref in results["levels"]:
        results[f"memory_ratio_L2.2_vs_{ref}"] = (results["levels"][ref]["act_bytes"]
                                                  / max(top["act_bytes"], 1))
        results[f"memory_ratio_marginal_L2.2_vs_{ref}"] = (
            results["levels"][ref]["act_bytes_marginal"] / max(top["act_bytes_marginal"], 1))
  return results


def _no_remat(model):
  import dataclasses
  m = nnx.clone(model)
  m.cfg = dataclasses.replace(model.cfg, remat=False, layer_chunk=0)
  return m


def _residual_ratio(bits, mode) -> float:
  """Bytes saved per layer input, compressed / FP32 (codes + min and scale per 256-group)."""
  from pallas_kernels.act_compress import GROUP
  return float(np.mean([(GROUP * b / 8 + 8) / (GROUP * 4) for b in bits]))


def _probe_grad(graphdef, loss_fn_for):
  """The gradient with traced per-layer widths (`probe_block`), compiled once per run: the probe
  batch is an argument, so every re-estimate reuses it."""
  @jax.jit
  def grad(params, bits, seed, batch):
    loss_fn = loss_fn_for({"layer_wrapper": probe_block(bits)})
    key = jax.random.fold_in(jax.random.key(0), seed)
    return jax.grad(lambda p: loss_fn(nnx.merge(graphdef, p), batch, key)[0])(params)
  return grad


def _report(wd: Path, command: str, c, r: dict) -> None:
  lv = r.get("levels", {})
  MiB = lambda b: f"{b / 2**20:.1f} MiB"
  rows = []
  for fam, (what, _) in BLOCK_FAMILIES.items():
    if fam not in r or "L0" not in r[fam]["levels"]:
      continue
    for name, x in r[fam]["levels"].items():
      if name != "L0":
        rows.append(Row(f"{fam.upper()} {name}: activation memory / max batch / accuracy vs L0",
                        "8.1x / 4.2-24.7x / within 0.5 points", f"{x['memory_ratio']:.2f}x / "
                        f"{x['max_batch_ratio']:.2f}x / {100 * x['acc_change']:+.1f} pts",
                        "n/a", f"{what}, batch {c[fam].memory_batch}; step time "
                        f"{x['step_time_ratio']:.2f}x"))
  if "L2.2" in lv and "L0" in lv:
    top = lv["L2.2"]
    rows += [
        Row(f"activation memory L0 / L2.2 (XLA temp bytes, batch {c.memory_batch} − batch 1)", PAPER["memory_ratio"],
            f"{top['memory_ratio']:.2f}x", "reproduced" if top["memory_ratio"] >= 8 else "not reproduced",
            f"L0 = {'the same stack with FP32 inputs' if c.mode == 'recompute' else 'remat scan'} "
            f"{MiB(lv['L0']['act_bytes'])}; L2.2 "
            f"{MiB(top['act_bytes'])}" + "".join(
                f"; {ref} {MiB(lv[ref]['act_bytes'])} ({r[f'memory_ratio_L2.2_vs_{ref}']:.1f}x L2.2)"
                for ref in REFERENCE_LEVELS if ref in lv)),
        Row(f"activation memory L0 / L2.2, marginal (batch {2 * c.memory_batch} − {c.memory_batch})",
            PAPER["memory_ratio"], f"{top['memory_ratio_marginal']:.2f}x",
            "reproduced" if top["memory_ratio_marginal"] >= 8 else "not reproduced",
            f"L0 {MiB(lv['L0']['act_bytes_marginal'])}; L2.2 {MiB(top['act_bytes_marginal'])}: no "
            "reuse of the batch-1 temporaries in this difference"),
        Row("max batch under the same budget, L2.2 / L0", PAPER["max_batch"],
            f"{top['max_batch_ratio']:.2f}x", "reproduced" if top["max_batch_ratio"] >= 4 else "not reproduced",
            f"budget {MiB(r['budget_bytes'])} (L0's step at batch {c.budget_batch}); "
            f"L0 {lv['L0']['max_batch']}, L2.2 {top['max_batch']}"),
        Row("held-out loss change L2.2 vs L0 (equal steps)", PAPER["accuracy"],
            f"{100 * top['loss_rel_change']:+.2f}%", "reproduced" if abs(top["loss_rel_change"]) <= 0.01 else "not reproduced",
            f"{fmt(top['loss'])} vs {fmt(lv['L0']['loss'])} nats"),
        Row("step time L2.2 / L0", "≤ 1.5x (ours: the acceptance bound)", f"{top['step_time_ratio']:.2f}x",
            "reproduced" if top["step_time_ratio"] <= 1.5 else "not reproduced", "median step, same process"),
    ]
  table = ["| level | held-out loss | act memory | vs L0 | marginal act memory | vs L0 | max batch | "
           "step time | bits per layer |", "|---|---|---|---|---|---|---|---|---|"]
  for name, x in lv.items():
    table.append(f"| {name} | {x['loss']:.4f} | {MiB(x['act_bytes'])} | {x.get('memory_ratio', 1):.2f}x | "
                 f"{MiB(x['act_bytes_marginal'])} | {x.get('memory_ratio_marginal', 1):.2f}x | "
                 f"{x['max_batch']} | {1e3 * x['step_time']:.0f} ms | {x['bits'] or '32 (FP32)'} |")
  plots = []
  if "L2.2" in lv and lv["L2.2"]["allocations"]:
    last = lv["L2.2"]["allocations"][-1]
    plots.append((plot_curves(wd, "bits_L2.2.png",
                              [("bits", list(range(len(last["bits"]))), last["bits"]),
                               ("log10 C_l", list(range(len(last["sensitivity"]))),
                                [float(np.log10(max(s, 1e-30))) for s in last["sensitivity"]])],
                              ylabel="bits / log10 sensitivity"),
                  f"L2.2: bits per layer input chosen at step {last['step']} and GACT's sensitivity"))
  if lv:
    series = [(name, list(range(len(x["losses"]))), x["losses"]) for name, x in lv.items()]
    plots.append((plot_curves(wd, "loss.png", series, ylabel="train loss (nats)"),
                  "transformer: train loss per level"))
  sections = [("Transformer levels (same data, seed and steps)", "\n".join(table))] if lv else []
  for fam, (what, _) in BLOCK_FAMILIES.items():
    if fam not in r:
      continue
    ct = ["| level | test accuracy | act memory | vs L0 | max batch | step time | bits (size-weighted mean) |",
          "|---|---|---|---|---|---|---|"]
    for name, x in r[fam]["levels"].items():
      mb = "32 (FP32)" if not x["bits"] else f"{x['avg_bits']:.2f}"
      ct.append(f"| {name} | {100 * x['acc']:.1f}% | {MiB(x['act_bytes'])} | {x.get('memory_ratio', 1):.2f}x | "
                f"{x['max_batch']} | {1e3 * x['step_time']:.0f} ms | {mb} |")
    sections.append((f"{fam.upper()} levels ({what}, memory at batch {c[fam].memory_batch})", "\n".join(ct)))
    if "L2.2" in r[fam]["levels"] and r[fam]["levels"]["L2.2"]["allocations"]:
      a = r[fam]["levels"]["L2.2"]["allocations"][-1]
      plots.append((plot_curves(wd, f"{fam}_bits_L2.2.png", [("bits", list(range(len(a["bits"]))), a["bits"])],
                                xlabel="saved tensor (block order)", ylabel="bits"),
                    f"{fam.upper()} L2.2: bits per saved tensor chosen at step {a['step']}"))
  rep = Report(title="GACT activation-compressed training (arXiv 2206.11357)",
               command=command, rows=rows, plots=plots, sections=sections)
  write_report(wd, rep, r)
