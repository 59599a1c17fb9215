"""Classification tasks of the PET-head suite: the six that ship (built by
`experiments/pethead/build_tasks.py`) or a user's JSONL file, split per seed and tokenized.

A task file has one example per line: {"text": ..., "label": ...} or, for a pair task,
{"text": ..., "text_pair": ..., "label": ...}. A bad line is one DataError naming the file and
line; a text longer than the model's maximum is truncated and counted (`Encoded.truncated`).
"""
from __future__ import annotations

import collections
import dataclasses
import importlib.resources
import lzma
from pathlib import Path

import numpy as np

from jaxpapers.core import jsonl
from jaxpapers.core.errors import DataError

BUILTIN = ("drugs", "polarity", "lexname", "wic", "gloss_match", "manpage")
ASSET = "pethead_tasks.jsonl.xz"


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  labels: tuple[str, ...]
  texts: tuple[str, ...]
  pairs: tuple[str, ...] | None    # the second text of each example (pair tasks)
  y: np.ndarray                    # [N] int label ids (indices into labels)

  @property
  def num_classes(self) -> int:
    return len(self.labels)


def _parse(lines, where: str, labels: tuple[str, ...] | None, task_field: str | None = None):
  """(texts, pairs, label strings) of the JSONL lines; `task_field`: keep lines of that task."""
  texts, pairs, ys = [], [], []
  for n, row in jsonl.objects(lines, where):
    if task_field is not None and row.get("task") != task_field:
      continue
    for key in ("text", "label"):
      if key not in row:
        raise DataError(f"{where}:{n}: no {key!r} field")
    text, label = row["text"], row["label"]
    if not isinstance(text, str) or not text.strip():
      raise DataError(f"{where}:{n}: empty text")
    if labels is not None and str(label) not in labels:
      raise DataError(f"{where}:{n}: unknown label {label!r}; the task's labels are {list(labels)}")
    pair = row.get("text_pair")
    if texts and (pair is not None) != bool(pairs):
      raise DataError(f"{where}:{n}: {'a' if pair is not None else 'no'} text_pair, unlike the "
                      "lines before it (a task is all single texts or all pairs)")
    if pair is not None:
      if not isinstance(pair, str) or not pair.strip():
        raise DataError(f"{where}:{n}: empty text_pair")
      pairs.append(pair)
    texts.append(text)
    ys.append(str(label))
  if not texts:
    raise DataError(f"{where}: no examples")
  return texts, (pairs or None), ys


def _task(name, texts, pairs, ys, labels) -> Task:
  labels = tuple(labels) if labels is not None else tuple(sorted(set(ys)))
  if len(labels) < 2:
    raise DataError(f"task {name!r} has {len(labels)} label(s); a classification task needs two")
  index = {l: i for i, l in enumerate(labels)}
  return Task(name, labels, tuple(texts), None if pairs is None else tuple(pairs),
              np.array([index[y] for y in ys], np.int32))


def builtin(name: str) -> Task:
  """One of the shipped tasks (`BUILTIN`)."""
  if name not in BUILTIN:
    raise DataError(f"unknown task {name!r}; the shipped tasks are {list(BUILTIN)} (or give a file)")
  path = importlib.resources.files("jaxpapers.data") / "assets" / ASSET
  with lzma.open(path, "rt", encoding="utf-8") as f:
    texts, pairs, ys = _parse(f, f"{ASSET}", None, task_field=name)
  return _task(name, texts, pairs, ys, None)


def from_file(path: str | Path, labels: list[str] | tuple[str, ...] | None = None) -> Task:
  """A user's task from a JSONL file; `labels` (optional) is the label set: a line with another
  label is an error. Without it, the labels are those the file uses (sorted)."""
  path = Path(path)
  if not path.is_file():
    raise DataError(f"task file {path} does not exist")
  opener = lzma.open if path.suffix == ".xz" else open
  try:
    with opener(path, "rt", encoding="utf-8") as f:
      texts, pairs, ys = _parse(f, str(path), None if labels is None else tuple(map(str, labels)))
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
  return _task(path.stem, texts, pairs, ys, None if labels is None else tuple(map(str, labels)))


def split(task: Task, seed: int, n_train: int, n_dev: int, n_test: int) -> dict[str, np.ndarray]:
  """Indices of train / dev / test, stratified by label, a function of the seed: each class
  contributes in proportion to its share (at least one example to each split when it has three);
  a task with fewer examples than asked for is split in the same proportions."""
  rng = np.random.default_rng([seed, 7])
  n = len(task.y)
  want = np.array([n_test, n_dev, n_train], float)
  want *= min(1.0, n / want.sum())
  out = {"test": [], "dev": [], "train": []}
  counts = collections.Counter(task.y.tolist())
  for c in sorted(counts):
    idx = rng.permutation(np.flatnonzero(task.y == c))
    share = counts[c] / n
    takes = [int(round(w * share)) for w in want]
    if counts[c] >= 3:
      takes = [max(t, 1) for t in takes]
    takes[0] = min(takes[0], counts[c])
    takes[1] = min(takes[1], counts[c] - takes[0])
    takes[2] = min(takes[2], counts[c] - takes[0] - takes[1])   # train: what is left
    start = 0
    for name, t in zip(("test", "dev", "train"), takes):
      out[name] += idx[start:start + t].tolist()
      start += t
  return {k: rng.permutation(np.array(v, np.int64)) for k, v in out.items()}
