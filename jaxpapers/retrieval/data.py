"""Retrieval collections: a corpus, queries and graded relevance judgements (qrels).

The shipped collections come from `jaxpapers/data/assets/retrieval_sets.jsonl.xz` (built by
`experiments/retrieval/build_data.py`), sampled per seed:
- `train` / `dev` / `in_domain`: WordNet gloss -> synset (lemmas and examples) on six lexname
  topics (concrete nouns); training queries, validation queries and test queries are disjoint
  synsets (dev drawn from a fixed reserved pool that is never a test query, for any seed); the dev
  and test corpora hold their positives plus sampled synsets of the same topics.
- `cross_topic`: the same task on six other lexnames (abstract nouns, verbs), never trained on.
- `manpages`: man-page NAME summary -> DESCRIPTION (cross-domain, zero-shot).
- `pydocs`: Python docs module synopsis or FAQ question -> page (cross-domain, zero-shot).

A user's data set in BEIR's layout (`corpus.jsonl`, `queries.jsonl`, `qrels/test.tsv`) loads with
`load_beir`; bad lines are one DataError naming file and line, judgements of unknown documents or
queries are dropped and counted.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import functools
import hashlib
import importlib.resources
import io
import json
import logging
import lzma
from pathlib import Path

import numpy as np

from jaxpapers.core import jsonl
from jaxpapers.core.errors import DataError

log = logging.getLogger("jaxpapers")

ASSET = "retrieval_sets.jsonl.xz"
TRAIN_TOPICS = ("noun.animal", "noun.plant", "noun.food", "noun.artifact", "noun.body",
                "noun.substance")
CROSS_TOPICS = ("noun.cognition", "noun.communication", "noun.act", "noun.state", "verb.motion",
                "verb.change")
SETTINGS = ("in_domain", "cross_topic", "manpages", "pydocs")
DEV_POOL_SEED, DEV_POOL_FACTOR = 12345, 3   # the reserved dev synsets: a fixed 3 x n_dev


@dataclasses.dataclass
class Collection:
  name: str
  doc_ids: list[str]
  docs: list[str]
  query_ids: list[str]
  queries: list[str]
  qrels: dict[str, dict[str, int]]        # query id -> {doc id: relevance > 0}
  dropped: dict = dataclasses.field(default_factory=dict)   # what loading dropped, counted

  def __post_init__(self):
    if not self.docs:
      raise DataError(f"{self.name}: the corpus has no documents")
    if not self.queries:
      raise DataError(f"{self.name}: there are no queries with relevance judgements")

  def positives(self) -> list[str]:
    """The first relevant document of each query (a training pair's positive)."""
    return [max(self.qrels[q], key=self.qrels[q].get) for q in self.query_ids]


@dataclasses.dataclass(frozen=True)
class Sizes:
  n_train: int
  n_dev: int
  n_test: int
  n_corpus: int          # documents of each WordNet evaluation corpus
  n_xdomain: int          # queries evaluated of each cross-domain collection (0: all)
  n_xdomain_corpus: int   # documents of each cross-domain corpus (0: all)


def asset_path() -> Path:
  return Path(str(importlib.resources.files("jaxpapers.data") / "assets" / ASSET))


@functools.lru_cache(maxsize=1)
def asset_sha256() -> str:
  """The shipped collections' version (a run's cached results are valid for this file only)."""
  return hashlib.sha256(asset_path().read_bytes()).hexdigest()


@functools.lru_cache(maxsize=1)
def _rows() -> tuple[dict, ...]:
  with lzma.open(asset_path(), "rt") as f:
    return tuple(json.loads(line) for line in f)


def _wordnet_collection(name: str, rows: list[dict], query_idx, corpus_idx) -> Collection:
  """Queries = glosses of rows[query_idx]; corpus = docs of rows[corpus_idx] (which must
  contain every query's synset)."""
  return Collection(name, [rows[i]["id"] for i in corpus_idx], [rows[i]["doc"] for i in corpus_idx],
                    [rows[i]["id"] for i in query_idx], [rows[i]["query"] for i in query_idx],
                    {rows[i]["id"]: {rows[i]["id"]: 1} for i in query_idx})


def _with_distractors(rng, n_pool: int, must: np.ndarray, n: int) -> np.ndarray:
  rest = np.setdiff1d(np.arange(n_pool), must)
  extra = min(max(n - len(must), 0), len(rest))
  return np.concatenate([must, rng.choice(rest, extra, replace=False)])


def grouped(name: str, rows: list[dict]) -> Collection:
  """Rows of (query, doc): identical doc texts are one document (the first row's id), identical
  query texts one query whose relevant documents are all their docs."""
  doc_of_text, doc_ids, docs = {}, [], []
  qrels = collections.defaultdict(dict)
  qid_of_text, query_ids, queries = {}, [], []
  for r in rows:
    if r["doc"] not in doc_of_text:
      doc_of_text[r["doc"]] = r["id"]
      doc_ids.append(r["id"])
      docs.append(r["doc"])
    if r["query"] not in qid_of_text:
      qid_of_text[r["query"]] = f"q:{r['id']}"
      query_ids.append(qid_of_text[r["query"]])
      queries.append(r["query"])
    qrels[qid_of_text[r["query"]]][doc_of_text[r["doc"]]] = 1
  return Collection(name, doc_ids, docs, query_ids, queries, dict(qrels))


def subset(c: Collection, query_idx, n_corpus: int, rng) -> Collection:
  """The queries `query_idx` of `c`; the corpus cut to `n_corpus` documents (0: all) that keep
  every relevant document of those queries."""
  qids = [c.query_ids[i] for i in query_idx]
  keep_docs = range(len(c.docs))
  if n_corpus:
    pos = {d for q in qids for d in c.qrels[q]}
    must = np.array([i for i, d in enumerate(c.doc_ids) if d in pos], int)
    keep_docs = np.sort(_with_distractors(rng, len(c.docs), must, n_corpus))
  return Collection(c.name, [c.doc_ids[i] for i in keep_docs], [c.docs[i] for i in keep_docs], qids,
                    [c.queries[i] for i in query_idx], {q: c.qrels[q] for q in qids})


def builtin(seed: int, sizes: Sizes) -> dict[str, Collection]:
  """The shipped collections for one seed: `train`, `dev` and the four test settings."""
  rows = _rows()
  rng = np.random.default_rng([seed, 7])
  by_set = collections.defaultdict(list)
  for r in rows:
    by_set[r["set"]].append(r)
  train_pool = [r for r in by_set["wordnet"] if r["topic"] in TRAIN_TOPICS]
  cross_pool = [r for r in by_set["wordnet"] if r["topic"] in CROSS_TOPICS]
  # dev synsets come from a reserved share of the training topics that no seed tests on, so the
  # learning rates chosen on dev (on a tuning seed) never saw a reported test query
  reserved_n = DEV_POOL_FACTOR * sizes.n_dev
  fixed = np.random.default_rng(DEV_POOL_SEED).permutation(len(train_pool))
  reserved, rest = fixed[:reserved_n], fixed[reserved_n:]
  need = sizes.n_train + sizes.n_test
  if need > len(rest):
    raise DataError(f"n_train + n_test = {need} exceeds the {len(rest)} WordNet synsets of the "
                    f"training topics outside the dev pool ({reserved_n} = {DEV_POOL_FACTOR} x n_dev)")
  dv = np.sort(rng.choice(reserved, sizes.n_dev, replace=False))
  perm = rest[rng.permutation(len(rest))]
  tr, te = perm[:sizes.n_train], perm[sizes.n_train:need]
  out = {
      # training pairs: the BM25 hard negatives are mined from the training synsets' docs
      "train": _wordnet_collection("train", train_pool, tr, tr),
      "dev": _wordnet_collection("dev", train_pool, dv,
                                 _with_distractors(rng, len(train_pool), dv, sizes.n_corpus)),
      "in_domain": _wordnet_collection("in_domain", train_pool, te,
                                       _with_distractors(rng, len(train_pool), te, sizes.n_corpus)),
  }
  ct = rng.permutation(len(cross_pool))[:sizes.n_test]
  out["cross_topic"] = _wordnet_collection("cross_topic", cross_pool, ct,
                                           _with_distractors(rng, len(cross_pool), ct, sizes.n_corpus))
  for name in ("manpages", "pydocs"):
    full = grouped(name, by_set[name])
    q = rng.permutation(len(full.queries))
    out[name] = subset(full, np.sort(q[:sizes.n_xdomain] if sizes.n_xdomain else q),
                       sizes.n_xdomain_corpus, rng)
  return out


# ----------------------------------------------------------------------------- BEIR layout


def _jsonl(path: Path):
  if not path.is_file():
    raise DataError(f"{path} not found (a BEIR data set has corpus.jsonl, queries.jsonl and "
                    "qrels/test.tsv)")
  for n, row in jsonl.objects(_utf8(path).splitlines(), str(path)):
    if "_id" not in row:
      raise DataError(f"{path}:{n}: no '_id' field")
    yield n, row


def _utf8(path: Path) -> str:
  try:
    return path.read_text(encoding="utf-8")
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def load_beir(folder: str | Path, split: str = "test") -> Collection:
  """A data set in BEIR's layout. Documents are "title text" (BEIR's sentence-encoder
  convention). An empty query is a DataError (file:line); an empty document is kept and
  counted; a judgement naming an unknown query or document is dropped and counted (BEIR keeps
  such ids, e.g. documents removed from a corpus), as is a query left without a relevant
  document."""
  folder = Path(folder)
  name = folder.name
  doc_ids, docs, seen, empty_docs = [], [], set(), 0
  for n, row in _jsonl(folder / "corpus.jsonl"):
    did = str(row["_id"])
    if did in seen:
      raise DataError(f"{folder / 'corpus.jsonl'}:{n}: duplicate document id {did!r}")
    seen.add(did)
    text = f"{row.get('title') or ''} {row.get('text') or ''}".strip()
    empty_docs += not text
    doc_ids.append(did)
    docs.append(text)
  if not docs:
    raise DataError(f"{folder / 'corpus.jsonl'}: the corpus has no documents")
  query_text = {}
  for n, row in _jsonl(folder / "queries.jsonl"):
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
      raise DataError(f"{folder / 'queries.jsonl'}:{n}: query {row['_id']!r} is empty")
    query_text[str(row["_id"])] = text.strip()
  qrels_path = folder / "qrels" / f"{split}.tsv"
  if not qrels_path.is_file():
    raise DataError(f"{qrels_path} not found")
  qrels = collections.defaultdict(dict)
  unknown_docs, unknown_queries = 0, 0
  with io.StringIO(_utf8(qrels_path), newline="") as f:
    for n, fields in enumerate(csv.reader(f, delimiter="\t"), 1):
      if not fields or (n == 1 and fields[0] == "query-id"):
        continue
      if len(fields) != 3:
        raise DataError(f"{qrels_path}:{n}: expected query-id<TAB>corpus-id<TAB>score")
      qid, did, score = fields
      try:
        score = int(score)
      except ValueError:
        raise DataError(f"{qrels_path}:{n}: the score {score!r} is not an integer") from None
      if qid not in query_text:
        unknown_queries += 1
      elif did not in seen:
        unknown_docs += 1
      elif score > 0:
        qrels[qid][did] = score
  judged = [q for q in query_text if q in qrels]
  dropped = {"empty_documents": empty_docs, "judgements_of_unknown_documents": unknown_docs,
             "judgements_of_unknown_queries": unknown_queries,
             "queries_without_relevant_documents": len(query_text) - len(judged)}
  if unknown_docs or unknown_queries:
    log.warning("%s: dropped %d judgements of unknown documents and %d of unknown queries",
                qrels_path, unknown_docs, unknown_queries)
  if not judged:
    raise DataError(f"{qrels_path}: no query of queries.jsonl has a relevant document in "
                    "corpus.jsonl")
  return Collection(f"beir:{name}", doc_ids, docs, judged, [query_text[q] for q in judged],
                    dict(qrels), dropped)
