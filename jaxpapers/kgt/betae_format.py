"""BetaE / Query2Box query datasets on disk (FB15k-237-q2b, NELL-q2b, FB15k-q2b layout).

A dataset directory holds `stats.txt` ("numentity: N" and "numrelations: R", inverses included),
optionally KGReasoning's name maps (`id2ent.pkl`, `id2rel.pkl`, `ent2id.pkl`, `rel2id.pkl`; the
query2box release's `ind2ent.pkl`... also) and its graph (`train.txt`, `valid.txt`, `test.txt`),
`train-queries.pkl` (structure -> set of queries), `train-answers.pkl` (query -> set of answers),
and for valid and test `{split}-queries.pkl`, `{split}-easy-answers.pkl` (answers in the next
smaller graph) and `{split}-hard-answers.pkl` (the others). Structures are BetaE templates of
'e', 'r', 'u', 'n'; query instances hold -1 for 'u' (our `queries.UNION`) and -2 for 'n'.

Only the nine types of `queries.STRUCTURES` are kept (matched by template, so BetaE's
'2u-DNF'/'up-DNF' are our 2u/up); other structures (negation types, '2u-DM', 'up-DM') are skipped,
logged, and named in `BetaEData.skipped`. Pickles are read by a restricted unpickler that builds
only plain containers (no code runs), then every query and answer is checked against the sizes
in stats.txt."""
from __future__ import annotations

import dataclasses
import functools
import logging
import operator
import pickle
from collections import defaultdict
from pathlib import Path

import numpy as np

from jaxpapers.core import safe_pickle
from jaxpapers.core.errors import DataError
from jaxpapers.core.workdir import atomic_path
from jaxpapers.kgt.kg import KG, SPLITS
from jaxpapers.kgt.queries import (STRUCTURES, TYPES, UNION, QueryData, QuerySplit, check_ids,
                                   type_of)

log = logging.getLogger(__name__)

STATS = "stats.txt"
FILES = (STATS, "train-queries.pkl", "train-answers.pkl",
         *(f"{s}-{k}.pkl" for s in SPLITS[1:] for k in ("queries", "easy-answers", "hard-answers")))
# BetaE's names of its 16 structures (names of skipped structures in reports).
BETAE_STRUCTURE_NAMES = {
    **{v: k for k, v in STRUCTURES.items() if k not in ("2u", "up")},
    (("e", ("r",)), ("e", ("r", "n"))): "2in",
    (("e", ("r",)), ("e", ("r",)), ("e", ("r", "n"))): "3in",
    ((("e", ("r",)), ("e", ("r", "n"))), ("r",)): "inp",
    (("e", ("r", "r")), ("e", ("r", "n"))): "pin",
    (("e", ("r", "r", "n")), ("e", ("r",))): "pni",
    STRUCTURES["2u"]: "2u-DNF",
    STRUCTURES["up"]: "up-DNF",
    ((("e", ("r", "n")), ("e", ("r", "n"))), ("n",)): "2u-DM",
    ((("e", ("r", "n")), ("e", ("r", "n"))), ("n", "r")): "up-DM",
}
_OUR_TYPE = {v: k for k, v in STRUCTURES.items()}
# The only globals a BetaE pickle may name ("__builtin__" is how protocols 0-2 spell builtins).
_ALLOWED = safe_pickle.CONTAINERS - {("builtins", "float"), ("__builtin__", "float")} | {
    ("collections", "defaultdict")}


@dataclasses.dataclass
class BetaEData(QueryData):
  """A `QueryData` plus the BetaE names of the structures that were skipped (sorted) and the
  entity and relation names (from the directory's id2ent/id2rel or ent2id/rel2id pickles, as
  KGReasoning writes them; the ids as strings where it has none)."""
  skipped: tuple[str, ...] = ()
  entities: tuple[str, ...] = ()
  relations: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Limits:
  """What a BetaE pickle may hold, checked by `scan_pickle` before it is unpickled. The real
  FB15k-237 / NELL files are far inside: a few hundred MB, nesting about 6 deep, every tuple held
  once. The attack they stop is sharing: a few bytes of pickle that reference one nested tuple
  twice per level build 2^depth elements for every later hash, sort and check to walk."""
  max_bytes: int = 4 << 30
  max_depth: int = 16          # containers within containers
  max_elements: int = 500_000_000   # counted as the loader walks them: a shared one each time
  max_expansion: float = 8.0   # elements walked per element stored


