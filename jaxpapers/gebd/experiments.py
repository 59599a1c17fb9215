"""`jaxpapers run gebd/ladder`: MAE-GEBD's ladder (He et al. 2022, arXiv 2206.08610, Table 1) on
the generated benchmark, scored by the Kinetics-GEBD protocol; `jaxpapers run gebd/score`: the
protocol alone on a user's annotation and prediction pickles.

Ladder (the paper's Table 1 order; baseline -> soft -> pseudo -> align each add to the step
before, mae is a separate single model, the ensemble combines them):
  baseline  BoundaryNet, hard targets (a random rater per sample), BCE;
  soft      the same with soft targets (§2.2);
  pseudo    + the unlabelled pool, labelled by the ensemble of the two models above (decoded
            and aligned boundaries as one pseudo rater), mixed into training (§2.2);
  align     the pseudo model's boundaries through segmentation alignment (§3);
  mae       a video MAE pre-trained on every video's pixels (train, val, test and the pool; no
            labels), fine-tuned with the release's two heads on train + pseudo-labelled pool,
            aligned (§2.3);
  ensemble  0.77 x the mean of the base models' scores + 0.23 x the MAE model's, aligned (§3.2).

A seed replicates everything random: the benchmark (videos, raters), every model's
initialisation and batches. Every choice is made on validation videos: each model's checkpoint
(evaluated every eval_every steps), its smoothing (none or sigma 0.4) and peak threshold, per
pipeline (with and without alignment); the test set is scored once per row.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx

from jaxpapers.core import config as cfglib
from jaxpapers.core.batched import apply_batched
from jaxpapers.core.errors import ConfigError
from jaxpapers.core.mesh import make_mesh
from jaxpapers.core.report import public
from jaxpapers.core.stats import mean_std
from jaxpapers.core.train import train, validate_train
from jaxpapers.core.workdir import atomic_write_json
from jaxpapers.gebd import annotations as ann
from jaxpapers.gebd import metric
from jaxpapers.gebd.benchmark import BenchmarkConfig, Split, make_benchmark
from jaxpapers.gebd.boundaries import N_SECTIONS, align, decode, gaussian_smooth, hard_targets, soft_targets
from jaxpapers.gebd.models import (BaseConfig, BoundaryNet, MAEBoundary, MAEConfig, VideoMAE,
                                   base_loss, base_scores, mae_boundary_loss, mae_boundary_scores,
                                   mae_loss, random_keep)

log = logging.getLogger("jaxpapers")

LADDER = ("baseline", "soft", "pseudo", "align", "mae", "ensemble")
PAPER_F1 = dict(baseline=81.30, soft=81.80, pseudo=82.10, align=83.20, mae=83.06, ensemble=85.14)
SIGMAS = (0.0, 0.4)
HARD_TARGETS = ("baseline", "mae", "mae_scratch")     # decoded at section centres
# (compared, against): the ladder's steps, then the single MAE model and the ensemble against the
# best base pipeline (the paper's MAE row is a separate model, its ensemble gain is over base models)
COMPARISONS = (("soft", "baseline"), ("pseudo", "soft"), ("align", "pseudo"), ("mae", "align"),
               ("ensemble", "align"))
ENSEMBLE_MAE_WEIGHT = 0.23


def validate(c: ml_collections.ConfigDict) -> None:
  pos_int = lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0
  for key in ("seeds", "eval_batch", "benchmark.train", "benchmark.val", "benchmark.test",
              "benchmark.unlabelled", "benchmark.raters", "base.steps", "base.batch",
              "base.eval_every", "mae_pretrain.steps", "mae_pretrain.batch", "mae_finetune.steps",
              "mae_finetune.batch", "mae_finetune.eval_every"):
    cfglib.check(c, key, pos_int, "a positive int")
  prob = lambda v: isinstance(v, (int, float)) and 0 <= v <= 1
  for key in ("base.glue_prob", "pseudo_share", "benchmark.hard_share"):
    cfglib.check(c, key, prob, "a probability in [0, 1]")
  cfglib.check(c, "mae.mask_ratio", lambda v: 0 < v < 1, "in (0, 1)")
  cfglib.check(c, "thresholds", lambda v: len(v) > 0 and all(0 < t < 1 for t in v),
               "a non-empty list of peak thresholds in (0, 1)")
  cfglib.check(c, "benchmark.min_frames", lambda v: isinstance(v, int) and 8 <= v <= N_SECTIONS,
               f"an int in [8, {N_SECTIONS}]")
  for part in ("base", "mae_pretrain", "mae_finetune"):
    validate_train(train_cfg(c, part, 1, 0))
  try:
    MAEBoundary.check(MAEConfig(**c.mae.to_dict()))
  except ValueError as e:
    raise ConfigError(f"--config.mae: {e}") from None


def train_cfg(c, part: str, steps: int, seed: int) -> ml_collections.ConfigDict:
  t = dict(c.train.to_dict(), steps=steps, lr=c[part].lr, batch=c[part].batch)
  return ml_collections.ConfigDict({"seed": seed, "train": t})


# ----------------------------------------------------------------------------- scoring

def predict(model, score_fn, frames: np.ndarray, batch: int) -> np.ndarray:
  """[V, 40] section scores of every video."""
  return apply_batched(model, score_fn, {"frames": frames}, batch).astype(np.float32)


def boundaries(split: Split, smoothed: np.ndarray, threshold: float, aligned: bool,
               hard: bool = False) -> dict:
  out = {}
  for vid, s, dur in zip(split.ids, smoothed, split.durations()):
    t = decode(s, float(dur), 0.0, threshold, hard=hard)
    out[vid] = align(t, float(dur)) if aligned else t
  return out


def choose(split: Split, scores: np.ndarray, thresholds, aligned: bool, sigmas=SIGMAS,
           hard: bool = False) -> dict:
  """The smoothing and threshold with the best F1 on `split` (validation)."""
  best = None
  for sigma in sigmas:
    sm = gaussian_smooth(scores, sigma)
    for thr in thresholds:
      f1 = metric.evaluate(split.videos, boundaries(split, sm, thr, aligned, hard))["f1"]
      if best is None or f1 > best["val_f1"]:
        best = dict(val_f1=f1, sigma=sigma, threshold=thr)
  return best


def score_row(bench, val_scores, test_scores, thresholds, aligned: bool, sigmas=SIGMAS,
              hard: bool = False) -> dict:
  ch = choose(bench["val"], val_scores, thresholds, aligned, sigmas, hard)
  preds = boundaries(bench["test"], gaussian_smooth(test_scores, ch["sigma"]), ch["threshold"],
                     aligned, hard)
  return dict(ch, test=metric.evaluate(bench["test"].videos, preds), _preds=preds)


# ----------------------------------------------------------------------------- training

def fit(c, part: str, model, loss_fn, get_batch, steps: int, seed: int, wd: Path, mesh,
        progress: bool, val=None):
  """core.train for `steps`; with `val = (split, score_fn, hard)` the model is scored on
  validation every eval_every steps and at the end, and the parameters with the best validation
  F1 (the best over the decoding grid, with or without alignment) are kept. Returns (model, log
  dict)."""
  cfg = train_cfg(c, part, steps, seed)
  cfg.train.eval_every = c[part].get("eval_every", 0) if val else 0
  best = dict(val_f1=-1.0, step=-1, state=None)
  evals = []

  def eval_fn(m, step):
    split, score_fn, hard = val
    s = predict(m, score_fn, split.frames, c.eval_batch)
    f1 = max(choose(split, s, c.thresholds, a, hard=hard)["val_f1"] for a in (False, True))
    evals.append(dict(step=step, val_f1=f1))
    if f1 > best["val_f1"]:
      best.update(val_f1=f1, step=step, state=jax.device_get(nnx.state(m)))
    return {"val_f1": f1}

  out = train(cfg=cfg, workdir=wd, model=model, loss_fn=loss_fn, get_batch=get_batch, mesh=mesh,
              eval_fn=eval_fn if val else None, progress=progress)
  model = out.model()
  if val:
    if not evals or evals[-1]["step"] != steps:
      eval_fn(model, steps)
    nnx.update(model, best["state"])
  return model, dict(best_step=best["step"], best_val_f1=best["val_f1"], evals=evals,
                     final_loss=out.history[-1]["loss"], seconds=sum(h["step_time"] for h in out.history))


class BoundaryBatches:
  """Random labelled videos, a random rater's targets each (`targets` [V, R, 40]), and with
  probability glue_prob two videos glued at a random section g in [10, 30] with 0.5 at g-1 and g
  (the release's glue augmentation); pool videos (pseudo labels) drawn with `pool_share`."""

  def __init__(self, frames, targets, batch: int, seed: int, glue_prob: float,
               pool_frames=None, pool_targets=None, pool_share: float = 0.0):
    self.f, self.t, self.batch, self.seed, self.glue = frames, targets, batch, seed, glue_prob
    self.pf, self.pt, self.share = pool_frames, pool_targets, pool_share

  def _draw(self, rng, n):
    use_pool = self.pf is not None and rng.random() < self.share
    f, t = (self.pf, self.pt) if use_pool else (self.f, self.t)
    i = rng.integers(len(f), size=n)
    return f[i], t[i, rng.integers(t.shape[1], size=n)]

  def __call__(self, step: int) -> dict:
    rng = np.random.default_rng([self.seed, 31, step])
    frames, target = zip(*[self._draw(rng, 1) for _ in range(self.batch)])
    frames, target = np.concatenate(frames), np.concatenate(target).copy()
    for b in np.nonzero(rng.random(self.batch) < self.glue)[0]:
      f2, t2 = self._draw(rng, 1)
      g = int(rng.integers(10, 31))
      frames[b, g:] = f2[0, g:]
      target[b, g:] = t2[0, g:]
      target[b, g - 1:g + 1] = 0.5
    return dict(frames=frames, target=target.astype(np.float32))


def rater_targets(split: Split, kind: str, raters: int) -> np.ndarray:
  """[V, raters, 40]: each rater's targets (a video with fewer raters repeats its first)."""
  fn = soft_targets if kind == "soft" else hard_targets
  out = np.zeros((len(split.ids), raters, N_SECTIONS), np.float32)
  for i, v in enumerate(split.videos.values()):
    rs = v.raters + [v.raters[0]] * max(0, raters - len(v.raters))
    out[i] = np.stack([fn(r) for r in rs[:raters]])
  return out


def consistent(split: Split) -> np.ndarray:
  """Indices of the videos the protocol scores (f1_consis_avg >= 0.3): the ones trained on."""
  return np.array([i for i, v in enumerate(split.videos.values())
                   if v.f1_consis_avg >= metric.MIN_CONSISTENCY], np.int64)


# ----------------------------------------------------------------------------- one seed

def run_seed(c, seed: int, wd: Path, mesh, progress: bool) -> dict:
  t0 = time.perf_counter()
  bench = make_benchmark(BenchmarkConfig(**c.benchmark.to_dict()), seed)
  for name in ("train", "val", "test"):      # the labels the ladder uses come back from the files
    path = wd / f"gebd_synth_{name}.pkl"
    ann.save(path, bench[name].videos)
    bench[name].videos = ann.load(path)
  stats = dict(seconds_benchmark=time.perf_counter() - t0, **{
      f"{k}_videos": len(s.ids) for k, s in bench.items()})
  stats["skipped_test_videos"] = metric.evaluate(bench["test"].videos, {})["skipped"]
  stats["true_events_f1"] = _true_event_f1(bench["test"])
  stats["mean_boundaries_per_rater"] = float(np.mean(
      [np.mean([len(r) for r in v.raters]) for v in bench["test"].videos.values()]))
  R = c.benchmark.raters
  tr = bench["train"]
  keep = consistent(tr)
  frames_tr = tr.frames[keep]
  base_cfg = BaseConfig(**c.base_model.to_dict())
  out = {"benchmark": stats}
  scores = {}

  def base(name: str, kind: str, pool=None):
    # the three base steps share the initialisation; baseline and soft also the batch stream (the
    # pseudo step's pool draws shift its stream), so soft - baseline is the change of targets
    log.info("seed %d: training %s", seed, name)
    tg = rater_targets(tr, kind, R)[keep]
    batches = BoundaryBatches(frames_tr, tg, c.base.batch, seed * 100 + 1, c.base.glue_prob,
                              *(pool or (None, None)), pool_share=c.pseudo_share)
    model, info = fit(c, "base", BoundaryNet(base_cfg, rngs=nnx.Rngs(seed * 100 + 1)),
                      base_loss, batches, c.base.steps, seed, wd / name, mesh, progress,
                      val=(bench["val"], base_scores, kind == "hard"))
    scores[name] = {k: predict(model, base_scores, bench[k].frames, c.eval_batch)
                    for k in ("val", "test", "unlabelled")}
    return info

  train_log = {"baseline": base("baseline", "hard"), "soft": base("soft", "soft")}

  # pseudo labels: the ensemble of the two models above on the unlabelled pool (its smoothing
  # and threshold chosen on validation, aligned)
  teacher = {k: np.mean([scores[m][k] for m in ("baseline", "soft")], 0) for k in ("val", "unlabelled")}
  ch = choose(bench["val"], teacher["val"], c.thresholds, True)
  pool = bench["unlabelled"]
  pseudo = boundaries(pool, gaussian_smooth(teacher["unlabelled"], ch["sigma"]), ch["threshold"],
                      aligned=True)
  for vid, t in pseudo.items():
    pool.videos[vid].raters = [t]
  ann.save(wd / "gebd_synth_unlabelled_pseudo.pkl", {
      vid: ann.Video(v.video_id, v.fps, v.duration, v.num_frames, v.raters, [1.0], 1.0,
                     v.path_video) for vid, v in pool.videos.items()})
  out["pseudo_labels"] = dict(teacher=["baseline", "soft"], threshold=ch["threshold"], sigma=ch["sigma"],
                              teacher_val_f1=ch["val_f1"], per_video=float(np.mean(
                                  [len(t) for t in pseudo.values()])),
                              f1_vs_true_events=_pseudo_quality(pool, pseudo))
  train_log["pseudo"] = base("pseudo", "soft", pool=(pool.frames, rater_targets(pool, "soft", 1)))

  # MAE: pre-train on every video's pixels, fine-tune on train + the pseudo-labelled pool
  mcfg = MAEConfig(**c.mae.to_dict())
  all_frames = np.concatenate([bench[k].frames for k in ("train", "val", "test", "unlabelled")])
  log.info("seed %d: MAE pre-training on %d videos", seed, len(all_frames))
  mae, train_log["mae_pretrain"] = fit(
      c, "mae_pretrain", VideoMAE(mcfg, rngs=nnx.Rngs(seed * 100 + 4)), mae_loss,
      MAEBatches(all_frames, mcfg, c.mae_pretrain.batch, seed), c.mae_pretrain.steps, seed,
      wd / "mae_pretrain", mesh, progress)
  rng = np.random.default_rng([seed, 41])
  ft_frames = np.concatenate([frames_tr, pool.frames])
  tg = np.concatenate([rater_targets(tr, "hard", R)[keep], rater_targets(pool, "hard", R)])
  fixed = tg[np.arange(len(tg)), rng.integers(R, size=len(tg))][:, None]    # one rater per video
  mae_variants = {"mae": mae} | ({"mae_scratch": None} if c.mae_scratch else {})
  for name, pre in mae_variants.items():
    log.info("seed %d: fine-tuning %s", seed, name)
    m = MAEBoundary(mcfg, rngs=nnx.Rngs(seed * 100 + 5))
    if pre is not None:
      nnx.update(m.encoder, nnx.state(pre.encoder))
    m, train_log[name] = fit(c, "mae_finetune", m, mae_boundary_loss,
                             BoundaryBatches(ft_frames, fixed, c.mae_finetune.batch, seed * 100 + 6, 0.0),
                             c.mae_finetune.steps, seed, wd / name, mesh, progress,
                             val=(bench["val"], mae_boundary_scores, True))
    scores[name] = {k: predict(m, mae_boundary_scores, bench[k].frames, c.eval_batch)
                    for k in ("val", "test")}

  # rows: every model with and without alignment; the ladder picks its pipeline per step
  rows = {}
  for name in ("baseline", "soft", "pseudo") + tuple(mae_variants):
    for aligned in (False, True):
      rows[f"{name}{'+align' if aligned else ''}"] = score_row(
          bench, scores[name]["val"], scores[name]["test"], c.thresholds, aligned,
          hard=name in HARD_TARGETS)
  # ensemble: each member smoothed with its own validation choice, averaged, then decoded
  sm = lambda name, k: gaussian_smooth(scores[name][k], rows[f"{name}+align"]["sigma"])
  ens = {k: (1 - ENSEMBLE_MAE_WEIGHT) * np.mean([sm(m, k) for m in ("baseline", "soft", "pseudo")], 0)
         + ENSEMBLE_MAE_WEIGHT * sm("mae", k) for k in ("val", "test")}
  for aligned in (False, True):
    rows[f"ensemble{'+align' if aligned else ''}"] = score_row(
        bench, ens["val"], ens["test"], c.thresholds, aligned, sigmas=(0.0,))
  rows["uniform"] = uniform_row(bench)
  ladder_rows = dict(baseline="baseline", soft="soft", pseudo="pseudo", align="pseudo+align",
                     mae="mae+align", ensemble="ensemble+align")
  out["rows"] = rows
  out["ladder"] = {step: rows[r]["test"]["f1"] for step, r in ladder_rows.items()}
  out["ladder_val"] = {step: rows[r]["val_f1"] for step, r in ladder_rows.items()}
  if c.mae_scratch:
    out["ladder_extra"] = {"mae_scratch": rows["mae_scratch+align"]["test"]["f1"]}
  out["f1_curves"] = {}
  for name, r in rows.items():
    out["f1_curves"][name] = metric.f1_curve(bench["test"].videos, r["_preds"])
  out["train"] = train_log
  out["seconds"] = time.perf_counter() - t0
  out["_bench"], out["_scores"] = bench, scores
  return out


def uniform_row(bench) -> dict:
  """A reference without a model: k evenly spaced boundaries per video, k chosen on validation."""
  def preds(split, k):
    return {vid: [float(d) * (i + 1) / (k + 1) for i in range(k)]
            for vid, d in zip(split.ids, split.durations())}
  best = max(range(1, 11), key=lambda k: metric.evaluate(bench["val"].videos, preds(bench["val"], k))["f1"])
  p = preds(bench["test"], best)
  return dict(k=best, test=metric.evaluate(bench["test"].videos, p), _preds=p)


def _pseudo_quality(pool: Split, pseudo: dict) -> float:
  """F1 of the pseudo labels against the pool's true generated events (known only here)."""
  truth = {vid: ann.Video(vid, v.fps, v.duration, v.num_frames, [[t for t, _ in ev]], [1.0], 1.0)
           for (vid, v), ev in zip(pool.videos.items(), pool.events)}
  return metric.evaluate(truth, pseudo)["f1"]


def _true_event_f1(split: Split) -> float:
  """The protocol's F1 of the generator's true event times as predictions against the raters:
  a reference point for what a perfect event detector scores on this benchmark."""
  return metric.evaluate(split.videos, {vid: [t for t, _ in ev] for vid, ev in
                                        zip(split.ids, split.events)})["f1"]


class MAEBatches:
  def __init__(self, frames, cfg: MAEConfig, batch: int, seed: int):
    self.f, self.cfg, self.batch, self.seed = frames, cfg, batch, seed

  def __call__(self, step: int) -> dict:
    rng = np.random.default_rng([self.seed, 51, step])
    return dict(frames=self.f[rng.integers(len(self.f), size=self.batch)],
                keep=random_keep(rng, self.batch, self.cfg))


# ----------------------------------------------------------------------------- the run

def summarize(per_seed: list[dict]) -> dict:
  out = {"f1": {}, "f1_per_seed": {}, "steps_paired": {}}
  for step in LADDER:
    vals = [s["ladder"][step] for s in per_seed]
    out["f1"][step] = float(np.mean(vals))
    out["f1_per_seed"][step] = vals
    out.setdefault("f1_stats", {})[step] = mean_std(vals)
  for b, a in COMPARISONS:
    d = [s["ladder"][b] - s["ladder"][a] for s in per_seed]
    out["steps_paired"][f"{b}-{a}"] = dict(per_seed=d, **mean_std(d))
  if "ladder_extra" in per_seed[0]:
    for k in per_seed[0]["ladder_extra"]:
      vals = [s["ladder_extra"][k] for s in per_seed]
      out.setdefault("f1_extra", {})[k] = mean_std(vals)
      d = [s["ladder"]["mae"] - s["ladder_extra"][k] for s in per_seed]
      out["steps_paired"][f"mae-{k}"] = dict(per_seed=d, **mean_std(d))
  # the best step by validation F1 (mean over seeds): its F1 curve and frame strips are reported
  best = max(LADDER, key=lambda k: np.mean([s["ladder_val"][k] for s in per_seed]))
  out["best"] = best
  row = dict(baseline="baseline", soft="soft", pseudo="pseudo", align="pseudo+align",
             mae="mae+align", ensemble="ensemble+align")[best]
  curves = [s["f1_curves"][row] for s in per_seed]
  out["f1_curve"] = {t: float(np.mean([cv[t] for cv in curves])) for t in curves[0]}
  rows = {}
  for r in per_seed[0]["rows"]:
    rows[r] = {k: mean_std([s["rows"][r]["test"][k] for s in per_seed])
               for k in ("f1", "precision", "recall")}
  out["rows"] = rows
  return out


def run(c: ml_collections.ConfigDict, workdir: str, command: str) -> dict:
  validate(c)
  from jaxpapers.gebd.report import write  # noqa: PLC0415 (matplotlib only when reporting)
  wd = Path(workdir)
  mesh = make_mesh(c.mesh.shape, c.mesh.axes)
  t0 = time.perf_counter()
  per_seed = [run_seed(c, c.seed + k, wd / f"seed{c.seed + k}", mesh, c.get("progress", True))
              for k in range(c.seeds)]
  results = summarize(per_seed)
  results.update(command=command, seeds=c.seeds, seconds=time.perf_counter() - t0,
                 paper_f1=PAPER_F1)
  atomic_write_json(wd / "per_seed.json", public(per_seed), indent=1)
  write(wd, c, results, per_seed)
  return results
