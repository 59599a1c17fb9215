"""Ranking metrics with trec_eval's definitions (as `pytrec_eval` computes them; BEIR reports the
same) and the calibration error of the paper's code.

A run is, per query, the ranked document ids (best first); qrels give each query's graded
relevance ({doc id: grade}, grade > 0 relevant). Every query of the qrels counts (a query whose
relevant documents were not retrieved scores 0).
- nDCG@k: sum over the top k of grade / log2(rank + 1), divided by the same sum over the ideal
  ordering of all judged documents (trec_eval's `ndcg_cut`: linear gain).
- Recall@k: relevant documents in the top k / relevant documents.
- MRR@k: 1 / rank of the first relevant document within the top k (0 if none).
- Top-k accuracy: whether any relevant document is in the top k (DPR's metric).
"""
from __future__ import annotations

import numpy as np


def _gains(ranked: list[str], rel: dict[str, int], k: int) -> np.ndarray:
  return np.array([rel.get(d, 0) for d in ranked[:k]], float)


def ndcg(ranked: list[str], rel: dict[str, int], k: int) -> float:
  disc = 1.0 / np.log2(np.arange(2, k + 2))
  g = _gains(ranked, rel, k)
  ideal = np.sort(np.array([v for v in rel.values() if v > 0], float))[::-1][:k]
  idcg = float(ideal @ disc[:len(ideal)])
  return float(g @ disc[:len(g)]) / idcg if idcg > 0 else 0.0


def recall(ranked: list[str], rel: dict[str, int], k: int) -> float:
  n = sum(v > 0 for v in rel.values())
  return float(np.sum(_gains(ranked, rel, k) > 0)) / n if n else 0.0


def mrr(ranked: list[str], rel: dict[str, int], k: int) -> float:
  hits = np.flatnonzero(_gains(ranked, rel, k) > 0)
  return 1.0 / (hits[0] + 1) if len(hits) else 0.0


def top_k_accuracy(ranked: list[str], rel: dict[str, int], k: int) -> float:
  return float(np.any(_gains(ranked, rel, k) > 0))


def per_query(run: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, list[float]]:
  """ndcg10, recall10, recall100, mrr10, top1, top20 of each judged query, in qrels' order."""
  per = {"ndcg10": [], "recall10": [], "recall100": [], "mrr10": [], "top1": [], "top20": []}
  for q, rel in qrels.items():
    ranked = run.get(q, [])
    per["ndcg10"].append(ndcg(ranked, rel, 10))
    per["recall10"].append(recall(ranked, rel, 10))
    per["recall100"].append(recall(ranked, rel, 100))
    per["mrr10"].append(mrr(ranked, rel, 10))
    per["top1"].append(top_k_accuracy(ranked, rel, 1))
    per["top20"].append(top_k_accuracy(ranked, rel, 20))
  return per


def evaluate(run: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
  """Means over the judged queries of `per_query`'s metrics."""
  return {k: float(np.mean(v)) for k, v in per_query(run, qrels).items()}


def ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
  """Expected calibration error: probabilities in `n_bins` uniform bins on [0, 1]; the sum over
  non-empty bins of (bin count / N) * |fraction of positives - mean probability|."""
  probs, labels = np.asarray(probs, float).ravel(), np.asarray(labels, float).ravel()
  if probs.size == 0:
    raise ValueError("ece of no predictions")
  edges = np.linspace(0.0, 1.0, n_bins + 1)
  which = np.searchsorted(edges[1:-1], probs)   # bin b holds (edge_b, edge_b+1], bin 0 also 0
  err = 0.0
  for b in range(n_bins):
    sel = which == b
    if sel.any():
      err += sel.mean() * abs(labels[sel].mean() - probs[sel].mean())
  return float(err)


def retrieval_ece(scores: np.ndarray, ranked: list[list[str]], query_ids: list[str],
                  qrels: dict[str, dict[str, int]], k: int = 5, n_bins: int = 10) -> float:
  """The paper's retrieval calibration (its release, calibration/): for each query, a softmax
  over the scores of its top-`k` documents (no temperature: the model's own scores); every
  (query, document) pair is one prediction whose label is the document's relevance; ECE over all
  pairs with `n_bins` uniform bins. `scores` [Q, >=k] are the top scores in rank order."""
  s = np.asarray(scores, float)[:, :k]
  p = np.exp(s - s.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  labels = np.array([[qrels[q].get(d, 0) > 0 for d in r[:k]] for q, r in zip(query_ids, ranked)])
  return ece(p, labels, n_bins)
