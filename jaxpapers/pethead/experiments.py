"""`jaxpapers run pethead/suite`: EH-FT against FT, LP-FT and PET alone on a suite of
classification tasks, on the pretrained MiniLM encoder, several seeds (arXiv 2210.16771 §4).

Methods (the paper's names): `ft` fine-tunes everything from a random head; `lpft` trains the head
alone on the frozen backbone, then fine-tunes everything (Kumar et al. 2022); `pet_lora` trains
LoRA + head for the whole budget (backbone frozen); `ehft_<pet>` trains <pet> + head for the first
`stage1_fraction` of the budget, then discards the PET parameters and fine-tunes the pretrained
backbone from that head with a fresh optimizer. Every method has the same number of steps.

A seed replicates everything random: the task split, the head and PET initialisation, dropout and
the batch order. Scores are test scores at the dev evaluation with the best dev score (the
released code keeps a running best on dev); the final-step score is kept too.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxpapers.core import config as cfglib
from jaxpapers.core.errors import ConfigError
from jaxpapers.core.mesh import make_mesh
from jaxpapers.core.train import train, validate_train
from jaxpapers.core.stats import mean_std
from jaxpapers.core.workdir import cached_result, persistent_compilation_cache
from jaxpapers.nn import minilm, pet
from jaxpapers.nn.bert import Bert, BertConfig
from jaxpapers.pethead import tasks as tasklib
from jaxpapers.pethead.model import Classifier, loss_fn, predict, with_head_of

log = logging.getLogger("jaxpapers")

# method -> its stages, each (what trains: a `pet.trainable_filter` name)
METHODS = {
    "ft": ("full",),
    "lpft": ("head", "full"),
    "pet_lora": ("lora",),
    "pet_bitfit": ("bitfit",),
    "pet_prefix": ("prefix",),
    "ehft_lora": ("lora", "full"),
    "ehft_bitfit": ("bitfit", "full"),
    "ehft_prefix": ("prefix", "full"),
}
SHIFT_METHODS = ("ft", "lpft", "ehft_lora", "ehft_bitfit", "ehft_prefix")


def validate(c: ml_collections.ConfigDict) -> None:
  pos_int = lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0
  cfglib.check(c, "methods", lambda v: len(v) > 0 and all(m in METHODS for m in v),
               f"a non-empty subset of {tuple(METHODS)}")
  cfglib.check(c, "seeds", pos_int, "a positive int")
  cfglib.check(c, "tasks", lambda v: isinstance(v, (tuple, list)) and len(v) > 0,
               "a non-empty tuple of task names or JSONL files")
  for name in c.tasks:
    if name not in tasklib.BUILTIN and not Path(name).is_file():
      raise ConfigError(f"--config.tasks: {name!r} is neither a shipped task {tasklib.BUILTIN} "
                        "nor an existing JSONL file")
    if name not in tasklib.BUILTIN:
      load_task(name, c)              # the file itself, before anything is written
  for key in ("data.n_train", "data.n_dev", "data.n_test", "data.default_max_len", "eval.batch",
              "eval.per_stage", "train.batch", "train.epochs"):
    cfglib.check(c, key, pos_int, "a positive int")
  cfglib.check(c, "data.max_len", lambda v: all(pos_int(n) and n <= minilm.MAX_SEQ_LENGTH
                                                for n in v.values()),
               f"token lengths (ints in [1, {minilm.MAX_SEQ_LENGTH}]) per task")
  cfglib.check(c, "data.default_max_len", lambda v: v <= minilm.MAX_SEQ_LENGTH,
               f"at most {minilm.MAX_SEQ_LENGTH}")
  cfglib.check(c, "stage1_fraction", lambda v: 0.0 < v < 1.0, "in (0, 1)")
  cfglib.check(c, "model.encoder", lambda v: v in ("minilm", "tiny"), "'minilm' or 'tiny'")
  cfglib.check(c, "model.pool", lambda v: v in ("cls", "mean"), "'cls' or 'mean'")
  cfglib.check(c, "model.dropout", lambda v: 0.0 <= v < 1.0, "in [0, 1)")
  for key in ("model.lora_rank", "model.prefix_len"):
    cfglib.check(c, key, pos_int, "a positive int")
  for kind in ("full", "head", "lora", "bitfit", "prefix"):
    cfglib.check(c, f"lr.{kind}", lambda v: isinstance(v, float) and math.isfinite(v) and v > 0,
                 "a finite positive float")
  cfglib.check(c, "full_lr_grid", lambda v: all(isinstance(x, float) and x > 0 for x in v),
               "a tuple of positive floats (empty: use lr.full)")
  validate_train(_train_cfg(c, "full", 1, 1))
  cfglib.check(c, "train.ckpt_every", lambda v: v == 0,
               "0 (the suite resumes by finished method and seed, not mid-stage)")
  make_mesh(c.mesh.shape, c.mesh.axes)


def _train_cfg(c, kind: str, steps: int, seed: int, lr: float | None = None):
  t = dict(c.train.to_dict(), steps=steps, lr=float(lr if lr is not None else c.lr[kind]))
  t.pop("epochs")
  return ml_collections.ConfigDict({"seed": seed, "train": t})


# ----------------------------------------------------------------------------- data


@dataclasses.dataclass
class Split:
  ids: np.ndarray
  mask: np.ndarray
  type_ids: np.ndarray
  y: np.ndarray
  truncated: int

  def rows(self, idx) -> dict:
    return {"ids": self.ids[idx], "mask": self.mask[idx], "type_ids": self.type_ids[idx],
            "y": self.y[idx]}

  def __len__(self):
    return len(self.y)


def encode_splits(task: tasklib.Task, seed: int, c, tokenizer) -> dict[str, Split]:
  idx = tasklib.split(task, seed, c.data.n_train, c.data.n_dev, c.data.n_test)
  length = c.data.max_len.get(task.name, c.data.default_max_len)
  out = {}
  for name, rows in idx.items():
    texts = [task.texts[i] for i in rows]
    pairs = None if task.pairs is None else [task.pairs[i] for i in rows]
    e = tokenizer(texts, pairs, length=length)
    out[name] = Split(e.ids, e.mask, e.type_ids, task.y[rows], e.truncated)
  return out


class Batches:
  """Training batches: epoch-wise permutations of the train split, a function of (seed, stage);
  the last incomplete batch of an epoch is dropped."""

  def __init__(self, split: Split, batch: int, seed: int, salt: int):
    self.split, self.batch, self.seed, self.salt = split, batch, seed, salt
    self.per_epoch = max(len(split) // batch, 1)
    self._perm = {}

  def __call__(self, step: int) -> dict:
    epoch, i = divmod(step, self.per_epoch)
    if epoch not in self._perm:
      self._perm = {epoch: np.random.default_rng([self.seed, self.salt, epoch]).permutation(
          len(self.split))}
    perm = self._perm[epoch]
    idx = np.resize(perm[i * self.batch:(i + 1) * self.batch], self.batch)
    return self.split.rows(idx)


# ----------------------------------------------------------------------------- evaluation


def macro_f1(y, pred, num_classes: int) -> float:
  """Mean over the classes present in y or pred of per-class F1."""
  f1s = []
  for k in range(num_classes):
    tp = np.sum((pred == k) & (y == k))
    fp, fn = np.sum((pred == k) & (y != k)), np.sum((pred != k) & (y == k))
    if tp + fp + fn:
      f1s.append(2 * tp / (2 * tp + fp + fn))
  return float(np.mean(f1s))


class Evaluator:
  """Jitted forward passes over a split in fixed-size chunks (the last one padded)."""

  def __init__(self, batch: int):
    self.batch = batch
    self._logits = nnx.jit(lambda m, b: m(b))
    self._features = nnx.jit(lambda m, b: m.features(b))

  def _chunks(self, fn, model, split: Split):
    out = []
    for s in range(0, len(split), self.batch):
      idx = np.arange(s, s + self.batch)
      rows = split.rows(np.minimum(idx, len(split) - 1))
      out.append(np.asarray(fn(model, rows))[:min(self.batch, len(split) - s)])
    return np.concatenate(out)

  def scores(self, model, split: Split) -> dict:
    pred = np.asarray(predict(jnp.asarray(self._chunks(self._logits, model, split))))
    return {"accuracy": float(np.mean(pred == split.y)),
            "macro_f1": macro_f1(split.y, pred, model.num_classes)}

  def features(self, model, split: Split) -> np.ndarray:
    return self._chunks(self._features, model, split)


def feature_shift(before: np.ndarray, after: np.ndarray) -> dict:
  """The paper's Fig. 1 quantity: L2 distance between the head's input features (final layer)
  before and after fine-tuning, per training example, averaged; also relative to the mean norm
  before."""
  d = np.linalg.norm(after - before, axis=-1)
  return {"l2": float(d.mean()), "relative": float(d.mean() / np.linalg.norm(before, axis=-1).mean())}


# ----------------------------------------------------------------------------- one method


def encoder(c, seed: int, kind: str | None) -> Bert:
  """The backbone for a stage of kind `kind` (PET parameters only for that PET method)."""
  kw = dict(dropout=c.model.dropout)
  if kind == "lora":
    kw.update(lora_rank=c.model.lora_rank, lora_alpha=float(c.model.lora_alpha))
  elif kind == "prefix":
    kw.update(prefix_len=c.model.prefix_len)
  rngs = nnx.Rngs(params=seed * 7919 + 17)
  if c.model.encoder == "minilm":
    return minilm.load(rngs=rngs, **kw)
  tiny = BertConfig(hidden=32, num_layers=2, num_heads=4, mlp_dim=64, max_positions=minilm.MAX_SEQ_LENGTH,
                    **kw)
  backbone = Bert(dataclasses.replace(tiny, lora_rank=0, prefix_len=0), rngs=nnx.Rngs(params=1234))
  model = Bert(tiny, rngs=rngs)      # tests: one fixed random "pretrained" backbone, PET fresh
  nnx.update(model, nnx.state(backbone))
  return model


def run_method(name: str, c, data: dict[str, Split], num_classes: int, seed: int, steps: int,
               wd: Path, mesh, evaluator: Evaluator, full_lr: float, progress: bool) -> dict:
  """Trains `name` on one task and seed; returns its dev/test scores (and the final model)."""
  stages = METHODS[name]
  two = len(stages) == 2
  s1 = max(1, round(c.stage1_fraction * steps)) if two else steps
  lengths = (s1, steps - s1) if two else (steps,)
  head_rngs = nnx.Rngs(params=seed * 104729 + 3)   # the same random head for every method
  model = Classifier(encoder(c, seed, stages[0]), num_classes, c.model.pool, rngs=head_rngs)
  evals_at = []
  best = {"dev": -1.0}

  def eval_fn(m, step):
    dev = evaluator.scores(m, data["dev"])
    row = {"step": step, "dev_accuracy": dev["accuracy"], "dev_macro_f1": dev["macro_f1"]}
    if dev["accuracy"] > best["dev"]:   # test only where dev improves (the reported point)
      best.update(dev=dev["accuracy"], step=step, dev_scores=dev,
                  test=evaluator.scores(m, data["test"]))
    evals_at.append(row)
    return {"dev_accuracy": dev["accuracy"]}

  t0 = time.perf_counter()
  counts = []
  for i, (kind, n) in enumerate(zip(stages, lengths)):
    last = i == len(stages) - 1
    counts.append(pet.count(model, pet.trainable_filter(kind)))
    lr = full_lr if kind == "full" else None
    cfg = _train_cfg(c, kind, n, seed * 31 + i, lr)
    cfg.train.eval_every = max(1, n // c.eval.per_stage) if last else 0
    offset = sum(lengths[:i])    # evaluations are labelled by the method's step, not the stage's
    out = train(cfg=cfg, workdir=wd / f"stage{i + 1}_{kind}", model=model, loss_fn=loss_fn,
                get_batch=Batches(data["train"], c.train.batch, seed, salt=i), mesh=mesh,
                eval_fn=(lambda m, s, o=offset: eval_fn(m, s + o)) if last else None,
                progress=progress,
                trainable=pet.trainable_filter(kind))
    model = out.model()
    if not last:   # EH-FT / LP-FT handover: pretrained backbone, the trained head, PET dropped
      model = with_head_of(encoder(c, seed, None), model)
  eval_fn(model, steps)
  final_test = best["test"] if best["step"] == steps else evaluator.scores(model, data["test"])
  return {"method": name, "seed": seed, "steps": list(lengths), "full_lr": full_lr,
          "best_step": best["step"], "dev": best["dev_scores"], "test": best["test"],
          "final_test": final_test, "evals": evals_at,
          "trained_params": counts, "seconds": time.perf_counter() - t0}, model


# ----------------------------------------------------------------------------- the suite


def load_task(name: str, c) -> tasklib.Task:
  if name in tasklib.BUILTIN:
    return tasklib.builtin(name)
  labels = c.data.labels.get(Path(name).stem) if "labels" in c.data else None
  return tasklib.from_file(name, labels)


def _steps(c, n_train: int) -> int:
  return c.train.epochs * max(n_train // c.train.batch, 1)


SUITE_ONLY = ("tasks", "methods", "seeds", "progress")   # keys that do not change one sub-run


def fingerprint(c) -> dict:
  return {k: v for k, v in c.to_dict().items() if k not in SUITE_ONLY}


TUNING_SEED = 1000   # added to c.seed: the split and runs of the learning-rate search


def search_full_lr(task, c, wd: Path, mesh, tokenizer, evaluator, progress) -> tuple[float, dict]:
  """The full fine-tuning learning rate (every method's full stage) with the best dev accuracy of
  FT over `full_lr_grid`, on a seed of its own (its split, head and batches; never reported)."""
  seed = c.seed + TUNING_SEED
  data = encode_splits(task, seed, c, tokenizer)
  steps = _steps(c, len(data["train"]))
  dev = {}
  for lr in c.full_lr_grid:
    path = wd / task.name / "lr_search" / f"ft_lr{lr:g}"
    r, _ = cached_result(path / "result.json",
                         lambda: run_method("ft", c, data, task.num_classes, seed, steps, path,
                                            mesh, evaluator, lr, progress), fingerprint(c))
    dev[f"{lr:g}"] = r["dev"]["accuracy"]
  best = float(max(c.full_lr_grid, key=lambda lr: dev[f"{lr:g}"]))
  log.info("%s: full fine-tuning lr %g (dev accuracy of FT on the tuning seed: %s)", task.name,
           best, dev)
  return best, dev


def run_task(task: tasklib.Task, c, wd: Path, mesh, tokenizer, evaluator, progress: bool) -> dict:
  """Every method and seed on one task (FT's learning rate chosen first, see search_full_lr)."""
  out = {"runs": {m: [] for m in c.methods}, "shift": {m: [] for m in c.methods},
         "truncated": {}, "sizes": {}}
  seeds = [c.seed + k for k in range(c.seeds)]
  full_lr, lr_search = c.lr.full, {}
  if c.full_lr_grid:   # FT's learning rate on the dev split of a tuning seed that is not reported
    full_lr, lr_search = search_full_lr(task, c, wd, mesh, tokenizer, evaluator, progress)
  for k, seed in enumerate(seeds):
    data = encode_splits(task, seed, c, tokenizer)
    out["truncated"][str(seed)] = {n: s.truncated for n, s in data.items()}
    out["sizes"] = {n: len(s) for n, s in data.items()}
    steps = _steps(c, len(data["train"]))
    sub = lambda name: wd / task.name / f"seed{seed}" / name
    before = []

    def fit(m: str, lr: float, path: Path) -> dict:
      def fresh():
        r, model = run_method(m, c, data, task.num_classes, seed, steps, path, mesh, evaluator, lr,
                              progress)
        if m in SHIFT_METHODS:   # Fig. 1: features of the training set before vs after
          if not before:
            base = Classifier(encoder(c, seed, None), task.num_classes, c.model.pool,
                              rngs=nnx.Rngs(0))
            before.append(evaluator.features(base, data["train"]))
          r["feature_shift"] = feature_shift(before[0], evaluator.features(model, data["train"]))
        return r, model
      return cached_result(path / "result.json", fresh, fingerprint(c))[0]

    for m in c.methods:
      r = fit(m, full_lr, sub(m))
      out["runs"][m].append(r)
      log.info("%s seed %d %-12s dev %.3f test %.3f (best step %d; final %.3f)", task.name, seed,
               m, r["dev"]["accuracy"], r["test"]["accuracy"], r["best_step"],
               r["final_test"]["accuracy"])
  out["full_lr"], out["lr_search"] = full_lr, lr_search
  return out


def summarize(per_task: dict, c) -> dict:
  """results.json: per method, per task (and `avg` over tasks) the mean test accuracy (in %);
  the spread over seeds; macro-F1; paired EH-FT - FT differences; feature shift."""
  res = {}
  tasks = list(per_task)
  for m in c.methods:
    acc = {t: [100 * r["test"]["accuracy"] for r in per_task[t]["runs"][m]] for t in tasks}
    res[m] = {t: float(np.mean(v)) for t, v in acc.items()}
    res[m]["avg"] = float(np.mean([res[m][t] for t in tasks]))
    per_seed_avg = np.mean([acc[t] for t in tasks], axis=0)   # the task average of each seed
    res[m]["avg_std"] = mean_std(per_seed_avg)["std"]
    res[m]["detail"] = {t: {"accuracy": mean_std(acc[t]),
                            "macro_f1": mean_std([100 * r["test"]["macro_f1"]
                                                   for r in per_task[t]["runs"][m]]),
                            "final_accuracy": mean_std([100 * r["final_test"]["accuracy"]
                                                         for r in per_task[t]["runs"][m]]),
                            "dev_accuracy": mean_std([100 * r["dev"]["accuracy"]
                                                       for r in per_task[t]["runs"][m]])}
                        for t in tasks}
    res[m]["trained_params"] = per_task[tasks[0]]["runs"][m][0]["trained_params"]
  if "ft" in c.methods:
    res["paired_vs_ft"] = {}
    for m in c.methods:
      if m == "ft":
        continue
      diffs = {t: [100 * (a["test"]["accuracy"] - b["test"]["accuracy"])
                   for a, b in zip(per_task[t]["runs"][m], per_task[t]["runs"]["ft"])] for t in tasks}
      avg = np.mean([diffs[t] for t in tasks], axis=0)
      res["paired_vs_ft"][m] = {"avg": mean_std(avg), **{t: mean_std(d) for t, d in diffs.items()}}
  res["feature_shift"] = {}
  if "ft" in c.methods:   # method - FT, relative shift, task-averaged per seed (as accuracy)
    res["feature_shift_vs_ft"] = {
        m: mean_std(np.mean([[a["feature_shift"]["relative"] - b["feature_shift"]["relative"]
                               for a, b in zip(per_task[t]["runs"][m], per_task[t]["runs"]["ft"])]
                              for t in tasks], axis=0))
        for m in c.methods if m in SHIFT_METHODS and m != "ft"}
  for m in c.methods:
    if m in SHIFT_METHODS:
      vals = [r["feature_shift"] for t in tasks for r in per_task[t]["runs"][m]]
      res["feature_shift"][m] = {"l2": float(np.mean([v["l2"] for v in vals])),
                                 "relative": float(np.mean([v["relative"] for v in vals])),
                                 "per_task": {t: float(np.mean([r["feature_shift"]["l2"]
                                                                for r in per_task[t]["runs"][m]]))
                                              for t in tasks}}
  res["tasks"] = tasks
  res["seeds"] = c.seeds
  res["score"] = ("test accuracy (%) at the dev evaluation with the best dev accuracy, mean over "
                  "seeds; `final_accuracy`: at the last step")
  res["full_lr"] = {t: per_task[t]["full_lr"] for t in tasks}
  res["lr_search"] = {t: per_task[t]["lr_search"] for t in tasks}
  res["truncated"] = {t: per_task[t]["truncated"] for t in tasks}
  res["split_sizes"] = {t: per_task[t]["sizes"] for t in tasks}
  return res


def run(c: ml_collections.ConfigDict, workdir: str, command: str) -> dict:
  validate(c)
  from jaxpapers.pethead.report import write  # noqa: PLC0415 (matplotlib only when reporting)
  wd = Path(workdir)
  mesh = make_mesh(c.mesh.shape, c.mesh.axes)
  t0 = time.perf_counter()
  persistent_compilation_cache(wd / "xla_cache")
  tokenizer = minilm.Tokenizer()
  evaluator = Evaluator(c.eval.batch)
  task_objs = [load_task(n, c) for n in c.tasks]     # every task file checked before any training
  per_task = {}
  for task in task_objs:
    log.info("task %s: %d examples, %d classes, %s", task.name, len(task.y), task.num_classes,
             "pairs" if task.pairs else "single texts")
    per_task[task.name] = run_task(task, c, wd / "runs", mesh, tokenizer, evaluator,
                                   progress=c.get("progress", True))
  results = summarize(per_task, c)
  results["seconds"] = time.perf_counter() - t0
  results["command"] = command
  write(wd, c, results, per_task)
  return results
