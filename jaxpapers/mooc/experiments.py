"""`jaxpapers run mooc/pretrain`: one masked-behaviour model pre-trained on simulated MOOC logs,
then fine-tuned for four tasks against the same model from scratch and each task's baselines
(Zhong, Yu et al. 2022, arXiv 2208.04708).

A seed replicates everything random: the world (courses, prerequisites, videos, qualities,
exercises), the students, the splits, every model's initialisation and batches. Students are
split train / val / test; pre-training reads the training students' logs only, and every task
model (pre-trained, scratch, baselines) trains on the same training students. Each neural model
is evaluated on validation every `eval_every` steps and reported on test at its best validation
point; regularisation strengths of the linear baselines are chosen on validation. With
`--config.kt_file=PATH` (`--config.kt_format=dkt|assistments`) the knowledge-tracing comparison
also runs on that file's students (pre-training on its training students' answers).
"""
from __future__ import annotations

import copy
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
from jaxpapers.mooc import baselines as bl
from jaxpapers.mooc import formats, metrics, tasks
from jaxpapers.mooc.model import (BehaviourModel, Items, ModelConfig, TRAINABLE, mask_tokens,
                                  pretrain_loss)
from jaxpapers.mooc.simulator import Logs, RIGHT, StudentConfig, WRONG, simulate, to_logs
from jaxpapers.mooc.world import WorldConfig, make_world

log = logging.getLogger("jaxpapers")

TASKS = ("recommendation", "resource", "knowledge_tracing", "dropout")
HIGHER_IS_BETTER = {"hr@10": True, "ndcg@10": True, "auc": True, "f1": True, "mae": False,
                    "spearman": True}
MAIN_METRIC = {"recommendation": "ndcg@10", "resource": "mae", "knowledge_tracing": "auc",
               "dropout": "auc", "knowledge_tracing_file": "auc"}


def validate(c: ml_collections.ConfigDict) -> None:
  pos_int = lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0
  for key in ("seeds", "n_students", "pretrain.steps", "finetune.steps", "finetune.eval_every",
              "eval_batch", "dropout_obs", "model.hidden", "model.layers", "model.heads"):
    cfglib.check(c, key, pos_int, "a positive int")
  frac = lambda v: isinstance(v, (int, float)) and 0 < v < 1
  cfglib.check(c, "split.val", frac, "a fraction in (0, 1)")
  cfglib.check(c, "split.test", frac, "a fraction in (0, 1)")
  cfglib.check(c, "split.test", lambda v: v + c.split.val < 0.9, "with split.val below 0.9")
  cfglib.check(c, "pretrain.mask_prob", frac, "a probability in (0, 1)")
  cfglib.check(c, "pretrain.response_prob", lambda v: 0 <= v < 1, "in [0, 1)")
  cfglib.check(c, "model.max_len", lambda v: v >= 2 * c.students.steps,
               f"at least 2 x students.steps = {2 * c.students.steps} (two tokens per step)")
  cfglib.check(c, "dropout_obs", lambda v: v < 2 * c.students.steps, "below 2 x students.steps")
  cfglib.check(c, "kt_format", lambda v: v in ("dkt", "assistments"), "'dkt' or 'assistments'")
  import jaxpapers.mooc.simulator as sim
  import jaxpapers.mooc.world as world
  world.validate(WorldConfig(**c.world.to_dict()))
  sim.validate(StudentConfig(**c.students.to_dict()))
  if c.n_students * c.split.test < 20:
    raise ConfigError(f"--config.n_students={c.n_students}: too few for a test split")
  if c.kt_file:                       # a bad file fails now, before anything is written
    formats.read_kt(c.kt_file, c.kt_format)


def train_cfg(c, part: str, steps: int, seed: int, lr: float) -> ml_collections.ConfigDict:
  t = dict(c.train.to_dict(), steps=steps, lr=lr, batch=c[part].batch)
  cfg = ml_collections.ConfigDict({"seed": seed, "train": t})
  validate_train(cfg)
  return cfg


# ----------------------------------------------------------------------------- data

