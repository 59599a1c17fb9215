"""The Kinetics-GEBD F1 (the LOVEU challenge protocol of StanLei52/GEBD, `Challenge_eval_Code/
eval.py`), rule for rule:

* predictions: video_id -> boundary times in seconds; predictions for videos not in the ground
  truth are ignored; a video whose `f1_consis_avg` is below 0.3 is skipped entirely;
* a video with no prediction, or whose every prediction lies outside [0, duration], adds rater
  0's boundary count to the positives and nothing else;
* otherwise its in-range detections (order kept, duplicates kept) all count as detections, and
  for each rater in turn, each of the rater's boundaries (in order) is matched to the nearest
  still-unused detection (ties: the earliest in the list), a hit when the distance is at most
  threshold x video_duration (a missed nearest detection stays available); rater recall is 1
  when the rater has no boundary; the first rater with the highest F1 adds its hits and its
  boundary count to the totals;
* precision = hits / detections (0 when none), recall = hits / positives (1 when none), F1 their
  harmonic mean (0 when both are 0): micro-averaged over the set.

The challenge scores threshold 0.05; `f1_curve` applies the same rules at 0.05 ... 0.5.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from jaxpapers.core.errors import DataError
from jaxpapers.gebd.annotations import Video

THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 11))
MIN_CONSISTENCY = 0.3


def match_count(gt: Sequence[float], det: Sequence[float], tol: float) -> int:
  """Hits of the greedy matching: each ground-truth boundary in order takes its nearest unused
  detection (the first of equals) if within `tol`."""
  avail = list(det)
  tp = 0
  for g in gt:
    if not avail:
      break
    d = np.abs(np.asarray(avail) - g)
    k = int(np.argmin(d))
    if d[k] <= tol:
      tp += 1
      avail.pop(k)
  return tp


def _f1(prec: float, rec: float) -> float:
  return 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)


def rater_f1(rater: Sequence[float], det: Sequence[float], tol: float) -> tuple[float, int]:
  """(F1, hits) of detections `det` against one rater: recall 1 when the rater has no boundary,
  precision 0 when there is no detection."""
  hits = match_count(rater, det, tol)
  rec = 1.0 if not rater else hits / len(rater)
  prec = hits / len(det) if det else 0.0
  return _f1(prec, rec), hits


def evaluate(gt: Mapping[str, Video], preds: Mapping[str, Sequence[float]],
             threshold: float = 0.05, strict: bool = True) -> dict:
  """{f1, precision, recall, tp, positives, detections, videos, skipped}. `strict`: predictions
  for a video the ground truth does not have raise a DataError naming it (the official script
  ignores them silently; pass strict=False for that)."""
  if strict:
    unknown = [v for v in preds if v not in gt]
    if unknown:
      raise DataError(f"predictions for {len(unknown)} video(s) not in the annotations, e.g. "
                      f"{unknown[0]!r}")
  tp = pos = det = videos = skipped = 0
  for vid, v in gt.items():
    if v.f1_consis_avg < MIN_CONSISTENCY:
      skipped += 1
      continue
    videos += 1
    p = [float(t) for t in preds.get(vid, ()) if 0 <= t <= v.duration]
    if not p:
      pos += len(v.raters[0])
      continue
    det += len(p)
    best = None
    for rater in v.raters:
      f1, hits = rater_f1(rater, p, threshold * v.duration)
      if best is None or f1 > best[0]:
        best = (f1, hits, len(rater))
    tp += best[1]
    pos += best[2]
  rec = 1.0 if pos == 0 else tp / pos
  prec = 0.0 if det == 0 else tp / det
  return dict(f1=_f1(prec, rec), precision=prec, recall=rec, tp=tp, positives=pos,
              detections=det, videos=videos, skipped=skipped)


def f1_curve(gt: Mapping[str, Video], preds: Mapping[str, Sequence[float]],
             thresholds: Sequence[float] = THRESHOLDS) -> dict[str, float]:
  return {f"{t:.2f}": evaluate(gt, preds, t)["f1"] for t in thresholds}
