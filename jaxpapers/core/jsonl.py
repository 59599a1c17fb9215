"""JSON Lines input: each non-blank line one JSON object; a bad line is one DataError naming the
file and line."""
from __future__ import annotations

import json
from typing import Iterable, Iterator

from jaxpapers.core.errors import DataError


def objects(lines: Iterable[str], where: str) -> Iterator[tuple[int, dict]]:
  """(line number, object) of each non-blank line of `lines` (`where` names them in errors)."""
  for n, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(f"{where}:{n}: not a JSON object ({e.msg})") from None
    if not isinstance(row, dict):
      raise DataError(f"{where}:{n}: not a JSON object")
    yield n, row
