"""`jaxpapers run gact/memory`: GACT's levels on the paper's three model families (GACT §6,
Tables 2-4): a GLM transformer, a ResNet, a GCN (`gact.families`).

Per family and level (`gact.adaptive.LEVELS`; L0 = plain training, L1..L2.2 = every saved
activation compressed, `ckpt` / `*_ckpt` = checkpointed rows), one runner (`run_levels`):
- the levels in `train_levels`: train from the same initialisation and data for the same steps
  (adaptive levels: GACT's sensitivities re-estimated every `adapt_interval` steps, the first at
  step 0; one allocation unit per saved activation of every block, or per block input for
  `*_ckpt`), for `seeds` seeds at L0 and L2.2 (a seed draws the model, the data order and, for
  the GNN, the node split); held-out loss (and accuracy) of the trained model; the other levels
  are measured only (an adaptive one allocates on the initial model);
- activation memory = XLA's compiled temp bytes of the whole train step (AdamW included) at
  2 x `memory_batch` minus at `memory_batch`: the bytes `memory_batch` more samples cost, free of
  whatever a small batch's temporaries hide;
- for `executed_levels`, the largest batch under L0's temp bytes at `budget_batch` (predicted
  from the two measured sizes, checked by compiling it), then **executed**: `executed_steps`
  training steps at that batch in a child process whose peak RSS is recorded
  (`gact.run_batch`); `max_batch` is a batch that ran (None where none was run);
- median step time; and for the adaptive levels the gradient variance (vs the exact gradient,
  `variance_seeds` roundings) of the allocation and of uniform bits at the same average
  (`adaptive_variance_ratio`, GACT §4's claim that adaptive bits lower it).
"""
from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.flatten_util import ravel_pytree

from jaxpapers.core import config as cfglib
from jaxpapers.core.errors import ConfigError
from jaxpapers.core.train import TrainState, make_optimizer, make_train_step
from jaxpapers.gact import adaptive, families
from jaxpapers.gact.measure import max_batch_linear, temp_probe
from jaxpapers.gact.report import write
from jaxpapers.gact.wrapper import compress_block, saved_tensors

log = logging.getLogger("jaxpapers")

FAMILIES = tuple(families.BUILDERS)


def validate(c: ml_collections.ConfigDict) -> None:
  for name in c.levels:
    adaptive.get_level(name)
  if tuple(c.levels)[:1] != ("L0",):
    raise ConfigError(f"levels must start with L0 (its step sets the memory budget), got {tuple(c.levels)}")
  for fam in c.families:
    if fam not in FAMILIES:
      raise ConfigError(f"unknown family {fam!r}; use one of {', '.join(FAMILIES)}")
  cfglib.check(c, "seeds", lambda v: isinstance(v, int) and v >= 1, "an int >= 1")
  cfglib.check(c, "variance_seeds", lambda v: isinstance(v, int) and v >= 2, "an int >= 2")
  cfglib.check(c, "executed_steps", lambda v: isinstance(v, int) and v >= 0, "an int >= 0")
  cfglib.check(c, "batch_search.tol", lambda v: 0 < v < 1, "in (0, 1)")
  cfglib.check(c, "batch_search.checks", lambda v: isinstance(v, int) and v >= 0, "an int >= 0")
  for name in tuple(c.executed_levels) + tuple(c.train_levels):
    adaptive.get_level(name)
  if "L0" not in c.train_levels:    # (names not in levels are not run)
    raise ConfigError(f"train_levels must include L0 (the reference), got {tuple(c.train_levels)}")
  for fam in c.families:
    for key in ("train.steps", "train.batch", "memory_batch", "budget_batch", "adapt_interval",
                "probe_batch", "max_batch_limit"):
      cfglib.check(c, f"{fam}.{key}", lambda v: isinstance(v, int) and v > 0, "a positive int")
  if "transformer" in c.families:     # the corpus itself (its tokens), before anything is written
    from jaxpapers.glm import data as glmdata
    glmdata.check_tokens(c.data.corpus, c.data.vocab_size, 0.05, c.transformer.seq_len)


# --- what a level keeps for the backward ----------------------------------------------------