LIMITS = Limits()
_ATOMS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "STRING", "BINSTRING",
          "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "NONE",
          "NEWTRUE", "NEWFALSE", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8",
          "FLOAT", "BINFLOAT"}


class _Node:
  """A container on the scan's stack: its depth and its elements counted as walked."""
  __slots__ = ("depth", "size", "used")

  def __init__(self, children=()):
    self.depth, self.size, self.used = 1, 1, False
    self.add(children)

  def add(self, children):
    if self.used:   # a pickler fills a container before it places it anywhere
      raise ValueError("a container is filled after it is used")
    for c in children:
      if isinstance(c, _Node):
        c.used = True
        self.depth, self.size = max(self.depth, c.depth + 1), self.size + c.size
      else:
        self.size += 1


def scan_pickle(path: Path, limits: Limits = LIMITS) -> None:
  """Checks `path` against `limits` from its opcodes alone (linear in its size, nothing built):
  DataError when it is too large, nested too deeply, holds too many elements, or shares
  them more than `max_expansion`-fold."""
  import pickletools
  size = path.stat().st_size
  if size > limits.max_bytes:
    raise DataError(f"{path}: {size:,} bytes, more than the {limits.max_bytes:,} a BetaE pickle "
                    "may have (betae_format.LIMITS)")
  stack, memo, stored, mark = [], {}, 0, object()

  def pop_mark():
    i = len(stack) - 1 - stack[::-1].index(mark)
    items = stack[i + 1:]
    del stack[i:]
    return items

  def push(node):
    if node.depth > limits.max_depth:
      raise DataError(f"{path}: containers nested more than {limits.max_depth} deep; not a BetaE "
                      "pickle (betae_format.LIMITS)")
    if node.size > limits.max_elements or node.size > limits.max_expansion * max(stored, 1e5):
      raise DataError(f"{path}: {stored:,} stored elements that unfold to {node.size:,} (limits: "
                      f"{limits.max_elements:,}, {limits.max_expansion:g}x sharing); not a BetaE "
                      "pickle (betae_format.LIMITS)")
    stack.append(node)

  try:
    with open(path, "rb") as f:
      for op, arg, _ in pickletools.genops(f):
        name = op.name
        stored += 1
        if name in _ATOMS:
          stack.append(1)
        elif name in ("EMPTY_TUPLE", "EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET"):
          push(_Node())
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
          n = int(name[-1])
          items = stack[-n:]
          del stack[-n:]
          push(_Node(items))
        elif name in ("TUPLE", "LIST", "DICT", "FROZENSET"):
          push(_Node(pop_mark()))
        elif name in ("APPEND", "SETITEM"):
          items = stack[-(1 if name == "APPEND" else 2):]
          del stack[-len(items):]
          stack[-1].add(items)
          push(stack.pop())
        elif name in ("APPENDS", "SETITEMS", "ADDITEMS"):
          items = pop_mark()
          stack[-1].add(items)
          push(stack.pop())
        elif name == "MARK":
          stack.append(mark)
        elif name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
          memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
          stack.append(memo[arg])
        elif name in ("GLOBAL", "STACK_GLOBAL"):
          if name == "STACK_GLOBAL":
            del stack[-2:]
          stack.append(1)
        elif name in ("REDUCE", "NEWOBJ"):   # defaultdict(set): the call's arguments, then items
          args = stack.pop()
          stack.pop()
          push(_Node([args]))
        elif name == "BUILD":
          stack.pop()
        elif name == "POP":
          stack.pop()
        elif name == "POP_MARK":
          pop_mark()
        elif name == "DUP":
          stack.append(stack[-1])
        elif name in ("PROTO", "FRAME", "STOP"):
          stored -= 1
        else:
          raise DataError(f"{path}: pickle opcode {name} has no place in a BetaE pickle")
  except DataError:
    raise
  except Exception as e:  # noqa: BLE001 - malformed opcodes, a stack that does not add up
    msg = " ".join(str(e).split())[:200]
    raise DataError(f"{path}: not a readable pickle ({type(e).__name__}: {msg})") from None