def text_features(texts: list[str], use: bool, batch: int = 64) -> np.ndarray:
  """[N, 384] all-MiniLM-L6-v2 sentence embeddings (frozen), or [N, 1] zeros when text is off."""
  if not use:
    return np.zeros((len(texts), 1), np.float32)
  from jaxpapers.nn import minilm
  from jaxpapers.nn.bert import mean_pool
  enc = minilm.Tokenizer()(texts, length=64)
  model = minilm.load()
  graphdef, state = nnx.split(model)
  f = jax.jit(lambda st, i, m: mean_pool(nnx.merge(graphdef, st)(i, m), m))
  out = [np.asarray(f(state, enc.ids[i:i + batch], enc.mask[i:i + batch]))
         for i in range(0, len(texts), batch)]
  return np.concatenate(out).astype(np.float32)


def world_items(world, use_text: bool) -> Items:
  V = world.n_videos
  vt = text_features(world.video_text, use_text)
  first = np.searchsorted(world.video_concept, np.arange(world.n_concepts))
  ex_text = vt[first[world.exercise_concept]]            # an exercise reads its concept's text
  concept = np.concatenate([world.video_concept, world.exercise_concept])
  course = world.concept_course[concept]
  return Items(n_videos=V, text=np.concatenate([vt, ex_text]), concept=concept, course=course,
               field=world.course_field[course], school=world.course_school[course],
               n_concepts=world.n_concepts, n_courses=world.n_courses,
               n_fields=len(world.field_names), n_schools=int(world.course_school.max()) + 1)


def split_students(n: int, c, seed: int) -> dict[str, np.ndarray]:
  perm = np.random.default_rng([seed, 11]).permutation(n)
  n_val, n_test = int(n * c.split.val), int(n * c.split.test)
  return dict(val=perm[:n_val], test=perm[n_val:n_val + n_test], train=perm[n_val + n_test:])


class PretrainBatches:
  def __init__(self, logs: Logs, items: Items, batch: int, seed: int, c):
    self.logs, self.items, self.batch, self.seed, self.c = logs, items, batch, seed, c

  def __call__(self, step: int) -> dict:
    rng = np.random.default_rng([self.seed, 5, step])
    s = rng.integers(0, len(self.logs), self.batch)
    lg = self.logs
    return mask_tokens(lg.items[s], lg.responses[s], lg.length[s], rng, self.items.n_items,
                       self.items.n_videos, self.c.pretrain.mask_prob, self.c.pretrain.response_prob)


# ----------------------------------------------------------------------------- training helpers

def fit(c, model, loss_fn, get_batch, steps: int, lr: float, seed: int, wd: Path, mesh,
        evaluate=None, trainable=TRAINABLE, progress: bool = True) -> tuple[nnx.Module, dict]:
  """Trains with core.train; `evaluate(model) -> (val score, test())` every eval_every steps and
  at the end, test() (the test scores) called only where the validation score improves; returns
  the final model and the test scores at the best validation score."""
  cfg = train_cfg(c, "finetune", steps, seed, lr)
  cfg.train.eval_every = c.finetune.eval_every if evaluate else 0
  best = {"val": -np.inf, "step": -1}
  evals = []

  def eval_fn(m, step):
    v, test = evaluate(m)
    v = -np.inf if v != v else v                  # NaN (a class absent from val) never wins
    evals.append(dict(step=step, val=v))
    if best["step"] < 0 or v > best["val"]:
      best.update(val=v, step=step, test=test())
    return {"val": v}

  out = train(cfg=cfg, workdir=wd, model=model, loss_fn=loss_fn, get_batch=get_batch, mesh=mesh,
              eval_fn=eval_fn if evaluate else None, progress=progress, trainable=trainable)
  model = out.model()
  if evaluate and (not evals or evals[-1]["step"] != steps):
    eval_fn(model, steps)
  return model, dict(best, evals=evals, final_loss=out.history[-1]["loss"])


def rec_val(scores, y) -> float:
  return metrics.ndcg(metrics.target_rank(scores, y), 10)


