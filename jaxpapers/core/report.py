"""Run reports: config.json, results.json, REPORT.md (paper claim vs measured, PNG plots) and
report.json (the same report, structured, for `jaxpapers reproduce`'s dashboard)."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import jax

from jaxpapers.core import faults
from jaxpapers.core.workdir import atomic_path, atomic_write_json, atomic_write_text


@dataclass
class Row:
  """One line of the claim-vs-measured table."""
  metric: str
  paper: str
  measured: str
  verdict: str          # reproduced / not reproduced / partly / n/a
  note: str = ""


@dataclass
class Report:
  title: str
  command: str
  rows: list[Row] = field(default_factory=list)
  plots: list[tuple[str, str]] = field(default_factory=list)   # (png file name, caption)
  sections: list[tuple[str, str]] = field(default_factory=list)  # (heading, markdown)


def fmt(x, digits: int = 4) -> str:
  if isinstance(x, float):
    return f"{x:.{digits}g}" if math.isfinite(x) else str(x)
  return str(x)


def public(x):
  """A results tree without its private entries (keys starting with '_': per-example arrays,
  in-memory objects), numpy scalars as Python numbers: what per_seed.json files hold."""
  import numpy as np
  if isinstance(x, dict):
    return {k: public(v) for k, v in x.items() if not str(k).startswith("_")}
  if isinstance(x, list):
    return [public(v) for v in x]
  if isinstance(x, np.generic):
    return x.item()
  return x


def write_json(path: Path, obj) -> None:
  atomic_write_json(path, obj, indent=2, sort_keys=True, default=float)


def write_report(workdir: str | Path, report: Report, results: dict) -> Path:
  """Writes results.json and REPORT.md (process 0 only); returns the REPORT.md path."""
  workdir = Path(workdir)
  path = workdir / "REPORT.md"
  if jax.process_index() != 0:
    return path
  write_json(workdir / "results.json", results)
  faults.point("report")
  lines = [f"# {report.title}", "", f"Made by: `{report.command}`", "",
           "| metric | paper | measured | verdict | note |", "|---|---|---|---|---|"]
  lines += [f"| {r.metric} | {r.paper} | {r.measured} | {r.verdict} | {r.note} |" for r in report.rows]
  for heading, body in report.sections:
    lines += ["", f"## {heading}", "", body]
  for png, caption in report.plots:
    lines += ["", f"![{caption}]({png})", "", f"*{caption}*"]
  lines += ["", "Every figure above is in `results.json` of this workdir.", ""]
  atomic_write_text(path, "\n".join(lines))
  write_json(workdir / "report.json", dataclasses.asdict(report))    # what the dashboard reads
  return path


def plot_curves(workdir: str | Path, png: str, series: Sequence[tuple[str, list, list]],
                xlabel: str = "step", ylabel: str = "", hlines: Sequence[tuple[str, float]] = ()) -> str:
  """Line plot of (label, xs, ys) series into workdir/png; returns png."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  if jax.process_index() != 0:
    return png
  fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
  for label, xs, ys in series:
    ax.plot(xs, ys, label=label)
  for label, y in hlines:
    ax.axhline(y, ls="--", c="gray", lw=1)
    ax.annotate(label, (ax.get_xlim()[0], y), fontsize=8, va="bottom", color="gray")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  with atomic_path(Path(workdir) / png) as tmp:
    fig.savefig(tmp)
  plt.close(fig)
  return png
