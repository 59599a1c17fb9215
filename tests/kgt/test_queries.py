"""BetaE query generation (kgTransformer §5.1): answers against brute force on a hand-made KG
(both generators), easy/hard split, filters, determinism, bad input; KGReasoning's sampling rules
on hand-made graphs and its answer-count statistics on UMLS."""
import itertools

import numpy as np
import pytest

from jaxpapers.core.errors import DataError
from jaxpapers.kgt import kg as kglib
from jaxpapers.kgt import queries as Q

# A small fixed KG: 6 entities, relations a (id 0) and b (id 2); valid and test edges are new
# links on top of the earlier splits (small enough to enumerate every assignment).
TRAIN = [(1, 2, 3), (3, 0, 5), (2, 0, 0), (4, 0, 5), (3, 2, 5), (0, 2, 1), (4, 2, 3), (3, 0, 0),
         (5, 2, 3), (2, 2, 1), (1, 2, 4), (3, 2, 2)]
VALID = [(3, 2, 0), (0, 2, 2), (1, 0, 2), (2, 2, 4)]
TEST = [(0, 0, 5), (5, 0, 3), (4, 2, 2), (4, 0, 3), (5, 2, 4), (0, 2, 3)]


def tiny_kg() -> kglib.KG:
  ents = [f"e{i}" for i in range(6)]
  arr = lambda t: np.array(t, np.int64)
  return kglib.KG("tiny", ents, ["a", "a-1", "b", "b-1"],
                  {"train": arr(TRAIN), "valid": arr(VALID), "test": arr(TEST)})


def edge_set(splits):
  """Every (h, r, t) with inverses, r^1 the inverse."""
  out = set()
  for tr in splits:
    for h, r, t in tr:
      out |= {(h, r, t), (t, r ^ 1, h)}
  return out


def brute_force(q, edges, n=6):
  """Answers by enumerating every assignment of the query's entity nodes (independent of
  queries.answers): nodes of the query graph, edges as constraints."""
  nodes, cons, anchors = [], [], {}

  def build(x, out=None):
    if isinstance(x, int):
      nodes.append(("a", x))
      anchors[len(nodes) - 1] = x
      return len(nodes) - 1
    if Q.is_path(x):
      u = build(x[0])
      for i, r in enumerate(x[1]):
        if i == len(x[1]) - 1 and out is not None:
          v = out
        else:
          nodes.append(("v",))
          v = len(nodes) - 1
        cons.append((u, r, v))
        u = v
      return u
    if out is None:
      nodes.append(("v",))
      out = len(nodes) - 1
    for b in x:
      build(b, out)
    return out

  target = build(q)
  free = [i for i in range(len(nodes)) if i not in anchors]
  found = set()
  for vals in itertools.product(range(n), repeat=len(free)):
    assign = dict(anchors)
    assign.update(zip(free, vals))
    if all((assign[u], r, assign[v]) in edges for u, r, v in cons):
      found.add(assign[target])
  return frozenset(found)


def brute_answers(q, edges):
  if Q.type_of(q) in ("2u", "up"):
    return frozenset().union(*(brute_force(b, edges) for b in Q.branches(q)))
  return brute_force(q, edges)


@pytest.fixture(scope="module", params=Q.GENERATORS)
def generated(request):
  counts = {"train": {"1p": -1, "2p": 6, "3p": 6, "2i": 4, "3i": 2},
            "valid": {t: 1 for t in Q.TYPES}, "test": {t: 2 for t in Q.TYPES}}
  return Q.generate(tiny_kg(), counts, seed=3, max_answers=6, max_tries=2000,
                    generator=request.param)


def test_answers_equal_brute_force_for_every_type(generated):
  graphs = {"train": edge_set([TRAIN]), "valid": edge_set([TRAIN, VALID]),
            "test": edge_set([TRAIN, VALID, TEST])}
  smaller = {"valid": "train", "test": "valid"}
  seen_types = set()
  for split, data in generated.splits.items():
    for t, qs in data.queries.items():
      for q in qs:
        seen_types.add(t)
        assert Q.type_of(q) == t
        assert data.answers[q] == brute_answers(q, graphs[split]), (split, q)
        if split in smaller:
          assert data.easy[q] == brute_answers(q, graphs[smaller[split]])
          hard = data.hard(q)
          assert hard, "every valid/test query keeps a hard answer"
          assert not hard & brute_answers(q, graphs[smaller[split]]), "hard answers unreachable before"
  assert seen_types == set(Q.TYPES)