def rec_test(scores, y) -> dict:
  r = metrics.target_rank(scores, y)
  return {"hr@10": metrics.hit_rate(r, 10), "ndcg@10": metrics.ndcg(r, 10),
          "_per_example": np.where(r < 10, 1.0 / np.log2(r + 2.0), 0.0)}


# ----------------------------------------------------------------------------- one seed

def run_seed(c, seed: int, wd: Path, mesh, progress: bool, export_to: Path | None = None) -> dict:
  """One seed's world, students, pre-training and the four tasks; `export_to`: also write the
  students' answers there in the DKT layout (see `export_kt_file`)."""
  t0 = time.perf_counter()
  world = make_world(WorldConfig(**c.world.to_dict()), seed)
  trace = simulate(world, StudentConfig(**c.students.to_dict()), c.n_students, seed)
  logs = to_logs(trace, world.n_videos)
  if export_to is not None:
    export_kt_file(logs, world.n_exercises, c.model.max_len, export_to)
  split = split_students(len(logs), c, seed)
  part = {k: logs.subset(v) for k, v in split.items()}
  items = world_items(world, c.model.text)
  mcfg = ModelConfig(**c.model.to_dict())
  sim_stats = dict(students=len(logs), videos=world.n_videos, exercises=world.n_exercises,
                   concepts=world.n_concepts, courses=world.n_courses,
                   mean_tokens=float(logs.length.mean()), dropout_rate=float(logs.dropped.mean()),
                   sequential_share=float(logs.sequential.mean()),
                   jump_share=float(trace["jumped"][trace["active"]].mean()),
                   accuracy=float(trace["correct"][trace["active"] & trace["has_exercise"]].mean()),
                   seconds=time.perf_counter() - t0)
  log.info("seed %d: %d students, %d videos, %d exercises; dropout %.2f", seed, len(logs),
           world.n_videos, world.n_exercises, sim_stats["dropout_rate"])
  new = lambda s: BehaviourModel(mcfg, items, rngs=nnx.Rngs(s))

  # pre-training (training students only)
  pre = new(seed * 1000 + 1)
  pcfg = train_cfg(c, "pretrain", c.pretrain.steps, seed * 1000 + 2, c.pretrain.lr)
  out = train(cfg=pcfg, workdir=wd / "pretrain", model=pre, loss_fn=pretrain_loss,
              get_batch=PretrainBatches(part["train"], items, c.pretrain.batch, seed, c),
              mesh=mesh, progress=progress, trainable=TRAINABLE)
  pre = out.model()
  pre_state = nnx.state(pre)
  pretrained = lambda: nnx.merge(nnx.graphdef(pre), copy.deepcopy(pre_state))
  hist = out.history
  pre_stats = dict(first_loss=hist[0]["loss"], final_loss=float(np.mean([h["loss"] for h in hist[-20:]])),
                   final_item_loss=float(np.mean([h["item_loss"] for h in hist[-20:]])),
                   final_response_loss=float(np.mean([h["response_loss"] for h in hist[-20:]])))
  inits = {"pretrained": pretrained, "scratch": lambda: new(seed * 1000 + 3)}
  res = dict(simulation=sim_stats, pretraining=pre_stats)
  res["recommendation"] = recommendation_compare(c, world, part, items, inits, mcfg, seed, wd,
                                                 mesh, progress)
  # DKT reads concept-answer pairs (skills, as DKT), SAKT exercise-answer pairs (as SAKT)
  res["knowledge_tracing"] = kt_compare(
      c, part, items, inits, seed, wd, mesh, progress,
      dkt_question=items.concept, sakt_question=np.arange(items.n_items) - items.n_videos,
      n_dkt=world.n_concepts, n_sakt=world.n_exercises)
  res["dropout"] = dropout_compare(c, world, part, items, inits, seed, wd, mesh, progress)
  res["resource"] = resource_compare(c, world, part, items, pretrained(), inits["scratch"](), seed)
  res["seconds"] = time.perf_counter() - t0
  return res


def _call(model, batch):
  return model(batch)