def make_wrap(level: adaptive.Level, bits):
  """wrap(i, fn, params, x, seed) for a level; bits: per block, a tuple of widths (one per saved
  activation, residual levels) or one width (the block input, *_ckpt levels)."""
  if not level.compressed:
    if level.checkpointed:    # jax.checkpoint on unrolled blocks: XLA's CPU scheduler recomputed
      # each block at once in the forward and kept everything (481 vs 495 MiB of L0); the
      # recompute custom_vjp ties the kept input to the cotangent, so recomputation waits
      return lambda i, fn, p, x, s: compress_block(fn, 32, "recompute")(p, x, s)
    return None
  mode = "recompute" if level.checkpointed else "residuals"
  return lambda i, fn, p, x, s: compress_block(fn, bits[i], mode)(p, x, s)


def probe_wrap(level: adaptive.Level, offsets):
  """wrap for GACT's sensitivity probe: traced widths [n_units] f32 (32 = exact), block i reading
  its units at offsets[i]:offsets[i+1] (fake quantization, `compress_block` probe mode)."""
  mode = "recompute" if level.checkpointed else "residuals"

  def make(bits):
    return lambda i, fn, p, x, s: compress_block(fn, bits[offsets[i]:offsets[i + 1]], mode)(p, x, s)
  return make


def units(fam: families.Family, level: adaptive.Level, batch) -> list[list]:
  """The allocation units of each block: its saved activations (their SavedTensor), or its
  input (checkpointed levels), as the block sees them at this batch."""
  out = {}

  def record(i, fn, p, x, s):
    if level.checkpointed:
      out[i] = [sum(l.size for l in jax.tree.leaves(x) if jnp.issubdtype(l.dtype, jnp.floating))]
    else:
      out[i] = [t.size for t in saved_tensors(fn, p, x) if t.kind == "act"]
    return fn(p, x)

  jax.eval_shape(lambda: fam.loss(fam.model, batch, record, jnp.uint32(0)))
  return [out[i] for i in range(len(out))]


# --- sensitivities and variance through one compiled probe ----------------------------------

