"""Checkpoint selection on validation queries, per query type, as kgTransformer's official
fine-tuning does it (THUDM/kgTransformer: train.py keeps the parameters at the best validation
Hits@3 (`save_best`); main.py's `from_best` picks, for each test query type, the saved
checkpoint with the best validation Hits@3 of that type). The test queries are scored once,
after training, each type with the parameters chosen for it."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Protocol

from flax import nnx

from jaxpapers.core.checkpoint import load_params_npz, save_params_npz
from jaxpapers.core.config import differing_keys
from jaxpapers.core.errors import WorkdirError
from jaxpapers.core.workdir import atomic_write_json, read_json
from jaxpapers.kgt import evaluate as E
from jaxpapers.kgt import queries as Q

METRICS = ("mrr", "hits1", "hits3", "hits10")


class Scorer(Protocol):
  def use(self, model: nnx.Module) -> None: ...          # score with this model's parameters
  def scores(self, qtype: str, queries: list): ...       # [n, num_entities], higher is better


FALLBACK = "*"


def choose(curve: dict[int, dict], types, metric: str) -> dict[str, int]:
  """Per type, the earliest step with the best validation `metric`; under FALLBACK the earliest
  step with the best mean of `metric` over `types` (for types without validation queries)."""
  out = {t: min(curve, key=lambda s: (-curve[s][t][metric], s)) for t in types}
  out[FALLBACK] = min(curve, key=lambda s: (-sum(curve[s][t][metric] for t in types), s))
  return out


def point_types(curve: dict[int, dict]) -> list[str]:
  return [t for t in next(iter(curve.values())) if t in Q.TYPES]


def read_curve(directory: Path) -> dict[int, dict]:
  """The evaluation points a run wrote to directory/curve.json, by step ({} when none)."""
  path = directory / "curve.json"
  return {int(k): v for k, v in read_json(path).items()} if path.is_file() else {}


def chosen_params(directory: str | Path, model: nnx.Module, qtype: str, metric: str) -> int:
  """Loads into `model` the parameters a finished run's validation chose for `qtype` (from
  `directory`'s curve.json and step_N.npz); returns the step."""
  directory = Path(directory)
  curve = read_curve(directory)
  if not curve:
    raise WorkdirError(f"{directory} holds no validation curve (a kgt/queries run of an older "
                       "layout, or not finished); run it again in a new --workdir")
  chosen = choose(curve, point_types(curve), metric)
  step = chosen.get(qtype, chosen[FALLBACK])
  load_params_npz(directory / f"step_{step}.npz", model)
  return step


class Selection:
  """Evaluation points of one training run: at each point (the train loop's `eval_fn`, and the
  last step) `metric` on every validation type, and the parameters (step_N.npz in `directory`;
  after the test only the chosen ones are kept). A resumed run reads the points it already has;
  the steps it replays give the same points again (and if they did not, no file is missing)."""

  def __init__(self, directory: str | Path, valid: Q.QuerySplit, scorer: Scorer,
               types=Q.TYPES, metric: str = "hits3", fingerprint: dict | None = None):
    if metric not in METRICS:
      raise ValueError(f"metric {metric!r} is not one of {METRICS}")
    self.dir, self.valid, self.scorer, self.metric = Path(directory), valid, scorer, metric
    self.types = [t for t in types if valid.queries.get(t)]
    if not self.types:
      raise ValueError(f"no validation queries of the types {tuple(types)} to select on")
    # what the points depend on (the run's config): a resumed run of another config is refused
    self.fingerprint = json.loads(json.dumps(dict(fingerprint or {}, metric=metric, types=self.types)))
    self.curve: dict[int, dict] = {}
    if (self.dir / "curve.json").is_file():
      saved = read_json(self.dir / "fingerprint.json") if (self.dir / "fingerprint.json").is_file() else None
      if saved != self.fingerprint:
        diff = differing_keys(saved or {}, self.fingerprint)
        raise WorkdirError(f"{self.dir} holds evaluation points of another config (differs in "
                           f"{', '.join(diff[:4]) or 'its record'}); use a new --workdir")
      self.curve = read_curve(self.dir)

  def __call__(self, model: nnx.Module, step: int) -> dict[str, float]:
    self.scorer.use(model)
    self.curve[step] = E.evaluate(self.scorer.scores, self.valid, self.types)
    self.dir.mkdir(parents=True, exist_ok=True)
    if not (self.dir / "fingerprint.json").is_file():
      atomic_write_json(self.dir / "fingerprint.json", self.fingerprint)
    save_params_npz(self.dir / f"step_{step}.npz", model)
    atomic_write_json(self.dir / "curve.json", {str(s): v for s, v in sorted(self.curve.items())})
    point = self.curve[step]
    return {f"valid_{self.metric}_{a}": point[a][self.metric] for a in ("avg_in", "avg_out") if a in point}

  def chosen(self) -> dict[str, int]:
    """Per validation type its chosen step (`choose`), and the FALLBACK step."""
    if not self.curve:
      raise WorkdirError(f"{self.dir}: no evaluation point to choose from")
    return choose(self.curve, self.types, self.metric)

  def test(self, model: nnx.Module, split: Q.QuerySplit) -> dict:
    """E.evaluate's output on `split`, each type scored with its chosen parameters (a type
    without validation queries: the FALLBACK point's), loaded into `model`, which is left
    holding the last of them; then the unchosen points' files are deleted."""
    chosen = self.chosen()
    by_step = defaultdict(list)
    for t in Q.TYPES:
      if split.queries.get(t):
        by_step[chosen.get(t, chosen[FALLBACK])].append(t)
    out = {}
    for step, types in sorted(by_step.items()):
      path = self.dir / f"step_{step}.npz"
      if not path.is_file():
        raise WorkdirError(f"{path} (the parameters chosen for {', '.join(types)}) is missing; "
                           "use a new --workdir")
      load_params_npz(path, model)
      self.scorer.use(model)
      out.update(E.evaluate(self.scorer.scores, split, types))
    keep = set(chosen.values())
    for f in self.dir.glob("step_*.npz"):
      if int(f.stem[len("step_"):]) not in keep:
        f.unlink(missing_ok=True)
    return E.with_averages(out)

  def valid_at_choice(self) -> dict:
    """The validation metrics of each type at its chosen point, with the averages."""
    chosen = self.chosen()
    return E.with_averages({t: self.curve[chosen[t]][t] for t in self.types})

  def summary(self) -> dict:
    """The validation curve (metric per type and average, per step) and the chosen steps."""
    return {"metric": self.metric, "chosen": self.chosen(),
            "curve": [{"step": s, **{t: p[t][self.metric] for t in p}} for s, p in sorted(self.curve.items())]}
