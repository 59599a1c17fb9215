"""The nine BetaE query types (Ren & Leskovec 2020; kgTransformer §5.1) in BetaE's nested-tuple
format, exact answers by set evaluation, and two generators of BetaE's protocol: KGReasoning's
(`create_queries.py` of snap-stanford/KGReasoning, whose data BetaE-directory users have; the
default) and this project's first one (`uniform_edge`, kept as an option).

A query is a nested tuple of ints: a path `(x, (r1, ..., rk))` follows relations from x (an anchor
entity id or a sub-query); a tuple of branches is their intersection; a tuple of branches ending
in `(-1,)` is their union (BetaE's DNF form of 2u and up)."""
from __future__ import annotations

import dataclasses
from typing import Iterable

import numpy as np

from jaxpapers.core.errors import DataError
from jaxpapers.kgt.kg import KG, SPLITS, inverse

UNION = -1
# BetaE's query structures; "u" is stored as -1 in query instances.
STRUCTURES = {
    "1p": ("e", ("r",)),
    "2p": ("e", ("r", "r")),
    "3p": ("e", ("r", "r", "r")),
    "2i": (("e", ("r",)), ("e", ("r",))),
    "3i": (("e", ("r",)), ("e", ("r",)), ("e", ("r",))),
    "ip": ((("e", ("r",)), ("e", ("r",))), ("r",)),
    "pi": (("e", ("r", "r")), ("e", ("r",))),
    "2u": (("e", ("r",)), ("e", ("r",)), ("u",)),
    "up": ((("e", ("r",)), ("e", ("r",)), ("u",)), ("r",)),
}
TYPES = tuple(STRUCTURES)
IN_DOMAIN = ("1p", "2p", "3p", "2i", "3i")      # trained on (kgTransformer Table 2)
OUT_OF_DOMAIN = ("ip", "pi", "2u", "up")         # evaluated only
# BetaE's names for the same structures in its pickles.
BETAE_NAMES = {"2u": "2u-DNF", "up": "up-DNF"}


def is_path(q) -> bool:
  return (len(q) == 2 and isinstance(q[1], tuple) and len(q[1]) > 0
          and all(isinstance(r, (int, str)) and r not in (UNION, "u") for r in q[1]))


def is_union(q) -> bool:
  return isinstance(q[-1], tuple) and len(q[-1]) == 1 and q[-1][0] in (UNION, "u")


def structure_of(q) -> tuple:
  """The BetaE structure ('e'/'r'/'u' template) of a query instance."""
  if is_path(q):
    head = "e" if isinstance(q[0], int) else structure_of(q[0])
    return (head, tuple("r" for _ in q[1]))
  if is_union(q):
    return tuple(structure_of(b) for b in q[:-1]) + (("u",),)
  return tuple(structure_of(b) for b in q)


_TYPE_OF = {v: k for k, v in STRUCTURES.items()}


def type_of(q) -> str:
  s = structure_of(q)
  if s not in _TYPE_OF:
    raise DataError(f"query {q!r} is none of the nine types {TYPES}")
  return _TYPE_OF[s]


def flatten(q) -> tuple[list[int], list[int]]:
  """(anchors, relations) in depth-first order of the structure (the order `unflatten` reads)."""
  anchors, rels = [], []

  def walk(x):
    if isinstance(x, int):
      anchors.append(x)
    elif is_path(x):
      walk(x[0])
      rels.extend(x[1])
    else:
      for b in (x[:-1] if is_union(x) else x):
        walk(b)
  walk(q)
  return anchors, rels


def unflatten(qtype: str, anchors: Iterable[int], relations: Iterable[int]) -> tuple:
  a, r = iter(int(x) for x in anchors), iter(int(x) for x in relations)

  def build(s):
    if s == "e":
      return next(a)
    if s == ("u",):
      return (UNION,)
    if len(s) == 2 and isinstance(s[1], tuple) and all(x == "r" for x in s[1]):
      head = build(s[0])
      return (head, tuple(next(r) for _ in s[1]))
    return tuple(build(b) for b in s)
  return build(STRUCTURES[qtype])


def num_anchors(qtype: str) -> int:
  return len(flatten(unflatten(qtype, range(9), range(9)))[0])


def num_relations(qtype: str) -> int:
  return len(flatten(unflatten(qtype, range(9), range(9)))[1])


def answers(q, adj: dict[tuple[int, int], frozenset[int]]) -> frozenset[int]:
  """Exact answers of q on a graph given as (head, relation) -> tails (set semantics)."""
  if isinstance(q, int):
    return frozenset((q,))
  if is_path(q):
    cur = answers(q[0], adj)
    for r in q[1]:
      nxt = set()
      for e in cur:
        nxt |= adj.get((e, r), frozenset())
      cur = frozenset(nxt)
    return cur
  if is_union(q):
    return frozenset().union(*(answers(b, adj) for b in q[:-1]))
  out = answers(q[0], adj)
  for b in q[1:]:
    out = out & answers(b, adj)
  return out