def test_train_1p_is_every_training_edge(generated):
  qs = generated.splits["train"].queries["1p"]
  pairs = {(h, r) for h, r, t in edge_set([TRAIN])}
  assert {(q[0], q[1][0]) for q in qs} == pairs


def test_no_relation_followed_by_its_inverse_and_deterministic():
  g = kglib.load("nations")
  counts = {"train": {"2p": 60, "3p": 60}, "valid": {"up": 10, "pi": 10}}
  a = Q.generate(g, counts, seed=7)
  b = Q.generate(g, counts, seed=7)
  c = Q.generate(g, counts, seed=8)
  assert a.splits["train"].queries == b.splits["train"].queries
  assert a.splits["train"].queries != c.splits["train"].queries
  for t in ("2p", "3p"):
    for anchor, rels in a.splits["train"].queries[t]:
      assert all(rels[i + 1] != rels[i] ^ 1 for i in range(len(rels) - 1))


def test_kgreasoning_draws_the_relation_first():
  """KGReasoning's fill_query draws a relation among those entering the node, then a head: with
  nine heads under relation 0 and one under relation 2, relation 2 is drawn half the time (the
  uniform-edge sampler: a tenth). 4,000 draws: binomial std 0.008 and 0.005."""
  heads = {0: list(range(1, 10)), 2: [10]}
  into = {0: ([0, 2], heads)}
  incoming = {0: [(h, r) for r in (0, 2) for h in heads[r]]}
  rng = np.random.default_rng(0)
  kgr = [Q.sample_kgreasoning(Q.STRUCTURES["1p"], 0, into, rng)[1][0] for _ in range(4000)]
  uni = [Q.sample_structure(Q.STRUCTURES["1p"], 0, incoming, rng)[1][0] for _ in range(4000)]
  assert abs(np.mean(np.array(kgr) == 2) - 0.5) < 0.04
  assert abs(np.mean(np.array(uni) == 2) - 0.1) < 0.025


def test_kgreasoning_inverse_rule_is_per_sub_query():
  """Within a chain a relation never follows its inverse (after 40 tries the walk is broken);
  across a sub-query's boundary (ip's branches, then the outer relation) it may, as in
  KGReasoning, where the uniform-edge generator's filter (`degenerate`) rejects it."""
  rng = np.random.default_rng(0)
  chain = {5: ([0], {0: [4]}), 4: ([1], {1: [3]})}          # 3 -1-> 4 -0-> 5: only 1 then 0
  assert all(Q.sample_kgreasoning(Q.STRUCTURES["2p"], 5, chain, rng) is None for _ in range(50))
  ip = {5: ([0], {0: [4]}), 4: ([1], {1: [1, 2, 3]})}
  got = {Q.sample_kgreasoning(Q.STRUCTURES["ip"], 5, ip, rng) for _ in range(200)} - {None}
  assert got and all(q[1] == (0,) and {b[1] for b in q[0]} == {(1,)} for q in got)
  assert all(len(set(q[0])) == 2 for q in got)              # equal branches are redrawn
  assert all(Q.degenerate(q) for q in got)


def test_kgreasoning_answer_counts_match_a_kgreasoning_made_umls_test_set():
  """Issue 22 counted, in a UMLS test set made by KGReasoning's own create_queries.py (300
  queries per type), 113 2u, 67 ip and 46 up queries with more than 50 answers. Ours at the same
  size, over 4 seeds: the mean must be within 3 standard deviations of the difference between it
  and one draw (the spread measured over the seeds: the counts are over-dispersed, up's ranged
  25-64 over 6 seeds). The uniform-edge generator, capped at 50 answers, has none."""
  theirs = {"2u": 113, "ip": 67, "up": 46}
  counts = {"test": {t: 300 for t in theirs}}
  g = kglib.load("umls")
  got = {t: [] for t in theirs}
  for seed in range(4):
    test = Q.generate(g, counts, seed=seed).splits["test"]
    for t in theirs:
      got[t].append(sum(len(test.answers[q]) > 50 for q in test.queries[t]))
  for t, k in theirs.items():
    v = np.array(got[t], float)
    assert abs(v.mean() - k) <= 3 * v.std(ddof=1) * np.sqrt(1 + 1 / len(v)), (t, got[t], k)
  test = Q.generate(g, counts, seed=0, max_answers=50, generator="uniform_edge").splits["test"]
  assert all(len(test.answers[q]) <= 50 for t in theirs for q in test.queries[t])


