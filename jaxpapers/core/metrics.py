"""Metric writers: metrics.jsonl and TensorBoard events (process 0 only)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import jax


class MetricWriter:

  def __init__(self, workdir: str | Path, tensorboard: bool = True):
    self.active = jax.process_index() == 0
    self.path = Path(workdir) / "metrics.jsonl"
    self.tb = None
    if self.active and tensorboard:
      from tensorboardX import SummaryWriter
      self.tb = SummaryWriter(str(Path(workdir) / "tb"))

  def write(self, step: int, metrics: dict) -> None:
    if not self.active:
      return
    row = {"step": int(step)}
    for k, v in metrics.items():
      v = float(v)
      row[k] = v if math.isfinite(v) else str(v)
      if self.tb is not None:
        self.tb.add_scalar(k, v, step)
    with self.path.open("a") as f:
      f.write(json.dumps(row) + "\n")

  def close(self):
    if self.tb is not None:
      self.tb.close()


def read_metrics(workdir: str | Path) -> list[dict]:
  path = Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