def _inputs(b: dict) -> dict:
  return {k: b[k] for k in ("items", "responses", "mask", "t")}


def _drop(b: dict, key: str) -> dict:
  return {k: v for k, v in b.items() if k != key}


# ----------------------------------------------------------------------------- recommendation

def recommendation_compare(c, world, part, items: Items, inits: dict, mcfg: ModelConfig, seed: int,
                           wd: Path, mesh, progress: bool) -> dict:
  E = c.eval_batch
  tr_t = tasks.rec_targets(part["train"], last_only=False)
  va_t, te_t = tasks.rec_targets(part["val"], True), tasks.rec_targets(part["test"], True)
  mk = lambda lg, t: tasks.TaskExamples(lg, t, "rec", 0, 0, items.mask_id, items.pad_id).make(t)
  val_b, test_b = mk(part["val"], va_t), mk(part["test"], te_t)
  rec = {}

  def rec_eval_model(m):
    return (rec_val(apply_batched(m, tasks.rec_scores, _inputs(val_b), E), val_b["target"]),
            lambda: rec_test(apply_batched(m, tasks.rec_scores, _inputs(test_b), E),
                             test_b["target"]))

  for name, init in inits.items():
    _, r = fit(c, init(), tasks.rec_loss,
               tasks.TaskExamples(part["train"], tr_t, "rec", c.finetune.batch, seed * 7 + 1,
                                  items.mask_id, items.pad_id),
               c.finetune.steps, c.finetune.lr, seed * 1000 + 11, wd / f"rec_{name}", mesh,
               rec_eval_model, progress=progress)
    rec[name] = r
  pop = bl.popularity_scores(part["train"], world.n_videos)
  rec["popularity"] = dict(test=rec_test(np.tile(pop, (len(te_t), 1)), test_b["target"]))
  nic = bl.next_in_course_scores(part["test"].items[te_t[:, 0]], te_t[:, 1], world.video_next, pop)
  rec["next_in_course"] = dict(test=rec_test(nic, test_b["target"]))
  sas = bl.SASRec(items.n_items, world.n_videos, mcfg.hidden, mcfg.layers, mcfg.heads, mcfg.mlp,
                  mcfg.max_len, mcfg.dropout, rngs=nnx.Rngs(seed * 1000 + 4))
  sas_b = lambda lg, t: dict(bl.sasrec_batch(lg, t[:, 0]), t=t[:, 1].astype(np.int32))
  sv, st = sas_b(part["val"], va_t), sas_b(part["test"], te_t)
  train_students = np.arange(len(part["train"]))

  def sas_batches(step):
    rng = np.random.default_rng([seed, 13, step])
    return bl.sasrec_batch(part["train"], rng.choice(train_students, c.finetune.batch))

  _, rec["sasrec"] = fit(c, sas, bl.sasrec_loss, sas_batches, c.finetune.steps, c.finetune.lr,
                         seed * 1000 + 12, wd / "rec_sasrec", mesh,
                         lambda m: (
                             rec_val(apply_batched(m, bl.sasrec_scores, _drop(sv, "target"), E),
                                     val_b["target"]),
                             lambda: rec_test(apply_batched(m, bl.sasrec_scores,
                                                                  _drop(st, "target"), E),
                                              test_b["target"])),
                         trainable=nnx.Param, progress=progress)
  return rec



# ----------------------------------------------------------------------------- dropout

