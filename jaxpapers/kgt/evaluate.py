"""Filtered ranking on hard answers (BetaE protocol; kgTransformer §5.1): each hard answer is
ranked among the entities that are not answers (every other easy and hard answer removed); MRR
and Hits@k are averaged over a query's hard answers, then over the queries of a type."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from jaxpapers.kgt import queries as Q

HITS = (1, 3, 10)


def filtered_ranks(scores: np.ndarray, hard: Sequence[int], easy: Sequence[int]) -> np.ndarray:
  """Rank of each hard answer (1 = best) against the non-answers; ties with non-answers count
  half (the mean of the optimistic and pessimistic rank), so constant scores are not rewarded."""
  scores = np.asarray(scores, np.float64)
  answers = np.zeros(scores.shape[0], bool)
  answers[list(hard)] = True
  answers[list(easy)] = True
  others = scores[~answers]
  s = scores[list(hard)]
  greater = (others[None, :] > s[:, None]).sum(1)
  equal = (others[None, :] == s[:, None]).sum(1)
  return 1.0 + greater + 0.5 * equal


def query_metrics(ranks: np.ndarray) -> dict[str, float]:
  out = {"mrr": float(np.mean(1.0 / ranks))}
  out.update({f"hits{k}": float(np.mean(ranks <= k)) for k in HITS})
  return out


def evaluate(score_fn: Callable[[str, list], np.ndarray], split: Q.QuerySplit,
             types: Sequence[str] = Q.TYPES, batch: int = 256) -> dict[str, dict[str, float]]:
  """{type: {mrr, hits1, hits3, hits10, queries}} plus "avg_in" / "avg_out" (mean MRR and Hits
  over the in-domain 1p/2p/3p/2i/3i and out-of-domain ip/pi/2u/up types present).
  score_fn(type, queries) -> [n, num_entities] scores, higher is better."""
  out = {}
  for t in types:
    qs = split.queries.get(t, [])
    if not qs:
      continue
    per_query = []
    for i in range(0, len(qs), batch):
      chunk = qs[i:i + batch]
      scores = np.asarray(score_fn(t, chunk))
      for q, s in zip(chunk, scores):
        hard = sorted(split.hard(q))
        per_query.append(query_metrics(filtered_ranks(s, hard, sorted(split.easy.get(q, ())))))
    out[t] = {k: float(np.mean([m[k] for m in per_query])) for k in per_query[0]}
    out[t]["queries"] = len(qs)
  return with_averages(out)


def with_averages(per_type: dict[str, dict]) -> dict[str, dict]:
  """`per_type` plus "avg_in" / "avg_out": the mean MRR and Hits over the in-domain and the
  out-of-domain types present."""
  out = {t: v for t, v in per_type.items() if t not in ("avg_in", "avg_out")}
  for name, group in (("avg_in", Q.IN_DOMAIN), ("avg_out", Q.OUT_OF_DOMAIN)):
    present = [t for t in group if t in out]
    if present:
      out[name] = {k: float(np.mean([out[t][k] for t in present])) for k in ("mrr", "hits1", "hits3", "hits10")}
  return out
