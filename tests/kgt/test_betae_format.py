"""BetaE dataset directories: write/load round trip, the restricted unpickler (no code runs),
id checks, skipped negation structures, and one clear error per missing or malformed file."""
import os
import pickle

import pytest

from jaxpapers.core.errors import DataError
from jaxpapers.kgt import kg, queries
from jaxpapers.kgt.betae_format import BetaEData, load_betae, write_betae

COUNTS = {"train": {"1p": -1, "2p": 20},
          "valid": {t: 5 for t in queries.TYPES}, "test": {t: 5 for t in queries.TYPES}}


@pytest.fixture(scope="module")
def data():
  return queries.generate(kg.load("nations"), COUNTS, seed=0)


@pytest.fixture
def betae_dir(data, tmp_path):
  return write_betae(data, tmp_path / "nations-q2b")


def _pickle(path, obj, protocol=4):
  path.write_bytes(pickle.dumps(obj, protocol=protocol))


def _unpickle(path):
  return pickle.loads(path.read_bytes())


def _types(split):
  return {t: set(v) for t, v in split.queries.items() if v}


def assert_same(a, b):
  assert (a.num_entities, a.num_relations) == (b.num_entities, b.num_relations)
  assert set(a.splits) == set(b.splits)
  for s in a.splits:
    x, y = a.splits[s], b.splits[s]
    assert _types(x) == _types(y)
    for q in (q for v in x.queries.values() for q in v):
      assert x.answers[q] == y.answers[q] and x.hard(q) == y.hard(q), (s, q)
      if s != "train":
        assert x.easy[q] == y.easy[q]


def test_round_trip(data, betae_dir):
  got = load_betae(betae_dir)
  assert isinstance(got, BetaEData) and got.skipped == ()
  assert list(got.splits["valid"].queries) == list(queries.TYPES)
  assert got.splits["train"].easy == {}
  assert_same(data, got)
  assert (betae_dir / "stats.txt").read_text() == (
      f"numentity: {data.num_entities}\nnumrelations: {data.num_relations}\n")
  # BetaE's own names and -1 marker: the 2u structure holds (.., .., (-1,)).
  raw = _unpickle(betae_dir / "test-queries.pkl")
  assert all(q[-1] == (-1,) for q in raw[queries.STRUCTURES["2u"]])


@pytest.mark.parametrize("protocol", [0, 2])
def test_old_pickle_protocols(data, betae_dir, protocol):
  for f in ("train-queries.pkl", "valid-easy-answers.pkl"):
    _pickle(betae_dir / f, _unpickle(betae_dir / f), protocol)
  assert_same(data, load_betae(betae_dir))


class _Evil:
  def __init__(self, cmd):
    self.cmd = cmd

  def __reduce__(self):
    return (os.system, (self.cmd,))


@pytest.mark.parametrize("how", ["reduce", "os.system", "builtins.eval", "in_answers"])
def test_code_in_pickle_is_refused_and_never_runs(betae_dir, tmp_path, how):
  marker = tmp_path / "pwned"
  cmd = f"touch {marker}"
  if how == "reduce":   # os.system pickles as posix.system
    f, blob = "train-queries.pkl", pickle.dumps({("e", ("r",)): {_Evil(cmd)}}, protocol=4)
  elif how == "os.system":
    f, blob = "valid-queries.pkl", b"cos\nsystem\n(S'" + cmd.encode() + b"'\ntR."
  elif how == "builtins.eval":
    code = f'__import__("os").system("{cmd}")'.encode()
    f, blob = "test-queries.pkl", b"cbuiltins\neval\n(S'" + code + b"'\ntR."
  else:
    f, blob = "test-hard-answers.pkl", pickle.dumps({(0, (0,)): _Evil(cmd)}, protocol=2)
  (betae_dir / f).write_bytes(blob)
  with pytest.raises(DataError, match=f"{f}: refusing to load the global .*(system|eval)") as e:
    load_betae(betae_dir)
  assert "\n" not in str(e.value)
  assert not marker.exists()


def test_out_of_range_entity_id(data, betae_dir):
  p = betae_dir / "valid-queries.pkl"
  raw = _unpickle(p)
  raw[queries.STRUCTURES["2i"]].add(((0, (1,)), (data.num_entities, (2,))))
  _pickle(p, raw)
  with pytest.raises(DataError, match=f"valid-queries.pkl: unknown entity id {data.num_entities}"):
    load_betae(betae_dir)


@pytest.mark.parametrize("bad,match", [
    (lambda n_e, n_r: ((0, (n_r,)),), "unknown relation id"),
    (lambda n_e, n_r: ((0, (1, 2)),), "does not have the 1p structure"),
    (lambda n_e, n_r: (("0", (1,)),), "does not have the 1p structure")])