def dropout_compare(c, world, part, items: Items, inits: dict, seed: int, wd: Path, mesh,
                    progress: bool) -> dict:
  E = c.eval_batch
  obs = c.dropout_obs
  drop = {}
  d_idx = {k: tasks.dropout_students(part[k], obs) for k in part}
  d_lab = {k: part[k].dropped[d_idx[k]] for k in part}
  d_b = {k: tasks.window_inputs(part[k].items[d_idx[k]], part[k].responses[d_idx[k]], obs,
                                items.pad_id) for k in ("val", "test")}

  def drop_eval(score_val, test_scores):
    """(val AUC, test()): F1's threshold is the one maximising F1 on validation."""
    thr = metrics.best_f1_threshold(d_lab["val"], score_val)

    def test():
      s = test_scores()
      return {"auc": metrics.auc(d_lab["test"], s), "f1": metrics.f1(d_lab["test"], s >= thr),
              "threshold": thr, "_scores": s}
    return metrics.auc(d_lab["val"], score_val), test

  for name, init in inits.items():
    model = tasks.DropoutClassifier(init(), rngs=nnx.Rngs(seed * 1000 + 21))
    _, drop[name] = fit(c, model, tasks.dropout_loss,
                        tasks.TaskExamples(part["train"], d_idx["train"], "dropout",
                                           c.finetune.batch, seed * 7 + 3, items.mask_id,
                                           items.pad_id, labels=part["train"].dropped, obs=obs),
                        c.finetune.steps, c.finetune.lr, seed * 1000 + 22, wd / f"dropout_{name}",
                        mesh, lambda m: drop_eval(
                            apply_batched(m, tasks.dropout_scores, d_b["val"], E),
                            lambda: apply_batched(m, tasks.dropout_scores, d_b["test"], E)),
                        progress=progress)
  feats = {k: bl.activity_features(part[k].items[d_idx[k]], part[k].responses[d_idx[k]], obs,
                                   world.n_videos, world.video_next, items.course)
           for k in part}
  xtr, xva, xte = bl.standardize(feats["train"], feats["val"], feats["test"])
  best = None
  for l2 in c.baselines.lr_l2:
    w = bl.logistic_regression(xtr, d_lab["train"].astype(np.float32), l2)
    v, test = drop_eval(bl.lr_scores(w, xva), lambda: bl.lr_scores(w, xte))
    if best is None or v > best["val"]:
      best = dict(val=v, test=test(), l2=l2)
  drop["logistic_regression"] = best
  drop["positive_rate"] = float(d_lab["test"].mean())
  drop["_labels"] = d_lab["test"]
  return drop



# ----------------------------------------------------------------------------- knowledge tracing

def kt_compare(c, part, items: Items, inits: dict, seed: int, wd: Path, mesh, progress: bool,
               dkt_question: np.ndarray, sakt_question: np.ndarray, n_dkt: int, n_sakt: int) -> dict:
  E = c.eval_batch
  tr_t = tasks.kt_targets(part["train"])
  va_t, te_t = tasks.kt_targets(part["val"]), tasks.kt_targets(part["test"])
  mk = lambda lg, t: tasks.TaskExamples(lg, t, "kt", 0, 0, items.mask_id, items.pad_id).make(t)
  val_b, test_b = mk(part["val"], va_t), mk(part["test"], te_t)
  y_val, y_test = val_b["label"], test_b["label"]
  groups = te_t[:, 0]

  def kt_eval(score_val, test_scores):
    def test():
      s = test_scores()
      return {"auc": metrics.auc(y_test, s), "_scores": s}
    return metrics.auc(y_val, score_val), test

  out = {}
  for name, init in inits.items():
    _, out[name] = fit(c, init(), tasks.kt_loss,
                       tasks.TaskExamples(part["train"], tr_t, "kt", c.finetune.batch,
                                          seed * 7 + 2, items.mask_id, items.pad_id),
                       c.finetune.steps, c.finetune.lr, seed * 1000 + 31, wd / f"kt_{name}", mesh,
                       lambda m: kt_eval(
                           apply_batched(m, tasks.kt_scores, _inputs(val_b), E),
                           lambda: apply_batched(m, tasks.kt_scores, _inputs(test_b), E)),
                       progress=progress)
  M = c.model.max_len
  for name, qmap, nq, make in (
      ("dkt", dkt_question, n_dkt, lambda: bl.DKT(n_dkt, c.model.hidden, rngs=nnx.Rngs(seed * 1000 + 5))),
      ("sakt", sakt_question, n_sakt, lambda: bl.SAKT(n_sakt, c.model.hidden, c.model.heads, M,
                                                      c.model.dropout, rngs=nnx.Rngs(seed * 1000 + 6)))):
    seqs = {k: bl.interactions(part[k], np.maximum(qmap, 0), M) for k in part}
    n_train = len(part["train"])

    def batches(step, seqs=seqs):
      rng = np.random.default_rng([seed, 17, step])
      s = rng.integers(0, n_train, c.finetune.batch)
      return {k: v[s] for k, v in seqs["train"].items()}

    def ev(m, seqs=seqs):
      pv = bl.kt_seq_predictions(apply_batched(m, _call, seqs["val"], E),
                                 seqs["val"]["count"])
      if len(pv) != len(y_val):   # the answers DKT/SAKT predict must be ours, in our order
        raise AssertionError(f"{len(pv)} sequence-model predictions for {len(y_val)} labels")
      pt = lambda: bl.kt_seq_predictions(
          apply_batched(m, _call, seqs["test"], E), seqs["test"]["count"])
      return kt_eval(pv, pt)

    _, out[name] = fit(c, make(), bl.kt_seq_loss, batches, c.finetune.steps, c.finetune.lr,
                       seed * 1000 + 32, wd / f"kt_{name}", mesh, ev, trainable=nnx.Param,
                       progress=progress)
  if part["test"].p_correct is not None:     # the simulator's own P(right): a ceiling, not a method
    out["ceiling"] = dict(test={"auc": metrics.auc(y_test, part["test"].p_correct[te_t[:, 0], te_t[:, 1]])})
  out["_labels"] = y_test
  out["_groups"] = groups
  out["examples"] = int(len(y_test))
  return out


