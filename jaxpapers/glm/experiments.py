"""`jaxpapers run glm/pretrain`: GLM pretraining, evaluation, samples and a report."""
from __future__ import annotations

import functools
import logging
import math
import statistics
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx

from jaxpapers.core import config as cfglib
from jaxpapers.core.errors import ConfigError
from jaxpapers.core.flops import measure_peak_matmul_flops, mfu_spread
from jaxpapers.core.mesh import make_mesh
from jaxpapers.core.report import Report, Row, fmt, plot_curves, write_report
from jaxpapers.core.train import train, validate_train
from jaxpapers.data.text import unigram_entropy
from jaxpapers.glm import data as glmdata
from jaxpapers.glm import evaluate as ev
from jaxpapers.glm.generate import complete, generate_blank, prompt_context
from jaxpapers.glm.model import GLM, GLMConfig, train_flops_per_token
from jaxpapers.glm.objective import BatchSampler

log = logging.getLogger("jaxpapers")

BATCH_AXES = {"tokens": ("batch", "length"), "targets": ("batch", "length"),
              "weights": ("batch", "length"), "context_len": ("batch",),
              "positions": ("batch", "length")}            # 1-D positions: [B, T]
BATCH_AXES_2D = dict(BATCH_AXES, positions=("batch", None, "length"))   # 2-D: [B, 2, T]


