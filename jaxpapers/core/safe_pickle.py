"""Pickles a user brings (BetaE query files, Kinetics-GEBD annotations): read with an unpickler
that builds only the globals the format names, so a file that would run code when unpickled is
one DataError instead, and any other malformed file is one DataError naming it."""
from __future__ import annotations

import pickle
from pathlib import Path

from jaxpapers.core.errors import DataError

CONTAINERS = frozenset((m, n) for m in ("builtins", "__builtin__")
                       for n in ("set", "frozenset", "list", "dict", "tuple", "int", "str", "float"))
# numpy arrays and scalars as pickle stores them: numpy 1.x and 2.x module names; protocols 0-2
# store bytes through _codecs.encode (a text codec: no code runs), protocol 5 arrays through
# numeric._frombuffer
NUMPY = frozenset({("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")} | {
    (m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray")
    for n in ("_reconstruct", "scalar")} | {
    (m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")})


class RestrictedUnpickler(pickle.Unpickler):
  """Refuses every global outside `allowed` ((module, name) pairs) and every persistent id."""

  def __init__(self, file, where: str, allowed: frozenset, holds: str):
    super().__init__(file)
    self.where, self.allowed, self.holds = where, allowed, holds

  def find_class(self, module, name):
    if (module, name) not in self.allowed:
      raise DataError(f"{self.where}: refusing to load the global {module}.{name} ({self.holds})")
    return super().find_class(module, name)

  def persistent_load(self, pid):
    raise DataError(f"{self.where}: refusing a persistent id ({self.holds})")


def load(path: str | Path, allowed: frozenset, holds: str):
  """The object pickled in `path`, built by a RestrictedUnpickler; `holds` says what the format
  holds (it ends each refusal's message)."""
  path = Path(path)
  try:
    with open(path, "rb") as f:
      return RestrictedUnpickler(f, str(path), allowed, holds).load()
  except DataError:
    raise
  except Exception as e:  # noqa: BLE001 - any malformed pickle is one DataError
    msg = " ".join(str(e).split())[:200]
    raise DataError(f"{path}: not a readable pickle ({type(e).__name__}: {msg})") from None