# ----------------------------------------------------------------------------- resource evaluation

def resource_compare(c, world, part, items: Items, pretrained: BehaviourModel,
                     scratch: BehaviourModel, seed: int) -> dict:
  V = world.n_videos
  perm = np.random.default_rng([seed, 19]).permutation(V)
  n_tr, n_va = int(0.5 * V), int(0.25 * V)
  idx = dict(train=perm[:n_tr], val=perm[n_tr:n_tr + n_va], test=perm[n_tr + n_va:])
  y = world.video_quality
  train_logs = part["train"]
  feats = {"pretrained": tasks.mean_video_states(pretrained, train_logs, c.eval_batch),
           "scratch": tasks.mean_video_states(scratch, train_logs, c.eval_batch),
           "behaviour_stats": bl.video_behaviour_features(train_logs, V, items.concept)}
  if c.model.text:
    feats["text"] = items.text[:V]
  out = {}
  for name, x in feats.items():
    xtr, xva, xte = bl.standardize(x[idx["train"]], x[idx["val"]], x[idx["test"]])
    best = None
    for lam in c.baselines.ridge_lambda:
      w = bl.ridge(xtr, y[idx["train"]], lam)
      v = -metrics.mae(y[idx["val"]], bl.ridge_predict(w, xva))
      if best is None or v > best["val"]:
        p = bl.ridge_predict(w, xte)
        best = dict(val=v, lam=lam, test={"mae": metrics.mae(y[idx["test"]], p),
                                          "spearman": spearman(y[idx["test"]], p),
                                          "_errors": np.abs(y[idx["test"]] - p)})
    out[name] = best
  m = y[idx["train"]].mean()
  out["train_mean"] = dict(test={"mae": metrics.mae(y[idx["test"]], np.full(len(idx["test"]), m)),
                                 "spearman": float("nan"),
                                 "_errors": np.abs(y[idx["test"]] - m)})
  out["videos_test"] = int(len(idx["test"]))
  return out


def spearman(a, b) -> float:
  import scipy.stats
  return float(scipy.stats.spearmanr(a, b).statistic)


# ----------------------------------------------------------------------------- the run