class Probe:
  """GACT's sensitivity estimate (§4.2) and the gradient variance through one compiled function
  of the level's blocks with traced widths (`probe_wrap`): `rows` takes K rows of (widths,
  seed), computes their K gradients and reduces each inside the compiled function to its squared
  distance to the exact gradient (and, for rows 2j and 2j + 1, to each other): keeping the
  flat gradients of the quick GLM's 320-tensor estimate on the host took 20 GB. A family's loss reads its data from the
  batch alone, so one Probe serves every seed of a run (`run_levels` keeps them)."""

  def __init__(self, fam, level, offsets, chunk: int):
    graphdef = nnx.graphdef(fam.model)
    make = probe_wrap(level, offsets)
    self.n, self.k = offsets[-1], 2 * chunk

    def grad(params, bits, seed, batch):
      loss = lambda p: fam.loss(nnx.merge(graphdef, p), batch, make(bits), seed)
      return ravel_pytree(jax.grad(loss)(params))[0]

    def rows(params, bits, seeds, exact, batch):
      g = jax.vmap(lambda b, s: grad(params, b, s, batch))(bits, seeds)
      return jnp.sum((g - exact) ** 2, axis=1), jnp.sum((g[0::2] - g[1::2]) ** 2, axis=1)

    self._grad, self._rows = jax.jit(grad), jax.jit(rows)

  def _exact(self, params, batch):
    return self._grad(params, jnp.full(self.n, 32.0), jnp.uint32(0), batch)

  def _run(self, params, batch, bits: np.ndarray, seeds: np.ndarray, exact):
    """(|g_r - exact|^2 per row r, |g_2j - g_2j+1|^2 per pair j), in calls of k rows (the last
    padded with repeats of the last row)."""
    to_exact, pairs = [], []
    for i in range(0, len(bits), self.k):
      idx = np.minimum(np.arange(i, i + self.k), len(bits) - 1)
      d, p = self._rows(params, jnp.asarray(bits[idx], jnp.float32),
                        jnp.asarray(seeds[idx], jnp.uint32), exact, batch)
      to_exact.append(np.asarray(d, np.float64))
      pairs.append(np.asarray(p, np.float64))
    return np.concatenate(to_exact)[:len(bits)], np.concatenate(pairs)[:len(bits) // 2]

  def sensitivities(self, params, batch, seed: int) -> list[float]:
    """C_l = max(|g0 - g1|^2, 2 max(|g0 - g|^2, |g1 - g|^2)) for every unit l, g0 and g1 with l
    at 1 bit under two seeds, every other unit exact; g is the exact gradient (the official code
    uses l at 8 bits, whose rounding adds (1/255)^2 of the 1-bit variance)."""
    bits = np.full((2 * self.n, self.n), 32.0)
    bits[np.arange(2 * self.n), np.repeat(np.arange(self.n), 2)] = 1.0
    seeds = np.tile([seed, seed + 1], self.n)
    d, pair = self._run(params, batch, bits, seeds, self._exact(params, batch))
    c = adaptive.sensitivity(pair, d[0::2], d[1::2])
    return [float(x) if np.isfinite(x) and x < 1e10 else 1e10 for x in c]   # as the official cap

  def variance(self, params, batch, allocations, seeds: int) -> list[float]:
    """Per allocation (widths per unit), the mean over `seeds` roundings (the same seeds for
    each) of |g(bits) - g(exact)|^2 (GACT's Var of the gradient)."""
    bits = np.repeat(np.asarray(allocations, np.float64), seeds, axis=0)
    s = np.tile(np.arange(1, seeds + 1), len(allocations))
    d, _ = self._run(params, batch, bits, s, self._exact(params, batch))
    return [float(x) for x in d.reshape(len(allocations), seeds).mean(1)]


# --- one family, every level -----------------------------------------------------------------

def run_levels(c, fam_name: str, wd: Path) -> dict:
  k = c[fam_name]
  tx = make_optimizer(ml_collections.ConfigDict(dict(k.train)))
  levels = [adaptive.get_level(n) for n in c.levels]
  out: dict = {"levels": {}, "seeds": {}}
  budget, compiled = {}, {}      # compiled: Probes and train steps, shared by the seeds
  for seed in range(c.seed, c.seed + c.seeds):
    fam = families.BUILDERS[fam_name](c, seed, wd)
    out["what"] = fam.what
    graphdef, params0 = nnx.split(fam.model, nnx.Param)
    for level in levels:
      trained = level.name in c.train_levels
      if seed != c.seed and (level.name not in ("L0", "L2.2") or not trained):
        continue               # further seeds: the pair the headline compares
      log.info("GACT %s %s seed %d%s", fam_name, level.name, seed, "" if trained else " (measured only)")
      t0 = time.perf_counter()
      r = train_level(c, k, fam, level, graphdef, params0, tx, seed, compiled, trained)
      log.info("GACT %s %s seed %d: %s in %.0f s", fam_name, level.name, seed,
               "trained and evaluated" if trained else "allocated", time.perf_counter() - t0)
      if trained:
        out["seeds"].setdefault(level.name, []).append(
            {"seed": seed, **r["held_out"], "train_loss_last": r["train_loss_last"]})
      if seed != c.seed:
        continue
      t0 = time.perf_counter()
      mem = measure_level(c, k, fam, level, graphdef, params0, tx, r["bits"], budget, wd, seed)
      log.info("GACT %s %s: memory measured in %.0f s (%d sizes compiled%s)", fam_name, level.name,
               time.perf_counter() - t0, len(mem["temp_bytes_probed"]),
               f", batch {mem['max_batch']} run in {mem['executed']['seconds']:.0f} s"
               if mem["executed"] and mem["max_batch"] else "")
      out["levels"][level.name] = {**r, **mem}
  _summarise(out)
  return out


def train_level(c, k, fam, level, graphdef, params0, tx, seed, compiled: dict,
                trained: bool = True) -> dict:
  """Train `level` for k.train.steps (adaptive levels: allocating every adapt_interval steps),
  then its held-out loss and, adaptive, its gradient variance against uniform widths; with
  `trained` False, only the allocation at step 0 (a level measured for memory only)."""
  state = TrainState(step=jnp.int32(0), params=params0, opt_state=jax.jit(tx.init)(params0),
                     rng=jax.random.key_data(jax.random.key(seed)))
  unit_sizes = units(fam, level, fam.batch_at(0)) if level.compressed else []
  offsets = np.cumsum([0] + [len(u) for u in unit_sizes]).tolist()
  sizes = [s for u in unit_sizes for s in u]
  split = lambda flat: [tuple(flat[offsets[i]:offsets[i + 1]]) if not level.checkpointed
                        else flat[offsets[i]] for i in range(len(unit_sizes))]
  flat = [int(level.bits)] * len(sizes) if level.compressed and not level.adaptive else None
  probe, steps = None, {}       # steps: this run's train steps (an allocation's are its own)
  if level.adaptive:
    key = ("probe", level.name, tuple(offsets))
    if key not in compiled:
      compiled[key] = Probe(fam, level, offsets, k.probe_chunk)
    probe = compiled[key]
  losses, times, allocs = [], [], []
  for start in range(0, k.train.steps if trained else 1, k.adapt_interval):
    if level.adaptive:
      t0 = time.perf_counter()
      sens = probe.sensitivities(state.params, fam.probe_batch(), 1000 * seed + start)
      flat = list(adaptive.allocate_bits(sens, sizes, level.bits))
      allocs.append({"step": start, "sensitivity": sens, "bits": flat,
                     "seconds": time.perf_counter() - t0})
      log.info("%s %s: allocation at step %d over %d tensors (%.0f s): average %.2f bits", fam.name,
               level.name, start, len(sizes), allocs[-1]["seconds"], adaptive.average_bits(flat, sizes))
    if not trained:
      break
    key = tuple(flat or ())
    cache = steps if level.adaptive else compiled    # fixed widths: shared by the seeds
    if (level.name, key) not in cache:
      wrap = make_wrap(level, split(flat) if flat else None)
      loss_fn = lambda model, batch, rng, wrap=wrap: (
          fam.loss(model, batch, wrap, jax.random.bits(rng, dtype=jnp.uint32)), {})
      cache[level.name, key] = jax.jit(make_train_step(graphdef, loss_fn, tx))
    for i in range(start, min(k.train.steps, start + k.adapt_interval)):
      batch = fam.batch_at(i)
      t0 = time.perf_counter()
      state, m = cache[level.name, key](state, batch, jnp.float32(1.0))
      losses.append(float(m["loss"]))
      times.append(time.perf_counter() - t0)
  out = {"held_out": None, "train_loss_last": None, "losses": losses, "step_time": None,
         "bits": split(flat) if flat else None, "unit_sizes": sizes, "allocations": allocs,
         "avg_bits": adaptive.average_bits(flat, sizes) if flat else None}
  if not trained:
    return out
  log.info("%s %s: %d steps, first (with compile) %.1f s, median %.0f ms", fam.name, level.name,
           len(times), times[0], 1e3 * statistics.median(times))
  out.update({"held_out": fam.held_out(nnx.merge(graphdef, state.params)),
              "train_loss_last": float(np.mean(losses[-max(1, len(losses) // 10):])),
              "step_time": statistics.median(times[1:] if len(times) > 1 else times)})
  if level.adaptive:    # adaptive vs uniform widths at the same average, on the trained model
    uniform = [int(level.bits)] * len(sizes) if float(level.bits).is_integer() else None
    if uniform:
      t0 = time.perf_counter()
      va, vu = probe.variance(state.params, fam.probe_batch(), [flat, uniform], c.variance_seeds)
      log.info("%s %s: adaptive vs uniform variance in %.0f s", fam.name, level.name,
               time.perf_counter() - t0)
      out.update({"variance_adaptive": va, "variance_uniform": vu, "adaptive_variance_ratio": va / vu})
  return out


def measure_level(c, k, fam, level, graphdef, params0, tx, bits, budget: dict, wd, seed) -> dict:
  wrap = make_wrap(level, bits)
  loss_fn = lambda model, batch, rng: (fam.loss(model, batch, wrap,
                                                jax.random.bits(rng, dtype=jnp.uint32)), {})
  temp_at = temp_probe(graphdef, loss_fn, tx, params0, fam.example)
  b = k.memory_batch
  t_b, t_2b = temp_at(b), temp_at(2 * b)
  if "bytes" not in budget:            # the first level (L0) at budget_batch sets the budget
    budget["bytes"] = temp_at(k.budget_batch)
  mb, executed = None, None
  if level.name in c.executed_levels:    # the largest batch: searched, then run
    mb = max_batch_linear(temp_at, budget["bytes"], b, k.max_batch_limit,
                          tol=c.batch_search.tol, checks=c.batch_search.checks)
    if c.executed_steps:
      executed = execute_batch(c, fam.name, level.name, bits, mb, wd, seed)
  return {"act_bytes": t_2b - t_b, "temp_bytes": t_b,
          "budget_bytes": budget["bytes"], "max_batch_compiled": mb,
          "max_batch": executed["batch"] if executed else None, "executed": executed,
          "temp_bytes_probed": {str(x): v for x, v in sorted(temp_at.probed.items())}}


def execute_batch(c, fam_name, level_name, bits, batch, wd: Path, seed) -> dict | None:
  """`executed_steps` training steps at `batch` in a child process (`gact.run_batch`)."""
  spec = {"config": json.loads(c.to_json()), "family": fam_name, "level": level_name,
          "bits": bits, "batch": batch, "steps": c.executed_steps, "workdir": str(wd), "seed": seed}
  path = wd / f"executed_{fam_name}_{level_name}.json"
  path.write_text(json.dumps(spec))
  t0 = time.perf_counter()
  # the child compiles without the backend's code optimisation: the same buffers (the bytes that
  # decide whether a batch fits), a third of the compile time
  env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") +
                                     " --xla_backend_optimization_level=0").strip()}
  p = subprocess.run([sys.executable, "-m", "jaxpapers.gact.run_batch", str(path)],
                     capture_output=True, text=True, env=env)
  if p.returncode != 0:
    log.warning("%s %s: %d steps at batch %d failed: %s", fam_name, level_name, c.executed_steps,
                batch, p.stderr.strip().splitlines()[-1:] )
    return {"batch": None, "tried": batch, "error": p.stderr.strip()[-500:]}
  r = json.loads(p.stdout.strip().splitlines()[-1])
  r["seconds"] = time.perf_counter() - t0
  log.info("%s %s: %d steps ran at batch %d (peak RSS %.0f MiB)", fam_name, level_name,
           r["steps"], batch, r["peak_rss_bytes"] / 2**20)
  return r


def _summarise(out: dict) -> None:
  lv = out["levels"]
  for name, x in lv.items():
    ref = lv.get("ckpt" if name.endswith("_ckpt") else "L0")
    if ref is None:
      continue
    x["memory_ratio"] = ref["act_bytes"] / max(x["act_bytes"], 1)
    if x.get("max_batch") and ref.get("max_batch"):
      x["max_batch_ratio"] = x["max_batch"] / ref["max_batch"]
    if x["held_out"] and ref["held_out"]:          # both trained
      x["step_time_ratio"] = x["step_time"] / ref["step_time"]
      x["loss_delta"] = x["held_out"]["loss"] / ref["held_out"]["loss"] - 1.0
  if "L2.2" in lv:
    top = lv["L2.2"]
    out["memory_ratio_L2.2"] = top.get("memory_ratio")
    out["max_batch_ratio_L2.2"] = top.get("max_batch_ratio")
    out["step_time_ratio_L2.2"] = top.get("step_time_ratio")
    out["adaptive_variance_ratio"] = top.get("adaptive_variance_ratio")
  if "L2.2_ckpt" in lv:
    out["memory_ratio_L2.2_ckpt"] = lv["L2.2_ckpt"].get("memory_ratio")
  s0, s2 = out["seeds"].get("L0", []), out["seeds"].get("L2.2", [])
  if s0 and s2:
    l0 = np.array([r["loss"] for r in s0])
    d = np.array([b["loss"] / a["loss"] - 1.0 for a, b in zip(s0, s2)])
    out["loss_delta_L2.2"] = float(d.mean())
    out["loss_delta_L2.2_per_seed"] = d.tolist()
    out["loss_seed_spread_L0"] = float(l0.std(ddof=1) / l0.mean()) if len(l0) > 1 else None


def run(c: ml_collections.ConfigDict, workdir: str, command: str) -> dict:
  validate(c)
  wd = Path(workdir)
  results = {fam: run_levels(c, fam, wd) for fam in c.families}
  write(wd, command, c, results)
  return results
