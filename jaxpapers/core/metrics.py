"""Metric writers: metrics.jsonl and TensorBoard events (process 0 only)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import jax

from jaxpapers.core.errors import WorkdirError


class MetricWriter:

  def __init__(self, workdir: str | Path, tensorboard: bool = True):
    self.active = jax.process_index() == 0
    self.path = Path(workdir) / "metrics.jsonl"
    self.tb = None
    if self.active and tensorboard:
      from tensorboardX import SummaryWriter
      self.tb = SummaryWriter(str(Path(workdir) / "tb"))

  def write(self, step: int, metrics: dict, tensorboard: bool = True) -> None:
    if not self.active:
      return
    row = {"step": int(step)}
    for k, v in metrics.items():
      v = float(v)
      row[k] = v if math.isfinite(v) else str(v)
      if self.tb is not None and tensorboard:
        self.tb.add_scalar(k, v, step)
    with self.path.open("a") as f:
      f.write(json.dumps(row) + "\n")

  def close(self):
    if self.tb is not None:
      self.tb.close()


def read_metrics(workdir: str | Path) -> list[dict]:
  """The rows of metrics.jsonl; a last line cut short by a killed run is ignored, any other line
  that is not a JSON object is a WorkdirError naming it (the rows are the run's history: a report
  must not silently lose some)."""
  path = Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  try:
    lines = path.read_text().splitlines()
  except UnicodeDecodeError:
    raise WorkdirError(f"{path} is not text (damaged?); restore it or use a new --workdir") from None
  while lines and not lines[-1].strip():
    lines.pop()
  rows = []
  for n, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      row = None
    if not isinstance(row, dict):
      if n == len(lines):   # the line a kill cut short
        break
      raise WorkdirError(f"{path}:{n} is not a JSON object (damaged or edited?); restore it or "
                         "use a new --workdir")
    rows.append(row)
  return rows


def keep_up_to(workdir: str | Path, step: int) -> list[dict]:
  """Drops the rows after `step` from metrics.jsonl (those a killed run logged past the checkpoint
  it is resumed from, which the resumed run logs again) and returns the rows kept: after a resume
  the file holds each step once (process 0 rewrites it atomically)."""
  rows = [r for r in read_metrics(workdir) if r.get("step", 0) <= step]
  path = Path(workdir) / "metrics.jsonl"
  if jax.process_index() == 0 and path.exists():
    from jaxpapers.core.workdir import atomic_write_text
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
  return rows