def run(c: ml_collections.ConfigDict, workdir: str, command: str) -> dict:
  validate(c)
  from jaxpapers.mooc.report import write  # noqa: PLC0415 (matplotlib only when reporting)
  wd = Path(workdir)
  mesh = make_mesh(c.mesh.shape, c.mesh.axes)
  progress = c.get("progress", True)
  t0 = time.perf_counter()
  per_seed = []
  for k in range(c.seeds):
    seed = c.seed + k
    per_seed.append(run_seed(c, seed, wd / f"seed{seed}", mesh, progress,
                             export_to=wd / "kt_simulated_dkt.csv" if k == 0 else None))
  results = summarize(per_seed)
  results["seconds_simulated"] = time.perf_counter() - t0     # the four tasks, every seed
  if c.kt_file:
    results["knowledge_tracing_file"] = run_kt_file(c, wd / "kt_file", mesh, progress)
  results.update(command=command, seeds=c.seeds, seconds=time.perf_counter() - t0,
                 n_students=c.n_students)
  atomic_write_json(wd / "per_seed.json", public(per_seed), indent=1)
  write(wd, c, results, per_seed)
  return results


METHODS = {"recommendation": ("pretrained", "scratch", "sasrec", "next_in_course", "popularity"),
           "knowledge_tracing": ("pretrained", "scratch", "dkt", "sakt", "ceiling"),
           "dropout": ("pretrained", "scratch", "logistic_regression"),
           "resource": ("pretrained", "scratch", "behaviour_stats", "text", "train_mean")}


def summarize(per_seed: list[dict]) -> dict:
  """Per task and method, each test metric's mean and sample std over seeds; the paired
  difference pretrained - scratch per seed, its mean and std; and per seed a bootstrap interval
  of that difference over test students (videos for resource evaluation)."""
  out = {}
  for task, methods in METHODS.items():
    t = {}
    for m in methods:
      runs = [s[task][m] for s in per_seed if m in s[task]]
      if not runs:
        continue
      keys = [k for k in runs[0]["test"] if not k.startswith("_") and k != "threshold"]
      t[m] = {k: mean_std([r["test"][k] for r in runs]) for k in keys}
    main = MAIN_METRIC[task]
    diffs = [s[task]["pretrained"]["test"][main] - s[task]["scratch"]["test"][main]
             for s in per_seed]
    t["pretrained_minus_scratch"] = dict(metric=main, per_seed=diffs, **mean_std(diffs),
                                         bootstrap95=[bootstrap_diff(task, s) for s in per_seed])
    out[task] = t
  return out


def bootstrap_diff(task: str, s: dict, reps: int = 1000) -> list[float]:
  """95% percentile interval of pretrained - scratch on one seed's test set, resampling test
  students (all of a student's examples together; 1000 resamples, 300 for the AUC tasks) or, for
  resource evaluation, test videos."""
  rng = np.random.default_rng(0)
  a, b = s[task]["pretrained"]["test"], s[task]["scratch"]["test"]
  if task == "resource":
    ea, eb = a["_errors"], b["_errors"]
    i = rng.integers(0, len(ea), (reps, len(ea)))
    d = ea[i].mean(1) - eb[i].mean(1)
  elif task == "recommendation":
    ea, eb = a["_per_example"], b["_per_example"]
    i = rng.integers(0, len(ea), (reps, len(ea)))
    d = ea[i].mean(1) - eb[i].mean(1)
  else:
    if task == "knowledge_tracing":
      y, groups = s[task]["_labels"], s[task]["_groups"]
    else:
      y, groups = s["dropout"]["_labels"], np.arange(len(s["dropout"]["_labels"]))
    sa, sb = a["_scores"], b["_scores"]
    uniq, inv = np.unique(groups, return_inverse=True)
    members = [np.nonzero(inv == g)[0] for g in range(len(uniq))]
    d = []
    for _ in range(min(reps, 300)):
      pick = np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))])
      d.append(metrics.auc(y[pick], sa[pick]) - metrics.auc(y[pick], sb[pick]))
    d = np.array(d)
  return [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))]


# ----------------------------------------------------------------------------- knowledge-tracing files

def export_kt_file(logs: Logs, n_exercises: int, max_len: int, path: Path) -> None:
  """Simulated students' answers in the DKT layout (question = exercise id; students with at
  least 2 answers), so that the file path can be exercised:
  `--config.kt_file=<workdir>/kt_simulated_dkt.csv`."""
  seqs = bl.interactions(logs, np.arange(logs.n_videos + n_exercises) - logs.n_videos, max_len)
  keep = seqs["count"] >= 2
  formats.write_dkt_csv(path, [q[:n] for q, n in zip(seqs["question"][keep], seqs["count"][keep])],
                        [r[:n] for r, n in zip(seqs["correct"][keep], seqs["count"][keep])])