def _unpickle(path: Path):
  scan_pickle(path)
  return safe_pickle.load(path, _ALLOWED, "a BetaE pickle holds only tuples, ints, strings, sets, "
                          "lists and dicts")


def _read_stats(path: Path) -> tuple[int, int]:
  vals = {}
  for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
    if not line.strip():
      continue
    key, sep, val = line.partition(":")
    key, val = key.strip(), val.strip()
    if not sep or (key in ("numentity", "numrelations") and not (val.isdigit() and int(val) > 0)):
      raise DataError(f"{path}:{i}: expected 'numentity: N' / 'numrelations: R' (positive ints), "
                      f"got {line[:80]!r}")
    vals[key] = int(val) if key in ("numentity", "numrelations") else val
  missing = [k for k in ("numentity", "numrelations") if k not in vals]
  if missing:
    raise DataError(f"{path}: no {' / '.join(missing)} line (expected 'numentity: N' and "
                    "'numrelations: R')")
  return vals["numentity"], vals["numrelations"]


def _is_template(s) -> bool:
  if isinstance(s, str):
    return s in ("e", "r", "u", "n")
  return isinstance(s, tuple) and len(s) > 0 and all(_is_template(x) for x in s)


def _matches(q, s) -> bool:
  """Whether instance q has template s ('e'/'r' an int, 'u' the -1 marker)."""
  if s in ("e", "r"):
    return type(q) is int
  if s == "u":
    return type(q) is int and q == UNION
  return (isinstance(s, tuple) and isinstance(q, tuple) and len(q) == len(s)
          and all(_matches(a, b) for a, b in zip(q, s)))


def _structure_name(s) -> str:
  return BETAE_STRUCTURE_NAMES.get(s, repr(s))


def _load_queries(path: Path, n_e: int, n_r: int, skipped: dict[str, int]) -> dict[str, list]:
  raw = _unpickle(path)
  if not isinstance(raw, dict):
    raise DataError(f"{path}: expected a dict structure -> set of queries, got a "
                    f"{type(raw).__name__}")
  out = {}
  for s, qs in raw.items():
    if not (isinstance(s, tuple) and _is_template(s)):
      raise DataError(f"{path}: key {str(s)[:80]!r} is not a BetaE query structure (nested tuples "
                      "of 'e', 'r', 'u', 'n')")
    if not isinstance(qs, (set, frozenset, list)):
      raise DataError(f"{path}: the queries of {_structure_name(s)} are a {type(qs).__name__}, "
                      "not a set")
    t = _OUR_TYPE.get(s)
    if t is None:
      name = _structure_name(s)
      skipped[name] = skipped.get(name, 0) + len(qs)
      continue
    for q in qs:
      if not _matches(q, s):
        raise DataError(f"{path}: query {str(q)[:80]} does not have the {t} structure {s} it is "
                        "filed under")
      check_ids(q, n_e, n_r, where=str(path))
    out[t] = sorted(set(qs))
  return {t: out[t] for t in TYPES if t in out}


def _load_answers(path: Path, qs: dict[str, list], n_e: int) -> dict[tuple, frozenset]:
  raw = _unpickle(path)
  if not isinstance(raw, dict):
    raise DataError(f"{path}: expected a dict query -> set of answers, got {type(raw).__name__}")
  out = {}
  for t, lst in qs.items():
    for q in lst:
      a = raw.get(q)   # .get: a defaultdict does not invent an entry
      if a is None:
        raise DataError(f"{path}: no answers for the {t} query {q}")
      if not isinstance(a, (set, frozenset)) or not all(type(x) is int for x in a):
        raise DataError(f"{path}: the answers of {q} are not a set of entity ids: {str(a)[:80]}")
      if a and not (0 <= min(a) and max(a) < n_e):
        bad = min(a) if min(a) < 0 else max(a)
        raise DataError(f"{path}: answer {bad} of {q} is no entity id (the graph has {n_e} "
                        "entities)")
      out[q] = frozenset(a)
  return out