def branches(q) -> list[tuple]:
  """The conjunctive branches of a query: a union's DNF branches (2u: two 1p; up: two 2p, the
  trailing relations pushed into each branch, BetaE's DNF), else [q]."""
  t = type_of(q)
  if t == "2u":
    return [q[0], q[1]]
  if t == "up":
    (b1, b2, _), rels = q
    return [(b1[0], b1[1] + rels), (b2[0], b2[1] + rels)]
  return [q]


def check_ids(q, num_entities: int, num_relations: int, where: str = "query") -> None:
  """One clear error for an entity or relation id outside the graph's vocabulary."""
  anchors, rels = flatten(q)
  for e in anchors:
    if not 0 <= e < num_entities:
      raise DataError(f"{where}: unknown entity id {e} (the graph has {num_entities} entities)")
  for r in rels:
    if not 0 <= r < num_relations:
      raise DataError(f"{where}: unknown relation id {r} (the graph has {num_relations} relations)")


@dataclasses.dataclass
class QuerySplit:
  """Queries of one split: type -> list of queries; answers in this split's graph and the easy
  ones (reachable in the next smaller graph; empty for train). Hard = answers - easy."""
  queries: dict[str, list[tuple]]
  answers: dict[tuple, frozenset]
  easy: dict[tuple, frozenset]

  def hard(self, q) -> frozenset:
    return self.answers[q] - self.easy.get(q, frozenset())

  def counts(self) -> dict[str, int]:
    return {t: len(v) for t, v in self.queries.items()}


@dataclasses.dataclass
class QueryData:
  num_entities: int
  num_relations: int
  splits: dict[str, QuerySplit]


def sample_structure(s, target: int, incoming: dict[int, list[tuple[int, int]]], rng) -> tuple | None:
  """Backward sampling (as BetaE): pick edges walking back from `target` so that `target` is an
  answer; None when a node has no incoming edge."""
  if s == "e":
    return target
  if len(s) == 2 and isinstance(s[1], tuple) and all(x == "r" for x in s[1]):
    node, rels = target, []
    for _ in s[1]:
      inc = incoming.get(node)
      if not inc:
        return None
      h, r = inc[rng.integers(len(inc))]
      rels.append(r)
      node = h
    head = sample_structure(s[0], node, incoming, rng)
    return None if head is None else (head, tuple(reversed(rels)))
  if s[-1] == ("u",):
    bs = [sample_structure(b, target, incoming, rng) for b in s[:-1]]
    return None if any(b is None for b in bs) else tuple(bs) + ((UNION,),)
  bs = [sample_structure(b, target, incoming, rng) for b in s]
  return None if any(b is None for b in bs) else tuple(bs)


def _last_relations(x) -> set[int]:
  """The relations that end each branch of x (empty for an anchor)."""
  if isinstance(x, int):
    return set()
  if is_path(x):
    return {x[1][-1]}
  return set().union(*(_last_relations(b) for b in (x[:-1] if is_union(x) else x)))


def degenerate(q) -> bool:
  """BetaE's filters: a relation directly followed by its own inverse (also across a sub-query's
  boundary, as in ip/up whose DNF branches are chains); repeated branches."""
  if isinstance(q, int):
    return False
  if is_path(q):
    rs = list(q[1])
    if any(rs[i + 1] == inverse(rs[i]) for i in range(len(rs) - 1)):
      return True
    if any(rs[0] == inverse(r) for r in _last_relations(q[0])):
      return True
    return degenerate(q[0])
  bs = q[:-1] if is_union(q) else q
  return len(set(bs)) < len(bs) or any(degenerate(b) for b in bs)


def sample_kgreasoning(s, target: int, into: dict[int, tuple[list[int], dict[int, list[int]]]],
                       rng, tries: int = 40) -> tuple | None:
  """KGReasoning's `fill_query`: a chain is filled from its end, each step drawing a relation
  uniformly among the relations that enter the current node (relation first), retrying up to
  `tries` times while it is the inverse of the relation drawn just after it in the same chain,
  then a head uniformly among that relation's heads; the inverse rule starts afresh in every
  sub-query (a branch of an intersection or union is its own chain). Branches of the same
  structure must differ. `into[node]` = (relations entering node, relation -> heads). None when
  the walk is stuck (KGReasoning's `broken`)."""
  if s == "e":
    return target
  if len(s) == 2 and isinstance(s[1], tuple) and all(x == "r" for x in s[1]):
    node, rels, after = target, [], None
    for _ in s[1]:
      if node not in into:
        return None
      relations, heads = into[node]
      for _ in range(tries):
        r = relations[rng.integers(len(relations))]
        if after is None or r != inverse(after):
          break
      else:
        return None
      rels.append(r)
      after = r
      node = heads[r][rng.integers(len(heads[r]))]
    head = sample_kgreasoning(s[0], node, into, rng, tries)
    return None if head is None else (head, tuple(reversed(rels)))
  union = s[-1] == ("u",)
  parts = s[:-1] if union else s
  bs = [sample_kgreasoning(b, target, into, rng, tries) for b in parts]
  if any(b is None for b in bs) or len(set(bs)) < len(bs):
    return None
  return tuple(bs) + (((UNION,),) if union else ())