def file_logs(data: formats.KTData, max_len: int) -> Logs:
  """A KT file's answers as behaviour tokens (no videos: item = question, response wrong/right),
  each student's first max_len answers."""
  N = len(data.questions)
  items = -np.ones((N, max_len), np.int32)
  resp = np.zeros((N, max_len), np.int32)
  length = np.zeros(N, np.int64)
  for i, (q, r) in enumerate(zip(data.questions, data.correct)):
    n = min(len(q), max_len)
    items[i, :n], resp[i, :n], length[i] = q[:n], np.where(r[:n] == 1, RIGHT, WRONG), n
  return Logs(items, resp, length, np.zeros(N, bool), np.zeros(N, bool), n_videos=0)


def run_kt_file(c, wd: Path, mesh, progress: bool) -> dict:
  """Ours (pre-trained on the file's training students, and scratch), DKT and SAKT on a KT file;
  questions are the file's ids (no text, concepts or course meta: each question is its own
  concept)."""
  data = formats.read_kt(c.kt_file, c.kt_format)
  logs = file_logs(data, c.model.max_len)
  keep = np.nonzero(logs.length >= 2)[0]
  logs = logs.subset(keep)
  Q = data.n_questions
  items = Items(n_videos=0, text=np.zeros((Q, 1), np.float32), concept=np.arange(Q),
                course=np.zeros(Q, np.int64), field=np.zeros(Q, np.int64),
                school=np.zeros(Q, np.int64), n_concepts=Q, n_courses=1, n_fields=1, n_schools=1)
  mcfg = ModelConfig(**(c.model.to_dict() | dict(text=False, meta=False)))
  out = {"students": int(len(logs)), "questions": Q, "answers_kept": int(logs.length.sum()),
         "answers": int(sum(len(q) for q in data.questions)), "max_len": c.model.max_len,
         "dropped_rows": data.dropped_rows, "file": str(c.kt_file), "format": c.kt_format}
  per_seed = []
  for k in range(c.seeds):
    seed = c.seed + k
    split = split_students(len(logs), c, seed)
    part = {n: logs.subset(v) for n, v in split.items()}
    new = lambda s: BehaviourModel(mcfg, items, rngs=nnx.Rngs(s))
    pre = new(seed * 1000 + 1)
    pcfg = train_cfg(c, "pretrain", c.pretrain.steps, seed * 1000 + 2, c.pretrain.lr)
    pre = train(cfg=pcfg, workdir=wd / f"seed{seed}" / "pretrain", model=pre,
                loss_fn=pretrain_loss,
                get_batch=PretrainBatches(part["train"], items, c.pretrain.batch, seed, c),
                mesh=mesh, progress=progress, trainable=TRAINABLE).model()
    st = nnx.state(pre)
    inits = {"pretrained": lambda: nnx.merge(nnx.graphdef(pre), copy.deepcopy(st)),
             "scratch": lambda: new(seed * 1000 + 3)}
    per_seed.append(kt_compare(c, part, items, inits, seed, wd / f"seed{seed}", mesh, progress,
                               dkt_question=np.arange(Q), sakt_question=np.arange(Q),
                               n_dkt=Q, n_sakt=Q))
  for m in ("pretrained", "scratch", "dkt", "sakt"):
    out[m] = {"auc": mean_std([s[m]["test"]["auc"] for s in per_seed])}
  d = [s["pretrained"]["test"]["auc"] - s["scratch"]["test"]["auc"] for s in per_seed]
  out["pretrained_minus_scratch"] = dict(metric="auc", per_seed=d, **mean_std(d))
  out["pretrained_minus_dkt"] = mean_std([s["pretrained"]["test"]["auc"] - s["dkt"]["test"]["auc"]
                                          for s in per_seed])
  return out