def test_kgreasoning_caps_hard_answers_and_redraws_an_inverse():
  """The cap is on hard answers (train: on answers); an inverse draw is redrawn (up to 40 times),
  so a node entered by the inverse and one other relation almost always gives the other."""
  g = kglib.load("nations")
  counts = {"train": {"2p": 30}, "test": {"up": 20, "2u": 20}}
  data = Q.generate(g, counts, seed=0, max_answers=5)
  assert all(len(data.splits["train"].answers[q]) <= 5 for q in data.splits["train"].queries["2p"])
  test = data.splits["test"]
  hard = [len(test.hard(q)) for t in ("up", "2u") for q in test.queries[t]]
  total = [len(test.answers[q]) for t in ("up", "2u") for q in test.queries[t]]
  assert max(hard) <= 5 and max(total) > 5          # easy answers are not capped
  rng = np.random.default_rng(0)
  into = {5: ([0], {0: [4]}), 4: ([1, 2], {1: [3], 2: [6]})}   # into 4: 0's inverse (1) or 2
  got = [Q.sample_kgreasoning(Q.STRUCTURES["2p"], 5, into, rng) for _ in range(200)]
  assert all(q == (6, (2, 0)) for q in got)


def test_kgreasoning_valid_and_test_1p_are_link_queries():
  """KGReasoning's write_links: every (h, r) with a new edge in the split, hard answers the new
  tails, easy the earlier graph's; more than exist is refused."""
  g = tiny_kg()
  data = Q.generate(g, {"valid": {"1p": -1}}, seed=0).splits["valid"]
  new = {(h, r) for h, r, t in edge_set([VALID])}
  assert {(q[0], q[1][0]) for q in data.queries["1p"]} == new
  for q in data.queries["1p"]:
    assert data.hard(q) == {t for h, r, t in edge_set([VALID]) if (h, r) == (q[0], q[1][0])}
  with pytest.raises(DataError, match="only 8 valid 1p link queries"):
    Q.generate(g, {"valid": {"1p": 9}}, seed=0)
  with pytest.raises(DataError, match="unknown query generator"):
    Q.generate(g, {"valid": {"1p": 1}}, generator="kgr")


def test_inverse_filter_crosses_sub_query_boundaries():
  """up whose DNF branch would be (a, (r, r^-1)) is rejected, as BetaE does; likewise ip."""
  assert Q.degenerate((1, (0, 1)))
  assert Q.degenerate((((1, (0,)), (2, (2,)), (-1,)), (1,)))
  assert Q.degenerate((((1, (0,)), (2, (2,))), (3,)))
  assert not Q.degenerate((((1, (0,)), (2, (2,))), (0,)))
  assert not Q.degenerate(((1, (0, 2)), (2, (1,))))


def test_structures_flatten_round_trip_and_branches():
  for t in Q.TYPES:
    q = Q.unflatten(t, [10, 11, 12], [0, 1, 2])
    assert Q.type_of(q) == t
    assert Q.unflatten(t, *Q.flatten(q)) == q
  assert Q.branches(((1, (2,)), (3, (4,)), (-1,))) == [(1, (2,)), (3, (4,))]
  assert Q.branches((((1, (2,)), (3, (4,)), (-1,)), (5,))) == [(1, (2, 5)), (3, (4, 5))]


def test_bad_ids_and_malformed_triples(tmp_path):
  with pytest.raises(DataError, match="unknown entity id 9"):
    Q.check_ids((9, (0,)), 6, 4)
  with pytest.raises(DataError, match="unknown relation id 4"):
    Q.check_ids(((1, (0,)), (2, (4,))), 6, 4)
  for s in ("train", "valid", "test"):
    (tmp_path / f"{s}.tsv").write_text("a\tr\tb\n")
  (tmp_path / "valid.tsv").write_text("a\tr\tb\nc\tonly_two\n")
  with pytest.raises(DataError, match=r"valid.tsv:2: expected 'head<TAB>relation<TAB>tail'"):
    kglib.load_tsv_dir(tmp_path)
  with pytest.raises(DataError, match="unknown embedded knowledge graph"):
    kglib.load_embedded("fb15k")
