"""Knowledge-tracing data in the two layouts people bring, read into one form, with one-line errors
naming the file and line.

* DKT CSV (Piech et al. 2015's release, also used by many KT repositories): three lines per
  student: the number of answers n; n question (skill) ids; n correctness values 0/1.
* ASSISTments-style CSV: a header with at least `user_id`, `skill_id`, `correct` and an order
  column (`order_id` by default); one answer per row. Rows with an empty `skill_id` are dropped (as
  the usual ASSISTments 2009 preprocessing does) and counted; answers are ordered by the order
  column within each user, users by first appearance.

Question ids are remapped to 0..Q-1 in order of first appearance (`question_names` keeps the
originals).
"""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np

from jaxpapers.core.errors import DataError


@dataclasses.dataclass
class KTData:
  questions: list[np.ndarray]   # per student, question index per answer
  correct: list[np.ndarray]     # per student, 0/1 per answer
  question_names: list[str]
  dropped_rows: int = 0

  @property
  def n_questions(self) -> int:
    return len(self.question_names)


def _index(names: dict, name: str) -> int:
  return names.setdefault(name, len(names))


def _int(p: str) -> int | None:
  try:
    return int(p)
  except ValueError:
    try:
      f = float(p)
    except ValueError:
      return None
    return int(f) if f.is_integer() else None


def _ints(text: str, path, line: int, what: str) -> list[int]:
  """Comma-separated integers ("3" or "3.0"; a trailing comma allowed)."""
  parts = [p.strip() for p in text.strip().rstrip(",").split(",")]
  out = [_int(p) for p in parts]
  if None in out:
    bad = parts[out.index(None)]
    raise DataError(f"{path}:{line}: {what} must be comma-separated integers, found {bad!r}")
  return out


def read_dkt_csv(path: str | Path) -> KTData:
  path = Path(path)
  if not path.is_file():
    raise DataError(f"{path}: no such file (a DKT-format CSV: count / question ids / correctness lines)")
  try:
    text = path.read_text(encoding="utf-8")
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
  lines = [(i + 1, l) for i, l in enumerate(text.splitlines())]
  while lines and not lines[-1][1].strip():
    lines.pop()
  if not lines:
    raise DataError(f"{path}: empty file")
  if len(lines) % 3:
    raise DataError(f"{path}:{lines[-1][0]}: the file has {len(lines)} lines, not a multiple of 3 "
                    "(count, question ids, correctness per student)")
  names: dict[str, int] = {}
  qs, cs = [], []
  for j in range(0, len(lines), 3):
    (ln, count), (lq, qline), (lc, cline) = lines[j:j + 3]
    n = _ints(count, path, ln, "the answer count")
    if len(n) != 1 or n[0] < 1:
      raise DataError(f"{path}:{ln}: expected one positive answer count, found {count.strip()!r}")
    q = _ints(qline, path, lq, "question ids")
    c = _ints(cline, path, lc, "correctness values")
    if len(q) != n[0]:
      raise DataError(f"{path}:{lq}: {len(q)} question ids where line {ln} says {n[0]}")
    if len(c) != n[0]:
      raise DataError(f"{path}:{lc}: {len(c)} correctness values where line {ln} says {n[0]}")
    if any(v not in (0, 1) for v in c):
      raise DataError(f"{path}:{lc}: correctness must be 0 or 1, found "
                      f"{next(v for v in c if v not in (0, 1))}")
    if any(v < 0 for v in q):
      raise DataError(f"{path}:{lq}: question ids must be >= 0, found {min(q)}")
    qs.append(np.array([_index(names, str(v)) for v in q], np.int32))
    cs.append(np.array(c, np.int32))
  return KTData(qs, cs, list(names))


def write_dkt_csv(path: str | Path, questions, correct) -> None:
  with open(path, "w") as f:
    for q, c in zip(questions, correct):
      f.write(f"{len(q)}\n{','.join(map(str, q))}\n{','.join(map(str, c))}\n")


def read_assistments_csv(path: str | Path, order_column: str = "order_id") -> KTData:
  path = Path(path)
  if not path.is_file():
    raise DataError(f"{path}: no such file (an ASSISTments-style CSV with user_id, skill_id, "
                    f"correct, {order_column})")
  with open(path, newline="", encoding="utf-8", errors="replace") as f:
    reader = csv.reader(f)
    header = next(reader, None)
    if header is None:
      raise DataError(f"{path}: empty file")
    header = [h.strip() for h in header]
    need = ("user_id", "skill_id", "correct", order_column)
    missing = [h for h in need if h not in header]
    if missing:
      raise DataError(f"{path}:1: missing column(s) {', '.join(missing)} (header: {', '.join(header)})")
    col = {h: header.index(h) for h in need}
    users: dict[str, list] = {}
    dropped = 0
    for i, row in enumerate(reader, start=2):
      if not row or not any(x.strip() for x in row):
        continue
      if len(row) < len(header):
        raise DataError(f"{path}:{i}: {len(row)} fields where the header has {len(header)}")
      user, skill, corr, order = (row[col[h]].strip() for h in need)
      if not skill:
        dropped += 1
        continue
      if not user:
        raise DataError(f"{path}:{i}: empty user_id")
      if corr not in ("0", "1"):
        raise DataError(f"{path}:{i}: correct must be 0 or 1, found {corr!r}")
      try:
        order_value = float(order)
      except ValueError:
        raise DataError(f"{path}:{i}: {order_column} must be a number, found {order!r}") from None
      users.setdefault(user, []).append((order_value, skill, int(corr)))
  if not users:
    raise DataError(f"{path}: no answers with a skill_id")
  names: dict[str, int] = {}
  qs, cs = [], []
  for rows in users.values():
    rows.sort(key=lambda r: r[0])
    qs.append(np.array([_index(names, r[1]) for r in rows], np.int32))
    cs.append(np.array([r[2] for r in rows], np.int32))
  return KTData(qs, cs, list(names), dropped)


def read_kt(path: str | Path, fmt: str) -> KTData:
  if fmt == "dkt":
    return read_dkt_csv(path)
  if fmt == "assistments":
    return read_assistments_csv(path)
  raise DataError(f"unknown knowledge-tracing format {fmt!r}: 'dkt' or 'assistments'")
