"""BM25 (Robertson et al.; Lucene's variant, k1 = 1.5, b = 0.75) with the `bm25s` library: the
lexical baseline and the source of DPR's hard negatives."""
from __future__ import annotations

import logging

import numpy as np


class BM25:
  def __init__(self, docs: list[str]):
    import bm25s
    logging.getLogger("bm25s").setLevel(logging.WARNING)   # bm25s sets DEBUG on import
    self._bm25s = bm25s
    self.n = len(docs)
    self.index = bm25s.BM25()
    self.index.index(self._tokens(docs), show_progress=False)

  def _tokens(self, texts: list[str]):
    return self._bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)

  def search(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores [Q, k], document indices [Q, k]) best first; k is capped at the corpus size. A
    query with no indexed word scores 0 everywhere (its ranking is the corpus order)."""
    k = min(k, self.n)
    idx, scores = self.index.retrieve(self._tokens(queries), k=k, show_progress=False, n_threads=1)
    return np.asarray(scores, np.float32), np.asarray(idx, np.int64)


def hard_negatives(queries: list[str], docs: list[str], positive: np.ndarray, depth: int = 20,
                   seed: int = 0) -> np.ndarray:
  """For query i, the index of the highest-ranked BM25 document over `docs` that is not its
  positive (DPR's hard negative); a random other document when no other document shares a word
  with the query."""
  scores, idx = BM25(docs).search(queries, depth)
  rng = np.random.default_rng(seed)
  out = np.empty(len(queries), np.int64)
  for i, row in enumerate(idx):
    others = row[(row != positive[i]) & (scores[i] > 0)]
    out[i] = others[0] if len(others) else (positive[i] + 1 + rng.integers(len(docs) - 1)) % len(docs)
  return out