# id -> name and name -> id maps: KGReasoning's names, then the query2box release's
NAME_FILES = {"entity": (("id2ent.pkl", "ind2ent.pkl"), ("ent2id.pkl", "ent2ind.pkl")),
              "relation": (("id2rel.pkl", "ind2rel.pkl"), ("rel2id.pkl", "rel2ind.pkl"))}


def _load_names(path: Path, kind: str, n: int) -> tuple[str, ...]:
  """The n names of `kind` (entity / relation) ids: from id2X.pkl ({id: name}) or X2id.pkl
  ({name: id}); both, when present, must agree; neither: the ids as strings. One DataError names
  the file for ids outside 0..n-1, missing ids, repeated names or non-string names."""
  by_ids, by_names = NAME_FILES[kind]
  by_id_file = next((path / f for f in by_ids if (path / f).is_file()), path / by_ids[0])
  by_name_file = next((path / f for f in by_names if (path / f).is_file()), path / by_names[0])
  found = {}
  for file, inverse in ((by_id_file, False), (by_name_file, True)):
    if not file.is_file():
      continue
    d = _unpickle(file)
    if not isinstance(d, dict):
      raise DataError(f"{file}: expected a dict of {kind} ids and names, got {type(d).__name__}")
    pairs = [(v, k) if inverse else (k, v) for k, v in d.items()]
    if not all(isinstance(i, int) and not isinstance(i, bool) and isinstance(name, str)
               for i, name in pairs):
      raise DataError(f"{file}: {kind} ids must be ints and names strings")
    ids = sorted(i for i, _ in pairs)
    repeated = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) < len(ids) else []
    if repeated:
      raise DataError(f"{file}: {kind} id(s) {repeated[:5]} given to more than one name")
    if ids != list(range(n)):
      bad = sorted(set(ids) ^ set(range(n)))[:5]
      raise DataError(f"{file}: holds {len(ids)} {kind} ids, stats.txt says {n} (0..{n - 1}); "
                      f"first differences: {bad}")
    names = dict(pairs)
    if len(set(names.values())) != n:
      raise DataError(f"{file}: {kind} names repeat")
    found[file.name] = tuple(names[i] for i in range(n))
  if len(found) == 2 and len(set(found.values())) == 2:
    raise DataError(f"{path}: {by_id_file.name} and {by_name_file.name} disagree on the {kind} "
                    "names")
  return next(iter(found.values()), tuple(str(i) for i in range(n)))


def load_betae(directory: str | Path) -> BetaEData:
  """Loads a BetaE dataset directory. Returns a `BetaEData` (a `QueryData`; splits train, valid,
  test; types in `TYPES` order, queries sorted) whose `skipped` names the BetaE structures that
  are none of our nine types. Train: answers = train-answers, easy = {}; valid/test:
  answers = easy ∪ hard, easy = easy-answers. Any problem is one `DataError`. The last two
  directories loaded are kept while their files are unchanged (a run checks the files before it
  writes anything, then uses them: they are read once)."""
  path = Path(directory)
  stamp = tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in path.iterdir()
                       if p.is_file())) if path.is_dir() else ()
  return _load_betae(str(path), stamp)


