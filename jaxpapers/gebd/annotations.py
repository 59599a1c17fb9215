"""GEBD annotations in the Kinetics-GEBD layout (Shou et al. 2021, the `k400_mr345_*_min_change_
duration0.3.pkl` files of StanLei52/GEBD): a pickled dict video_id -> record with `path_video`,
`fps`, `video_duration` (s), `num_frames`, `substages_timestamps` (one sorted list of seconds per
rater), `substages_myframeidx` (the same as frame indices, min(num_frames - 1, floor(t * fps))),
`f1_consis` (per rater) and `f1_consis_avg`. Other keys a user's file carries are kept; each
rater's list keeps its stored order (the protocol matches boundaries in that order).

`load` checks every record and raises one DataError line naming the video; `save` writes the
same layout (atomically), so a benchmark written here and a user's file read the same way.
"""
from __future__ import annotations

import dataclasses
import math
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np

from jaxpapers.core import safe_pickle
from jaxpapers.core.errors import DataError

# what a Kinetics-GEBD annotation or prediction pickle may build: containers, numbers, strings
# and numpy arrays or scalars; any other global (code) is refused before it runs
PICKLE_GLOBALS = safe_pickle.CONTAINERS | safe_pickle.NUMPY
HOLDS = "a GEBD pickle holds only dicts, lists, numbers, strings and numpy arrays"


@dataclasses.dataclass
class Video:
  """One annotated video: `raters` holds each rater's boundary times in seconds."""
  video_id: str
  fps: float
  duration: float
  num_frames: int
  raters: list[list[float]]
  f1_consis: list[float]
  f1_consis_avg: float           # the protocol skips a video whose average is below 0.3
  path_video: str = ""
  extra: dict = dataclasses.field(default_factory=dict)

  def frame_index(self, t: float) -> int:
    return min(self.num_frames - 1, int(math.floor(t * self.fps)))

  def record(self) -> dict:
    return dict(self.extra, path_video=self.path_video, fps=float(self.fps),
                video_duration=float(self.duration), num_frames=int(self.num_frames),
                substages_timestamps=[[float(t) for t in r] for r in self.raters],
                substages_myframeidx=[[self.frame_index(t) for t in r] for r in self.raters],
                f1_consis=[float(f) for f in self.f1_consis],
                f1_consis_avg=float(self.f1_consis_avg))


REQUIRED = ("fps", "video_duration", "num_frames", "substages_timestamps")


def _number(v) -> bool:
  return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def from_record(vid: str, rec, where: str = "") -> Video:
  """A checked `Video` from one record of the dict; DataError naming the video otherwise."""
  at = f"{where}: video {vid!r}" if where else f"video {vid!r}"
  if not isinstance(rec, dict):
    raise DataError(f"{at}: record must be a dict, got {type(rec).__name__}")
  missing = [k for k in REQUIRED if k not in rec]
  if missing:
    raise DataError(f"{at}: missing key(s) {', '.join(missing)}")
  fps, dur, n = rec["fps"], rec["video_duration"], rec["num_frames"]
  if not (_number(fps) and fps > 0):
    raise DataError(f"{at}: fps must be a positive number, got {fps!r}")
  if not (_number(dur) and dur > 0):
    raise DataError(f"{at}: video_duration must be a positive number of seconds, got {dur!r}")
  if not (_number(n) and float(n).is_integer() and n > 0):
    raise DataError(f"{at}: num_frames must be a positive integer, got {n!r}")
  raters = rec["substages_timestamps"]
  if not isinstance(raters, (list, tuple)) or not raters:
    raise DataError(f"{at}: has no raters (substages_timestamps is empty or not a list)")
  out = []
  for r, times in enumerate(raters):
    if not isinstance(times, (list, tuple, np.ndarray)):
      raise DataError(f"{at}: rater {r}'s timestamps must be a list, got {type(times).__name__}")
    for t in times:
      if not _number(t) or t < 0 or t > dur:
        raise DataError(f"{at}: rater {r} has timestamp {t!r} outside [0, video_duration={dur}]")
    out.append([float(t) for t in times])   # stored order: the protocol matches in this order
  consis = rec.get("f1_consis")
  if consis is None:
    consis = consistency(out, float(dur))
  if not isinstance(consis, (list, tuple, np.ndarray)) or not all(_number(f) for f in consis):
    raise DataError(f"{at}: f1_consis must be a list of numbers, got {consis!r}")
  avg = rec.get("f1_consis_avg", float(np.mean(consis)) if len(consis) else 0.0)
  if not _number(avg):
    raise DataError(f"{at}: f1_consis_avg must be a number, got {avg!r}")
  extra = {k: v for k, v in rec.items() if k not in REQUIRED + (
      "path_video", "substages_myframeidx", "f1_consis", "f1_consis_avg")}
  return Video(str(vid), float(fps), float(dur), int(n), out, [float(f) for f in consis],
               float(avg), str(rec.get("path_video", "")), extra)


def load(path: str | Path) -> dict[str, Video]:
  path = Path(path)
  if not path.is_file():
    raise DataError(f"annotation file {path} not found")
  data = safe_pickle.load(path, PICKLE_GLOBALS, HOLDS)
  if not isinstance(data, dict) or not data:
    raise DataError(f"{path}: expected a non-empty dict video_id -> record, got "
                    f"{type(data).__name__}")
  return {str(k): from_record(k, rec, str(path)) for k, rec in data.items()}


def save(path: str | Path, videos: dict[str, Video]) -> None:
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  data = {vid: v.record() for vid, v in videos.items()}
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
  with os.fdopen(fd, "wb") as f:
    pickle.dump(data, f, protocol=4)
  os.replace(tmp, path)


def consistency(raters: list[list[float]], duration: float, threshold: float = 0.05) -> list[float]:
  """Per rater, the mean F1 of its boundaries against each other rater's (the protocol's greedy
  matching at threshold x duration). Kinetics-GEBD ships f1_consis without its formula ("each
  rater against the others"); this is our reading of that sentence."""
  from jaxpapers.gebd.metric import rater_f1
  out = []
  for i, mine in enumerate(raters):
    f1s = [rater_f1(other, mine, threshold * duration)[0]
           for j, other in enumerate(raters) if j != i]
    out.append(float(np.mean(f1s)) if f1s else 1.0)
  return out