def _link_queries(adj, prev, max_hard: int) -> list[tuple]:
  """KGReasoning's 1p valid/test queries (`write_links`): every (head, relation) with an edge new
  in this split's graph, whose new tails (the hard answers) are at most max_hard."""
  out = []
  for (h, r), tails in sorted(adj.items()):
    new = tails - prev.get((h, r), frozenset())
    if new and len(new) <= max_hard:
      out.append((h, (r,)))
  return out


GENERATORS = ("kgreasoning", "uniform_edge")


def generate(kg: KG, counts: dict[str, dict[str, int]], seed: int = 0,
             max_answers: int = 1_000_000, max_tries: int = 200,
             generator: str = "kgreasoning") -> QueryData:
  """BetaE's protocol: G_train ⊂ G_valid ⊂ G_test. Train queries are answered on G_train (every
  training edge (h, r) is a 1p query); valid/test queries on G_valid/G_test, their easy answers
  are those reachable in the next smaller graph, and each keeps >= 1 hard answer. Repeated
  queries and branches are rejected. counts: split -> type -> number (train "1p" < 0 means all
  training edges). Deterministic in `seed`.

  generator="kgreasoning" (KGReasoning's create_queries.py): targets uniform over entities with
  an incoming edge, chains sampled relation first (`sample_kgreasoning`), the inverse rule within
  each sub-query, at most `max_answers` hard answers (train: answers; its default 1e6, no cap on
  these graphs); valid/test 1p are its link queries (`_link_queries`), `counts` of them drawn
  uniformly without replacement (KGReasoning keeps all: give -1).
  generator="uniform_edge" (this project's first generator): an incoming edge drawn uniformly at
  each step, the inverse rule across sub-query boundaries too (`degenerate`), at most
  `max_answers` answers in all (it used 50), valid/test 1p sampled like the other types."""
  if generator not in GENERATORS:
    raise DataError(f"unknown query generator {generator!r}; use one of {GENERATORS}")
  kgr = generator == "kgreasoning"
  adjs = {s: kg.adjacency(s) for s in SPLITS}
  data = {}
  for si, split in enumerate(SPLITS):
    adj = adjs[split]
    prev = adjs[SPLITS[si - 1]] if si > 0 else None
    incoming: dict[int, list] = {}
    for (h, r), tails in sorted(adj.items()):
      for t in sorted(tails):
        incoming.setdefault(t, []).append((h, r))
    into = {}
    for t, edges in incoming.items():
      heads: dict[int, list[int]] = {}
      for h, r in edges:
        heads.setdefault(r, []).append(h)
      into[t] = (sorted(heads), heads)
    targets = np.array(sorted(incoming))
    rng = np.random.default_rng([seed, si])
    qs, ans, easy = {}, {}, {}
    for qtype, n in counts.get(split, {}).items():
      if qtype not in STRUCTURES:
        raise DataError(f"unknown query type {qtype!r}; the nine types are {TYPES}")
      out = []
      if split == "train" and qtype == "1p" and n < 0:
        for (h, r), tails in sorted(adj.items()):
          if kgr and len(tails) > max_answers:
            continue
          q = (h, (r,))
          out.append(q)
          ans[q] = tails
        qs[qtype] = out
        continue
      if kgr and qtype == "1p" and prev is not None:
        links = _link_queries(adj, prev, max_answers)
        if 0 <= n < len(links):
          links = [links[i] for i in sorted(rng.choice(len(links), n, replace=False))]
        elif n > len(links):
          raise DataError(f"{kg.name}: only {len(links)} {split} 1p link queries exist; ask for "
                          f"at most that many")
        for q in links:
          ans[q], easy[q] = adj[(q[0], q[1][0])], prev.get((q[0], q[1][0]), frozenset())
        qs[qtype] = links
        continue
      have = set()
      for _ in range(max_tries * n):
        if len(out) >= n:
          break
        target = int(targets[rng.integers(len(targets))])
        if kgr:
          q = sample_kgreasoning(STRUCTURES[qtype], target, into, rng)
        else:
          q = sample_structure(STRUCTURES[qtype], target, incoming, rng)
          q = None if q is None or degenerate(q) else q
        if q is None or q in have:
          continue
        a = answers(q, adj)
        if not a:
          continue
        e = answers(q, prev) if prev is not None else frozenset()
        if prev is not None and not (a - e):
          continue
        if len(a - e if kgr else a) > max_answers:
          continue
        have.add(q)
        out.append(q)
        ans[q], easy[q] = a, e
      if len(out) < n:
        raise DataError(f"{kg.name}: found only {len(out)} of {n} {split} {qtype} queries with a "
                        f"hard answer in {max_tries * n} tries; ask for fewer")
      qs[qtype] = out
    data[split] = QuerySplit(qs, ans, easy)
  return QueryData(kg.num_entities, kg.num_relations, data)