def test_bad_query_in_file(data, betae_dir, bad, match):
  p = betae_dir / "train-queries.pkl"
  raw = _unpickle(p)
  raw[queries.STRUCTURES["1p"]].update(bad(data.num_entities, data.num_relations))
  _pickle(p, raw)
  with pytest.raises(DataError, match=f"train-queries.pkl: .*{match}"):
    load_betae(betae_dir)


@pytest.mark.parametrize("bad,match", [
    (lambda n_e: {n_e}, "is no entity id"), (lambda n_e: {-3}, "is no entity id"),
    (lambda n_e: [1, 2], "not a set of entity ids"), (lambda n_e: {"a"}, "not a set of entity ids"),
    (lambda n_e: None, "no answers for")])
def test_bad_answers(data, betae_dir, bad, match):
  p = betae_dir / "test-hard-answers.pkl"
  raw = _unpickle(p)
  q = data.splits["test"].queries["3i"][0]
  if bad(0) is None:
    del raw[q]
  else:
    raw[q] = bad(data.num_entities)
  _pickle(p, raw)
  with pytest.raises(DataError, match=f"test-hard-answers.pkl: .*{match}"):
    load_betae(betae_dir)


def test_negation_structures_skipped(data, betae_dir):
  s_2in = (("e", ("r",)), ("e", ("r", "n")))
  s_2u_dm = ((("e", ("r", "n")), ("e", ("r", "n"))), ("n",))
  q_2in = ((0, (0,)), (1, (2, -2)))
  q_dm = (((0, (0, -2)), (1, (2, -2))), (-2,))
  for split in ("valid", "test"):
    p = betae_dir / f"{split}-queries.pkl"
    raw = _unpickle(p)
    raw[s_2in], raw[s_2u_dm] = {q_2in}, {q_dm}
    _pickle(p, raw)
    for kind in ("easy", "hard"):
      p = betae_dir / f"{split}-{kind}-answers.pkl"
      raw = _unpickle(p)
      raw[q_2in], raw[q_dm] = {3}, {4}
      _pickle(p, raw)
  got = load_betae(betae_dir)
  assert got.skipped == ("2in", "2u-DM")
  assert_same(data, got)


def test_missing_directory_and_files(betae_dir, tmp_path):
  with pytest.raises(DataError, match="does not exist"):
    load_betae(tmp_path / "nope")
  (betae_dir / "valid-hard-answers.pkl").unlink()
  with pytest.raises(DataError, match="has no valid-hard-answers.pkl"):
    load_betae(betae_dir)


@pytest.mark.parametrize("text,match", [
    ("numentity: 14\n", "no numrelations line"),
    ("numentity 14\nnumrelations: 110\n", ":1: expected"),
    ("numentity: 14\nnumrelations: -2\n", ":2: expected"), ("", "no numentity / numrelations")])
def test_malformed_stats(betae_dir, text, match):
  (betae_dir / "stats.txt").write_text(text)
  with pytest.raises(DataError, match=match):
    load_betae(betae_dir)


@pytest.mark.parametrize("f,obj,match", [
    ("train-queries.pkl", [1, 2], "expected a dict structure"),
    ("train-queries.pkl", {"1p": set()}, "is not a BetaE query structure"),
    ("valid-easy-answers.pkl", {1, 2}, "expected a dict query"),
    ("test-queries.pkl", b"not a pickle", "not a readable pickle")])
def test_malformed_pickles(betae_dir, f, obj, match):
  if isinstance(obj, bytes):
    (betae_dir / f).write_bytes(obj)
  else:
    _pickle(betae_dir / f, obj)
  with pytest.raises(DataError, match=f"{f}: .*{match}"):
    load_betae(betae_dir)


def test_write_rejects_mislabelled_query(data, tmp_path):
  bad = queries.QueryData(data.num_entities, data.num_relations, {
      "train": queries.QuerySplit({"2p": [(0, (1,))]}, {(0, (1,)): frozenset({2})}, {})})
  with pytest.raises(DataError, match="filed as 2p but is a 1p"):
    write_betae(bad, tmp_path / "out")


def test_names_from_kgreasoning_maps(data, tmp_path):
  """id2ent/id2rel (or ent2id/rel2id alone) give the names; without them the ids as strings."""
  nations = kg.load("nations")
  named = write_betae(data, tmp_path / "named", nations.entities, nations.relations)
  got = load_betae(named)
  assert list(got.entities) == list(nations.entities)
  assert list(got.relations) == list(nations.relations)
  assert _unpickle(named / "ent2id.pkl")[nations.entities[3]] == 3
  (named / "id2ent.pkl").unlink()                      # ent2id alone is inverted
  assert list(load_betae(named).entities) == list(nations.entities)
  plain = load_betae(write_betae(data, tmp_path / "plain"))
  assert plain.entities == tuple(str(i) for i in range(data.num_entities))


