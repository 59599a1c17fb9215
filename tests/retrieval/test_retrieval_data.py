"""The shipped collections (disjoint splits, every query's document in its corpus, per seed) and a
data set in BEIR's layout, with its bad inputs."""
import json

import numpy as np
import pytest

from jaxpapers.core.errors import DataError
from jaxpapers.retrieval import data

SIZES = data.Sizes(n_train=200, n_dev=30, n_test=40, n_corpus=100, n_xdomain=25, n_xdomain_corpus=60)


def test_builtin_collections_are_disjoint_complete_and_seeded():
  a, b = data.builtin(0, SIZES), data.builtin(1, SIZES)
  assert set(a) == {"train", "dev", *data.SETTINGS}
  tr, dv, te = (set(a[s].query_ids) for s in ("train", "dev", "in_domain"))
  assert not (tr & dv or tr & te or dv & te)
  assert len(a["train"].queries) == 200 and len(a["in_domain"].docs) == 100
  for name, col in a.items():
    assert all(set(col.qrels[q]) <= set(col.doc_ids) for q in col.query_ids), name
    assert len(set(col.doc_ids)) == len(col.doc_ids), name
  topics = {r["id"]: r["topic"] for r in data._rows() if r["set"] == "wordnet"}
  assert {topics[d] for d in a["in_domain"].doc_ids} <= set(data.TRAIN_TOPICS)
  assert {topics[d] for d in a["cross_topic"].doc_ids} <= set(data.CROSS_TOPICS)
  assert a["in_domain"].query_ids != b["in_domain"].query_ids    # a seed resamples the data
  assert a["pydocs"].query_ids != b["pydocs"].query_ids
  # a man-page summary shared by several pages (aliases) is one query with all of them relevant
  man = data.grouped("manpages", [r for r in data._rows() if r["set"] == "manpages"])
  assert max(len(v) for v in man.qrels.values()) > 1
  assert len(set(man.docs)) == len(man.docs)


def _beir(folder, corpus, queries, qrels):
  (folder / "qrels").mkdir(parents=True)
  (folder / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in corpus))
  (folder / "queries.jsonl").write_text("\n".join(json.dumps(r) for r in queries))
  (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(
      "\t".join(map(str, r)) for r in qrels))
  return folder


def test_beir_layout_loads_and_counts_what_it_drops(tmp_path):
  col = data.load_beir(_beir(
      tmp_path / "mini",
      [{"_id": "d1", "title": "Cats", "text": "purr"}, {"_id": "d2", "title": "", "text": "dogs"},
       {"_id": "d3", "title": "", "text": ""}],
      [{"_id": "q1", "text": "what purrs"}, {"_id": "q2", "text": "barking"},
       {"_id": "q3", "text": "lost"}],
      [("q1", "d1", 2), ("q2", "d2", 1), ("q2", "d9", 1), ("q3", "d7", 1), ("q8", "d1", 1),
       ("q1", "d2", 0)]))
  assert col.name == "beir:mini" and col.docs == ["Cats purr", "dogs", ""]
  assert col.query_ids == ["q1", "q2"] and col.qrels == {"q1": {"d1": 2}, "q2": {"d2": 1}}
  assert col.dropped == {"empty_documents": 1, "judgements_of_unknown_documents": 2,
                         "judgements_of_unknown_queries": 1,
                         "queries_without_relevant_documents": 1}


@pytest.mark.parametrize("case, message", [
    ("empty_query", r"queries.jsonl:2: query 'q2' is empty"),
    ("empty_corpus", r"corpus.jsonl: the corpus has no documents"),
    ("bad_json", r"corpus.jsonl:1: not a JSON object"),
    ("bad_score", r"test.tsv:2: the score 'high' is not an integer"),
    ("nothing_judged", r"no query of queries.jsonl has a relevant document"),
])
def test_bad_beir_input_is_one_error_naming_the_file(tmp_path, case, message):
  corpus = [{"_id": "d1", "text": "x"}]
  queries = [{"_id": "q1", "text": "y"}, {"_id": "q2", "text": "z"}]
  qrels = [("q1", "d1", 1)]
  if case == "empty_query":
    queries[1]["text"] = "  "
  elif case == "empty_corpus":
    corpus = []
  elif case == "bad_score":
    qrels = [("q1", "d1", "high")]
  elif case == "nothing_judged":
    qrels = [("q1", "d5", 1)]
  folder = _beir(tmp_path / case, corpus, queries, qrels)
  if case == "bad_json":
    (folder / "corpus.jsonl").write_text("{not json\n")
  with pytest.raises(DataError, match=message):
    data.load_beir(folder)


def test_a_missing_beir_file_is_named(tmp_path):
  with pytest.raises(DataError, match="corpus.jsonl not found"):
    data.load_beir(tmp_path)
