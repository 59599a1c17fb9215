"""The downstream metrics, numpy. Ranking metrics with one held-out target per example, as
SASRec / BERT4Rec's leave-one-out protocol, ranked here against every video (no sampled
negatives); a tie counts against the target (its rank is the number of items scoring >= it,
minus one)."""
from __future__ import annotations

import numpy as np
import scipy.stats


def target_rank(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
  """[N] 0-based rank of target[n] among scores[n] (ties ranked ahead of the target)."""
  t = np.take_along_axis(scores, target[:, None], 1)
  return (scores >= t).sum(1) - 1


def hit_rate(rank: np.ndarray, k: int) -> float:
  return float(np.mean(rank < k))


def ndcg(rank: np.ndarray, k: int) -> float:
  """One relevant item: 1 / log2(rank + 2) when it is in the top k, else 0 (ideal DCG = 1)."""
  return float(np.mean(np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)))


def auc(y: np.ndarray, score: np.ndarray) -> float:
  """Area under the ROC curve = P(score of a random positive > a random negative), ties 1/2
  (Mann-Whitney U with average ranks). NaN when one class is absent."""
  y = np.asarray(y).astype(bool)
  n_pos, n_neg = y.sum(), (~y).sum()
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  r = scipy.stats.rankdata(score)        # average ranks over ties
  return float((r[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def f1(y: np.ndarray, pred: np.ndarray) -> float:
  y, pred = np.asarray(y).astype(bool), np.asarray(pred).astype(bool)
  tp = (y & pred).sum()
  return float(2 * tp / max(y.sum() + pred.sum(), 1))


def best_f1_threshold(y: np.ndarray, score: np.ndarray) -> float:
  """The threshold t (predict positive when score >= t) maximising F1 on (y, score): chosen on
  validation data, applied to test."""
  y = np.asarray(y).astype(bool)
  order = np.argsort(-np.asarray(score), kind="stable")
  s, tp = np.asarray(score)[order], np.cumsum(y[order])
  last = np.append(s[1:] != s[:-1], True)          # cut only after the last of tied scores
  k = np.arange(1, len(s) + 1)
  f = np.where(last, 2 * tp / (y.sum() + k), -1.0)
  return float(s[int(np.argmax(f))])


def mae(y: np.ndarray, pred: np.ndarray) -> float:
  return float(np.mean(np.abs(np.asarray(y) - np.asarray(pred))))