@pytest.mark.parametrize("bad, match", [
    (lambda n: {i: f"e{i}" for i in range(n - 1)}, r"id2ent.pkl: holds \d+ entity ids, stats.txt"),
    (lambda n: {i: "same" for i in range(n)}, "entity names repeat"),
    (lambda n: {str(i): i for i in range(n)}, "ids must be ints and names strings"),
    (lambda n: [f"e{i}" for i in range(n)], "expected a dict"),
])
def test_bad_name_maps(data, tmp_path, bad, match):
  d = write_betae(data, tmp_path / "d")
  _pickle(d / "id2ent.pkl", bad(data.num_entities))
  with pytest.raises(DataError, match=match):
    load_betae(d)


def test_name_maps_that_disagree(data, tmp_path):
  n = data.num_entities
  d = write_betae(data, tmp_path / "d", [f"e{i}" for i in range(n)])
  _pickle(d / "ent2id.pkl", {f"e{(i + 1) % n}": i for i in range(n)})
  with pytest.raises(DataError, match="id2ent.pkl and ent2id.pkl disagree"):
    load_betae(d)


def test_explain_resolves_a_betae_directorys_names(data, tmp_path):
  """`jaxpapers explain --dataset <dir>` maps names to ids with the directory's own maps."""
  import ml_collections

  from jaxpapers.kgt.experiments import parse_query, vocabulary
  nations = kg.load("nations")
  d = write_betae(data, tmp_path / "nations-q2b", nations.entities, nations.relations)
  c = ml_collections.ConfigDict({"datasets": (f"betae:{d}",)})
  ents, rels = vocabulary(c, "nations-q2b")
  assert vocabulary(c, f"betae:{d}") == (ents, rels)          # the name as the run was given it
  q = parse_query("2p", ["poland"], ["commonbloc0", "officialvisits"], ents, rels)
  assert q == (ents.index("poland"), (rels.index("commonbloc0"), rels.index("officialvisits")))


def test_training_graph_rebuilt_from_train_1p_queries(data, tmp_path):
  """A directory's train 1p queries give back G_train: the KG's training edges, each once."""
  from jaxpapers.kgt.betae_format import train_kg
  nations = kg.load("nations")
  got = train_kg(load_betae(write_betae(data, tmp_path / "d")), "d")
  want = {tuple(t) for t in nations.triples["train"].tolist()}
  assert {tuple(t) for t in got.triples["train"].tolist()} == want
  assert got.triples["train"].shape == (len(want), 3)
  assert got.adjacency("train") == nations.adjacency("train")
  assert len(got.triples["test"]) == 0
  no_1p = queries.QueryData(data.num_entities, data.num_relations, {
      "train": queries.QuerySplit({"2p": data.splits["train"].queries["2p"]},
                                  data.splits["train"].answers, {}),
      **{s: data.splits[s] for s in ("valid", "test")}})
  with pytest.raises(DataError, match="no train 1p queries"):
    train_kg(load_betae(write_betae(no_1p, tmp_path / "e")), "e")


def _write_edges(path, triples):
  """KGReasoning's {split}.txt: each edge in both directions."""
  rows = [(h, r, t) for h, r, t in triples] + [(t, r ^ 1, h) for h, r, t in triples]
  path.write_text("".join(f"{h}\t{r}\t{t}\n" for h, r, t in rows))


def test_graph_files_are_read_when_present(data, tmp_path, caplog):
  from jaxpapers.kgt.betae_format import graph
  nations = kg.load("nations")
  d = write_betae(data, tmp_path / "d")
  for split in kg.SPLITS:
    _write_edges(d / f"{split}.txt", nations.triples[split].tolist())
  got = graph(load_betae(d), d)
  for split in kg.SPLITS:
    assert {tuple(t) for t in got.triples[split].tolist()} == {
        tuple(t) for t in nations.triples[split].tolist()}, split
  assert got.adjacency("test") == nations.adjacency("test")
  assert "different training graphs" not in caplog.text
  _write_edges(d / "train.txt", nations.triples["train"].tolist()[1:])    # one edge short
  graph(load_betae(d), d)
  assert "different training graphs" in caplog.text
  (d / "valid.txt").write_text("1\t2\n")
  with pytest.raises(DataError, match=r"valid.txt:1: expected three integer ids"):
    graph(load_betae(d), d)
  (d / "valid.txt").write_text(f"0\t0\t{data.num_entities}\n")
  with pytest.raises(DataError, match=r"valid.txt:1: ids .* outside stats.txt"):
    graph(load_betae(d), d)


def test_odd_relation_count_and_repeated_ids_are_refused(data, tmp_path):
  d = write_betae(data, tmp_path / "d")
  (d / "stats.txt").write_text(f"numentity: {data.num_entities}\nnumrelations: 5\n")
  with pytest.raises(DataError, match="numrelations 5 is odd"):
    load_betae(d)
  d = write_betae(data, tmp_path / "e")
  n = data.num_entities
  _pickle(d / "ent2id.pkl", {f"e{i}": max(i, 1) for i in range(n)})
  with pytest.raises(DataError, match=r"ent2id.pkl: entity id\(s\) \[1\] given to more than one"):
    load_betae(d)