@functools.lru_cache(maxsize=2)
def _load_betae(directory: str, stamp: tuple) -> BetaEData:
  path = Path(directory)
  if not path.is_dir():
    raise DataError(f"BetaE dataset directory {path} does not exist")
  missing = [f for f in FILES if not (path / f).is_file()]
  if missing:
    raise DataError(f"{path} has no {', '.join(missing)} (a BetaE dataset needs "
                    f"{', '.join(FILES)})")
  n_e, n_r = _read_stats(path / STATS)
  if n_r % 2:
    raise DataError(f"{path / STATS}: numrelations {n_r} is odd; BetaE counts each relation and "
                    "its inverse (ids 2k and 2k + 1)")
  skipped: dict[str, int] = {}
  splits = {}
  try:
    for split in SPLITS:
      qs = _load_queries(path / f"{split}-queries.pkl", n_e, n_r, skipped)
      if split == "train":
        splits[split] = QuerySplit(qs, _load_answers(path / "train-answers.pkl", qs, n_e), {})
        continue
      easy = _load_answers(path / f"{split}-easy-answers.pkl", qs, n_e)
      hard = _load_answers(path / f"{split}-hard-answers.pkl", qs, n_e)
      splits[split] = QuerySplit(qs, {q: easy[q] | hard[q] for q in easy}, easy)
  except RecursionError:
    raise DataError(f"{path}: queries nested too deeply for a BetaE dataset") from None
  if skipped:
    log.info("%s: skipped %s (not among the nine types %s)", path,
             ", ".join(f"{n} ({c} queries)" for n, c in sorted(skipped.items())), TYPES)
  return BetaEData(n_e, n_r, splits, skipped=tuple(sorted(skipped)),
                   entities=_load_names(path, "entity", n_e),
                   relations=_load_names(path, "relation", n_r))


def _forward(edges) -> np.ndarray:
  """Edges (h, r, t) each once, in the forward (even-relation) direction: (t, r ^ 1, h) for odd
  r (relation 2k + 1 is the inverse of 2k, as KGReasoning numbers them)."""
  out = {(h, r, t) if r % 2 == 0 else (t, r ^ 1, h) for h, r, t in edges}
  return np.array(sorted(out), np.int64).reshape(-1, 3)


