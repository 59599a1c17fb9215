"""Knowledge graphs as id triples, with BetaE's inverse-relation convention (relation 2k is the
k-th relation as read, 2k + 1 its inverse), and the nested graphs G_train ⊂ G_valid ⊂ G_test."""
from __future__ import annotations

import dataclasses
import io
import tarfile
from collections import defaultdict
from importlib import resources
from pathlib import Path

import numpy as np

from jaxpapers.core.errors import DataError

EMBEDDED = ("umls", "kinships", "nations")
SPLITS = ("train", "valid", "test")


def inverse(r: int) -> int:
  """BetaE's convention: relations 2k and 2k + 1 are each other's inverse."""
  return r ^ 1


@dataclasses.dataclass
class KG:
  """Entities, relations (with inverses: 2 × the relations read) and id triples per split."""
  name: str
  entities: list[str]
  relations: list[str]                  # names of the 2k (forward) and 2k+1 (inverse, "-1") ids
  triples: dict[str, np.ndarray]        # split -> [n, 3] int (head, forward relation id, tail)

  @property
  def num_entities(self) -> int:
    return len(self.entities)

  @property
  def num_relations(self) -> int:
    return len(self.relations)

  def adjacency(self, upto: str) -> dict[tuple[int, int], frozenset[int]]:
    """(head, relation) -> tails over the splits up to `upto` (train ⊂ valid ⊂ test), both
    directions: (h, r, t) also gives (t, r^-1, h)."""
    if upto not in SPLITS:
      raise DataError(f"unknown split {upto!r}; use one of {SPLITS}")
    adj = defaultdict(set)
    for split in SPLITS[:SPLITS.index(upto) + 1]:
      for h, r, t in self.triples[split].tolist():
        adj[(h, r)].add(t)
        adj[(t, inverse(r))].add(h)
    return {k: frozenset(v) for k, v in adj.items()}

  def edges(self, upto: str) -> np.ndarray:
    """[n, 3] (head, relation, tail) over the splits up to `upto`, inverses included."""
    parts = []
    for split in SPLITS[:SPLITS.index(upto) + 1]:
      t = self.triples[split]
      parts += [t, np.stack([t[:, 2], t[:, 1] ^ 1, t[:, 0]], 1)]
    return np.concatenate(parts).astype(np.int64)


def _parse_tsv(text: str, where: str) -> list[tuple[str, str, str]]:
  rows = []
  for i, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    parts = line.rstrip("\n").split("\t")
    if len(parts) != 3 or not all(p.strip() for p in parts):
      raise DataError(f"{where}:{i}: expected 'head<TAB>relation<TAB>tail', got {line[:80]!r}")
    rows.append(tuple(p.strip() for p in parts))
  if not rows:
    raise DataError(f"{where}: no triples")
  return rows


def _build(name: str, texts: dict[str, tuple[str, str]]) -> KG:
  """texts: split -> (tsv text, where). Entity and relation ids are assigned in sorted order."""
  rows = {s: _parse_tsv(*texts[s]) for s in SPLITS}
  ents = sorted({x for rs in rows.values() for h, _, t in rs for x in (h, t)})
  rels = sorted({r for rs in rows.values() for _, r, _ in rs})
  e_id = {e: i for i, e in enumerate(ents)}
  r_id = {r: i for i, r in enumerate(rels)}
  triples = {s: np.array([(e_id[h], 2 * r_id[r], e_id[t]) for h, r, t in rs], np.int64)
             for s, rs in rows.items()}
  names = [n for r in rels for n in (r, r + "-1")]
  return KG(name, ents, names, triples)


def load_tsv_dir(path: str | Path) -> KG:
  """A directory with train.tsv, valid.tsv and test.tsv (head<TAB>relation<TAB>tail)."""
  path = Path(path)
  if not path.is_dir():
    raise DataError(f"knowledge-graph directory {path} does not exist")
  texts = {}
  for s in SPLITS:
    f = path / f"{s}.tsv"
    if not f.is_file():
      raise DataError(f"{path} has no {s}.tsv (needs train.tsv, valid.tsv, test.tsv)")
    try:
      texts[s] = (f.read_text(encoding="utf-8"), str(f))
    except UnicodeDecodeError as e:
      raise DataError(f"{f} is not UTF-8 text (byte {e.start}: {e.reason})") from None
  return _build(path.name, texts)


def load_embedded(name: str) -> KG:
  """UMLS, Kinships or Nations, shipped in the package (jaxpapers/data/assets/kg)."""
  if name not in EMBEDDED:
    raise DataError(f"unknown embedded knowledge graph {name!r}; choose from {EMBEDDED} or give a "
                    "directory of train/valid/test.tsv")
  raw = resources.files("jaxpapers.data").joinpath("assets", "kg", f"{name}.tar.xz").read_bytes()
  texts = {}
  with tarfile.open(fileobj=io.BytesIO(raw), mode="r:xz") as tar:
    for s in SPLITS:
      texts[s] = (tar.extractfile(f"{name}/{s}.tsv").read().decode("utf-8"), f"{name}/{s}.tsv")
  return _build(name, texts)


def load(name_or_path: str) -> KG:
  return load_embedded(name_or_path) if name_or_path in EMBEDDED else load_tsv_dir(name_or_path)
