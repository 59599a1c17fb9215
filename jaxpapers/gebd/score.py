"""`jaxpapers run gebd/score`: the Kinetics-GEBD protocol (`jaxpapers.gebd.metric`) on a user's
annotation pickle (e.g. `k400_mr345_val_min_change_duration0.3.pkl`) and prediction pickle
(video_id -> boundary times in seconds), at every threshold in `thresholds`."""
from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np

from jaxpapers.core import config as cfglib
from jaxpapers.core import safe_pickle
from jaxpapers.core.errors import DataError
from jaxpapers.core.workdir import atomic_write_json, atomic_write_text
from jaxpapers.gebd import annotations as ann
from jaxpapers.gebd import metric


def validate(c: ml_collections.ConfigDict) -> None:
  for key in ("gt_file", "pred_file"):
    cfglib.check(c, key, lambda v: isinstance(v, str) and v != "", "a path to a pickle")
  cfglib.check(c, "thresholds", lambda v: len(v) > 0 and all(0 < t <= 1 for t in v),
               "a non-empty list of relative thresholds in (0, 1]")
  read_inputs(c)                      # the files themselves, before anything is written


def read_inputs(c: ml_collections.ConfigDict):
  """(annotations, predictions) of `gt_file` and `pred_file`, each problem one DataError."""
  gt = ann.load(c.gt_file)
  if not Path(c.pred_file).is_file():
    raise DataError(f"prediction file {c.pred_file} not found")
  preds = safe_pickle.load(c.pred_file, ann.PICKLE_GLOBALS, ann.HOLDS)
  if not isinstance(preds, dict):
    raise DataError(f"{c.pred_file}: expected a dict video_id -> list of seconds, got "
                    f"{type(preds).__name__}")
  for vid, ts in preds.items():
    if not isinstance(ts, (list, tuple, np.ndarray)) or not all(
        isinstance(t, (int, float, np.integer, np.floating)) for t in ts):
      raise DataError(f"{c.pred_file}: video {vid!r}: predictions must be a list of seconds")
  return gt, preds


def run(c: ml_collections.ConfigDict, workdir: str, command: str) -> dict:
  """The protocol on `gt_file` (Kinetics-GEBD layout) and `pred_file` (video_id -> seconds)."""
  validate(c)
  gt, preds = read_inputs(c)
  res = {f"{t:.2f}": metric.evaluate(gt, preds, t, strict=c.strict) for t in c.thresholds}
  results = dict(f1=metric.evaluate(gt, preds, 0.05, strict=c.strict)["f1"], per_threshold=res,
                 f1_curve={k: v["f1"] for k, v in res.items()}, command=command)
  Path(workdir).mkdir(parents=True, exist_ok=True)
  atomic_write_json(Path(workdir) / "results.json", results, indent=1)
  atomic_write_text(Path(workdir) / "REPORT.md",
      "# GEBD score (Kinetics-GEBD protocol)\n\n" + f"`{command}`\n\n| threshold | F1 | precision | "
      "recall | videos scored | skipped (f1_consis_avg < 0.3) |\n|---|---|---|---|---|---|\n" + "".join(
          f"| {k} | {v['f1']:.4f} | {v['precision']:.4f} | {v['recall']:.4f} | {v['videos']} | "
          f"{v['skipped']} |\n" for k, v in res.items()))
  return results