def _read_edges(file: Path, n_e: int, n_r: int) -> list[tuple[int, int, int]]:
  edges = []
  for i, line in enumerate(file.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
    if not line.strip():
      continue
    parts = line.split()
    if len(parts) != 3 or not all(p.lstrip("-").isdigit() for p in parts):
      raise DataError(f"{file}:{i}: expected three integer ids 'head relation tail', got "
                      f"{line[:80]!r}")
    h, r, t = map(int, parts)
    if not (0 <= h < n_e and 0 <= t < n_e and 0 <= r < n_r):
      raise DataError(f"{file}:{i}: ids ({h}, {r}, {t}) outside stats.txt's {n_e} entities / "
                      f"{n_r} relations")
    edges.append((h, r, t))
  return edges


def graph(data: BetaEData, directory: str | Path) -> KG | None:
  """The directory's knowledge graph, for pre-training and path checks: KGReasoning's
  {train,valid,test}.txt (id triples; each split's new edges) when the directory has them, else
  G_train rebuilt from the train 1p queries (`train_kg`), else None. Where both exist, a training
  graph that differs from the rebuilt one is logged."""
  path = Path(directory)
  files = {s: path / f"{s}.txt" for s in SPLITS}
  if not files["train"].is_file():
    return train_kg(data, path.name) if data.splits["train"].queries.get("1p") else None
  triples, seen = {}, set()
  for split in SPLITS:
    edges = _read_edges(files[split], data.num_entities, data.num_relations) if (
        files[split].is_file()) else []
    new = [e for e in map(tuple, _forward(edges).tolist()) if e not in seen]   # the split's own
    triples[split] = np.array(new, np.int64).reshape(-1, 3)
    seen.update(new)
  kg = KG(path.name, list(data.entities), list(data.relations), triples)
  if data.splits["train"].queries.get("1p"):
    rebuilt = {tuple(e) for e in train_kg(data, path.name).triples["train"].tolist()}
    if rebuilt != {tuple(e) for e in triples["train"].tolist()}:
      log.warning("%s: train.txt and the train 1p queries give different training graphs (%d vs "
                  "%d edges); using train.txt", path, len(triples["train"]), len(rebuilt))
  return kg


def train_kg(data: BetaEData, name: str) -> KG:
  """G_train rebuilt from the train 1p queries, for a BetaE directory without train.txt: in
  KGReasoning's data every (head, relation) edge of the training graph, in both directions, is a
  train 1p query with all its tails as answers (its `write_links`, at the default answer cap);
  tested on directories our generator writes, which hold every edge. Each edge is kept once, in
  its forward (even-relation) direction, as `KG.triples["train"]`; valid and test hold none. One
  DataError when the directory has no train 1p queries."""
  split = data.splits["train"]
  ones = split.queries.get("1p", [])
  if not ones:
    raise DataError(f"{name}: no train 1p queries, so no training graph to pre-train on (KGReasoning "
                    "writes every training edge as one)")
  triples = _forward((h, r, t) for (h, (r,)) in ones for t in split.answers[(h, (r,))])
  empty = np.zeros((0, 3), np.int64)
  return KG(name, list(data.entities), list(data.relations),
            {"train": triples, "valid": empty, "test": empty})


def _plain(q) -> tuple | int:
  """Python ints all the way down (numpy ints would pickle as numpy globals)."""
  return tuple(_plain(x) for x in q) if isinstance(q, tuple) else operator.index(q)


def _dump(obj, path: Path) -> None:
  with atomic_path(path) as tmp, open(tmp, "wb") as f:
    pickle.dump(obj, f, protocol=4)


def write_betae(data: QueryData, directory: str | Path, entities=None, relations=None) -> Path:
  """Writes `data` in BetaE's layout (defaultdict(set) pickles, as BetaE), so `load_betae`
  round-trips it. A split missing from `data` is written empty; valid/test hard answers are
  answers - easy. With `entities` / `relations` (names by id) it writes KGReasoning's id2ent,
  ent2id, id2rel and rel2id pickles too. Returns the directory."""
  path = Path(directory)
  path.mkdir(parents=True, exist_ok=True)
  for kind, names, n in (("entity", entities, data.num_entities),
                         ("relation", relations, data.num_relations)):
    if names is None:
      continue
    if len(names) != n or len(set(names)) != n:
      raise DataError(f"write_betae: {len(names)} {kind} names for {n} ids, or names repeat")
    by_id, by_name = NAME_FILES[kind][0][0], NAME_FILES[kind][1][0]
    _dump({i: str(x) for i, x in enumerate(names)}, path / by_id)
    _dump({str(x): i for i, x in enumerate(names)}, path / by_name)
  (path / STATS).write_text(f"numentity: {data.num_entities}\nnumrelations: {data.num_relations}\n")
  for split in SPLITS:
    sp = data.splits.get(split) or QuerySplit({}, {}, {})
    structs, kept = defaultdict(set), []
    for t, lst in sp.queries.items():
      if t not in STRUCTURES:
        raise DataError(f"write_betae: unknown query type {t!r}; the nine types are {TYPES}")
      for q in lst:
        q = _plain(q)
        if type_of(q) != t:
          raise DataError(f"write_betae: {split} query {q} is filed as {t} but is a {type_of(q)}")
        check_ids(q, data.num_entities, data.num_relations, where=f"write_betae {split}")
        if q not in sp.answers:
          raise DataError(f"write_betae: {split} query {q} has no answers")
        structs[STRUCTURES[t]].add(q)
        kept.append(q)
    _dump(structs, path / f"{split}-queries.pkl")
    ans = {q: {int(a) for a in sp.answers[q]} for q in kept}
    if split == "train":
      _dump(defaultdict(set, ans), path / "train-answers.pkl")
      continue
    easy = {q: {int(a) for a in sp.easy.get(q, ())} for q in kept}
    _dump(defaultdict(set, easy), path / f"{split}-easy-answers.pkl")
    _dump(defaultdict(set, {q: ans[q] - easy[q] for q in kept}), path / f"{split}-hard-answers.pkl")
  return path