def validate(c: ml_collections.ConfigDict) -> None:
  pos_int = lambda v: isinstance(v, int) and v > 0
  for key in ("model.num_layers", "model.d_model", "model.num_heads", "objective.seq_len",
              "train.steps", "train.batch", "train.grad_accum", "train.log_every", "data.vocab_size",
              "eval.batch"):
    cfglib.check(c, key, pos_int, "a positive int")
  cfglib.check(c, "model.d_model", lambda v: v % c.model.num_heads == 0, "divisible by model.num_heads")
  cfglib.check(c, "model.d_model", lambda v: (v // c.model.num_heads) % (4 if c.model.positions == "2d" else 2) == 0,
               "such that d_model / num_heads is even (a multiple of 4 for 2-D positions: RoPE rotates pairs)")
  cfglib.check(c, "model.ffn_dim", lambda v: isinstance(v, int) and v >= 0, "a non-negative int (0: 8/3 d_model)")
  cfglib.check(c, "objective.span_lambda", lambda v: v > 0, "positive")
  for key in ("eval.ppl_samples", "eval.blank_samples", "eval.last_word_samples", "eval.peak_rounds",
              "train.keep", "generate.max_new_tokens", "generate.top_k"):
    cfglib.check(c, key, pos_int, "a positive int")
  cfglib.check(c, "eval.peak_sizes", lambda v: len(v) > 0 and all(pos_int(n) for n in v),
               "a non-empty tuple of positive ints (matmul sizes)")
  cfglib.check(c, "train.warmup", lambda v: v >= 0, "non-negative (a fraction of steps if < 1, else steps)")
  cfglib.check(c, "generate.top_p", lambda v: 0.0 < v <= 1.0, "in (0, 1]")
  cfglib.check(c, "model.positions", lambda v: v in ("1d", "2d"), "'1d' or '2d'")
  cfglib.check(c, "model.dropout", lambda v: 0.0 <= v < 1.0, "in [0, 1)")
  cfglib.check(c, "objective.mask_ratio", lambda v: 0.0 < v < 0.5, "in (0, 0.5)")
  cfglib.check(c, "objective.gmask_prob", lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
  cfglib.check(c, "objective.seq_len", lambda v: v >= 16, "at least 16")
  cfglib.check(c, "data.vocab_size", lambda v: v >= 300, "at least 300 (256 bytes + specials)")
  cfglib.check(c, "data.val_fraction", lambda v: 0.0 < v < 0.5, "in (0, 0.5)")
  validate_train(c)
  cfglib.check(c, "train.on_nonfinite", lambda v: v in ("skip", "stop"), "'skip' or 'stop'")
  cfglib.check(c, "train.batch", lambda v: v % c.train.grad_accum == 0, "divisible by train.grad_accum")
  cfglib.check(c, "generate.strategy", lambda v: v in ("greedy", "sample", "top_k", "top_p"),
               "one of greedy, sample, top_k, top_p")
  cfglib.check(c, "generate.temperature", lambda v: math.isfinite(v) and v > 0, "a finite positive number")
  # the inputs a run reads and the devices it needs, before anything is written
  make_mesh(c.mesh.shape, c.mesh.axes)
  glmdata.check_tokens(c.data.corpus, c.data.vocab_size, c.data.val_fraction, c.objective.seq_len)
  tok = glmdata.check_tokenizer(c.data.corpus, c.data.vocab_size, c.data.val_fraction)
  for prompt in c.generate.prompts:     # the samples at the end of the run fit the context
    mode = "mask" if "[MASK]" in prompt else "gmask"
    try:
      prompt_context(tok, prompt, glmdata.special_ids(tok), mode, c.objective.seq_len)
    except ValueError as e:
      raise ConfigError(f"--config.generate.prompts: {prompt[:40]!r}...: {e}") from None


def model_config(c: ml_collections.ConfigDict, vocab_size: int) -> GLMConfig:
  return GLMConfig(vocab_size=vocab_size, **c.model.to_dict())


def build(c: ml_collections.ConfigDict, workdir: str | Path):
  """(corpus, model) of a run: the model is freshly initialised from c.seed."""
  corpus = glmdata.prepare(c.data.corpus, c.data.vocab_size, c.data.val_fraction, workdir,
                           c.objective.seq_len)
  model = GLM(model_config(c, corpus.vocab_size), rngs=nnx.Rngs(params=c.seed))
  return corpus, model


def pretrain(c: ml_collections.ConfigDict, workdir: str, command: str) -> dict:
  validate(c)
  corpus, model = build(c, workdir)
  o, t = c.objective, c.train
  two_d = c.model.positions == "2d"
  mesh = make_mesh(c.mesh.shape, c.mesh.axes)
  sampler = BatchSampler(corpus.train, corpus.ids, seq_len=o.seq_len, batch=t.batch, seed=c.seed,
                         gmask_prob=o.gmask_prob, mask_ratio=o.mask_ratio,
                         span_lambda=o.span_lambda, two_d=two_d)
  e = c.eval
  ppl_b = ev.ppl_set(corpus.val, corpus.ids, o.seq_len, e.ppl_samples, e.batch, two_d)
  blank_b = ev.blank_set(corpus.val, corpus.ids, o.seq_len, e.blank_samples, e.batch, two_d)
  last_b = ev.last_word_set(corpus.val_text, corpus.tokenizer, corpus.ids, o.seq_len,
                            e.last_word_samples, e.batch, two_d)

  def run_eval(m, step=None):
    return ev.summarize(ev.evaluate(m, ppl_b, corpus.ids.eop), ev.evaluate(m, blank_b, corpus.ids.eop),
                        ev.evaluate(m, last_b, corpus.ids.eop) if last_b else None)

  peak = measure_peak_matmul_flops(tuple(e.peak_sizes), e.peak_rounds)   # before training ...
  loss_fn = functools.partial(ev.loss_fn, eop=corpus.ids.eop)   # + text_loss, without <eop>
  outcome = train(cfg=c, workdir=workdir, model=model, loss_fn=loss_fn, get_batch=sampler,
                  mesh=mesh, batch_logical=BATCH_AXES_2D if two_d else BATCH_AXES,
                  eval_fn=run_eval)
  trained = outcome.model()
  # ... and after it, pooled (a slow minute can hold one whole measurement)
  peak = measure_peak_matmul_flops(tuple(e.peak_sizes), e.peak_rounds, earlier=peak)
  results = run_eval(trained)
  H = unigram_entropy(corpus.train, corpus.vocab_size)
  # the training loss on text tokens (no <eop>: not text) of the last 10% of steps
  tail = [h.get("text_loss", math.nan) for h in outcome.history[-max(1, len(outcome.history) // 10):]]
  tokens_per_step = t.batch * o.seq_len
  step_time = statistics.median(outcome.step_times) if outcome.step_times else float("nan")
  flops_step = train_flops_per_token(trained.cfg, o.seq_len) * tokens_per_step
  results.update(
      final_loss=float(np.mean(tail)) if tail else float("nan"),
      unigram_entropy=H,
      tokens_per_s=tokens_per_step / step_time,
      model_flops_per_step=flops_step,
      matmul_flops_per_s=peak["peak"],
      matmul_flops_per_s_spread=peak["spread"],
      matmul_best_size=peak["best_size"],
      mfu_cpu=flops_step / step_time / peak["peak"],
      mfu_cpu_spread=(mfu_spread(flops_step, outcome.step_times, peak) if outcome.step_times
                      else [math.nan, math.nan]),
      step_time_s=step_time,
      steps=t.steps, skipped_steps=outcome.skipped_steps, resumed_from=outcome.resumed_from,
      vocab_size=corpus.vocab_size, train_tokens=int(len(corpus.train)),
      val_tokens=int(len(corpus.val)), devices=jax.device_count(),
      params=int(sum(np.size(x) for x in jax.tree.leaves(nnx.state(trained, nnx.Param)))))
  g = c.generate
  samples = []
  for prompt in g.prompts:
    mode = "mask" if "[MASK]" in prompt else "gmask"
    out = complete(trained, corpus.tokenizer, prompt, corpus.ids, mode=mode,
                   max_new_tokens=g.max_new_tokens, strategy=g.strategy, top_k=g.top_k,
                   top_p=g.top_p, temperature=g.temperature, seed=c.seed, max_len=o.seq_len)
    samples.append((mode, prompt, out))
  results["samples"] = [{"mode": m, "prompt": p, "output": s} for m, p, s in samples]
  prompt = corpus.val[:o.seq_len // 2].tolist() + [corpus.ids.gmask]   # held-out text
  results["decode_tokens_per_s"] = decode_speed(trained, prompt, corpus.ids,
                                                min(g.max_new_tokens, o.seq_len - len(prompt)))
  _report(workdir, command, c, results, outcome)
  return results


def decode_speed(model, context: list[int], ids, max_new_tokens: int, rounds: int = 3) -> float:
  """Batch-1 greedy decoding with the KV cache, in tokens per second: decode steps run (the one
  that produced <eop> counts) over wall time, prefill included, median of `rounds` after a
  warm-up run that compiles the prompt's and cache's buckets."""
  weights = model.decode_weights()
  run = lambda: generate_blank(model, context, len(context), ids, max_new_tokens=max_new_tokens,
                               counting=True, weights=weights)
  run()
  rates = []
  for _ in range(rounds):
    t0 = time.perf_counter()
    out = run()
    rates.append(min(len(out) + 1, max_new_tokens) / (time.perf_counter() - t0))
  return statistics.median(rates)


def _report(workdir, command, c, r, outcome):
  below = r["final_loss"] < r["unigram_entropy"] - 1.0
  lo, hi = r["matmul_flops_per_s_spread"]
  rows = [
      Row("final train loss (nats, text tokens) vs unigram entropy", "—",
          f"{fmt(r['final_loss'])} vs {fmt(r['unigram_entropy'])}",
          "n/a (our sanity check: held)" if below else "not met (our sanity check)",
          "no paper claim: the model learns context if its loss is at least 1 nat below the "
          "context-free entropy"),
      Row("held-out perplexity (text tokens)", "10.90 (WikiText-2, 130B)", fmt(r["val_ppl"]), "n/a",
          f"{r['params']:,}-parameter model, BPE {r['vocab_size']}, Austen; second half of "
          f"held-out windows given the first as bidirectional context; <eop> apart: "
          f"{fmt(r['val_eop_loss'])} nats"),
      Row("last-word accuracy (LAMBADA-style)", "80.2% (LAMBADA, 130B)",
          f"{100 * r.get('last_word_acc', float('nan')):.1f}%", "n/a",
          "held-out sentence-final words, greedy; scale differs by 10^4"),
      Row("blank-infilling token accuracy", "—", f"{100 * r['blank_infill_acc']:.1f}%", "n/a",
          "held-out [MASK] samples (GLM's span sampler), greedy"),
      Row("`mfu_cpu`", "— (GLM-130B's 32.5% is MFU on A100s: another quantity)",
          f"{r['mfu_cpu']:.2f}", "n/a",
          f"model FLOP/s ÷ this CPU's best measured matmul FLOP/s "
          f"({r['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s at n = {r['matmul_best_size']}; rounds "
          f"{lo / 1e9:.0f}–{hi / 1e9:.0f}); {fmt(r['tokens_per_s'])} tokens/s"),
      Row("decode speed (batch 1, greedy, KV cache)", "—",
          f"{fmt(r['decode_tokens_per_s'])} tokens/s", "n/a", "prefill included, median of 3"),
  ]
  definitions = (
      "- `final_loss`: mean training loss over the generated text tokens (the <eop> that ends "
      "each span excluded: it is not text, and the unigram entropy it is compared with is over "
      "text) of the last 10% of steps; the model trains on <eop> too (GLM §2.1).\n"
      "- `val_loss`, `val_ppl`: held-out [gMASK] windows spread evenly over all the held-out text "
      "(each novel's tail), the first half bidirectional context; mean loss per text token of the "
      "second half, and its exp. `val_eop_loss`: the windows' final <eop> alone.\n"
      "- `blank_infill_acc`: greedy token accuracy on the text tokens of held-out [MASK] samples; "
      "`last_word_acc`: the share of held-out passages whose sentence-final word (3+ letters) is "
      "predicted whole, greedily.\n"
      "- `tokens_per_s`: training tokens per median step time (steps overlap with batch building);"
      " `mfu_cpu`: 6 x parameters + attention FLOPs per token x tokens/s ÷ `matmul_flops_per_s`, "
      f"the best n x n x n matmul rate over n in {tuple(c.eval.peak_sizes)}, "
      f"{c.eval.peak_rounds} rounds before training and {c.eval.peak_rounds} after, pooled "
      "(`matmul_flops_per_s_spread`: the best size's range over the rounds); `mfu_cpu_spread`: "
      "its range within this process, from the step time's interquartile range and the peak "
      "between its median and best round (`core.flops.mfu_spread`; it does not hold the "
      "machine's drift between processes)."
      "\n- `decode_tokens_per_s`: batch-1 greedy decode steps per second with the KV cache from "
      "half a window of held-out text, prefill included, median of 3 after a warm-up.")
  hist = outcome.history
  plots = [(plot_curves(workdir, "loss.png",
                        [("train loss", [h["step"] for h in hist], [h["loss"] for h in hist]),
                         ("text tokens only", [h["step"] for h in hist],
                          [h.get("text_loss", math.nan) for h in hist])],
                        ylabel="nats / token", hlines=[("unigram entropy", r["unigram_entropy"])]),
            "blank-infilling training loss (with <eop>, and on text tokens only); dashed: "
            "unigram entropy of the corpus")]
  samples = "\n".join(f"- **{s['mode']}** `{s['prompt']}` → {s['output']!r}" for s in r["samples"])
  rep = Report(title="GLM pretraining (GLM-130B, arXiv 2210.02414)", command=command, rows=rows,
               plots=plots, sections=[("How each metric is defined", definitions),
                                      ("Samples (greedy, KV cache)", samples),
                                      ("Run", f"{r['steps']} steps, {r['train_tokens']:,} training "
                                       f"tokens, {r['devices']} device(s), resumed from step "
                                       f"{r['resumed_from']}, skipped steps {r['skipped_steps']}")])
  path = write_report(workdir, rep, r)
  log.info("report: %s", path)
