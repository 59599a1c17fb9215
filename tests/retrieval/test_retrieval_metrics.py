"""Ranking metrics (trec_eval definitions) on hand cases and against pytrec_eval; the paper's
calibration error on hand cases."""
import numpy as np
import pytest

from jaxpapers.retrieval import metrics


def test_metrics_on_hand_cases():
  rel = {"a": 1, "b": 2}
  ranked = ["x", "b", "y", "a"]
  # DCG = 2/log2(3) + 1/log2(5); ideal = 2/log2(2) + 1/log2(3)
  want = (2 / np.log2(3) + 1 / np.log2(5)) / (2 + 1 / np.log2(3))
  assert metrics.ndcg(ranked, rel, 10) == pytest.approx(want, rel=1e-12)
  assert metrics.ndcg(ranked, rel, 2) == pytest.approx((2 / np.log2(3)) / (2 + 1 / np.log2(3)))
  assert metrics.recall(ranked, rel, 2) == 0.5 and metrics.recall(ranked, rel, 4) == 1.0
  assert metrics.mrr(ranked, rel, 10) == 0.5 and metrics.mrr(ranked, rel, 1) == 0.0
  assert metrics.top_k_accuracy(ranked, rel, 1) == 0.0 and metrics.top_k_accuracy(ranked, rel, 2) == 1.0
  # a judged query with nothing retrieved counts as 0; an unjudged run entry is ignored
  out = metrics.evaluate({"q1": ranked, "q9": ["a"]}, {"q1": rel, "q2": {"z": 1}})
  assert out["mrr10"] == pytest.approx(0.25) and out["recall100"] == pytest.approx(0.5)


def test_metrics_match_pytrec_eval_on_random_graded_runs():
  pytrec_eval = pytest.importorskip("pytrec_eval")
  rng = np.random.default_rng(0)
  docs = [f"d{i}" for i in range(300)]
  qrels, run = {}, {}
  for q in range(40):
    judged = rng.choice(300, rng.integers(1, 6), replace=False)
    qrels[f"q{q}"] = {docs[j]: int(rng.integers(1, 4)) for j in judged}
    scores = rng.permutation(300).astype(float)           # distinct scores: no tie-breaking
    run[f"q{q}"] = {docs[j]: scores[j] for j in range(300) if scores[j] >= 150}
  ours = metrics.evaluate({q: sorted(r, key=r.get, reverse=True) for q, r in run.items()}, qrels)
  ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10", "recall.100"})
  theirs = ev.evaluate(run)
  for key, name in (("ndcg10", "ndcg_cut_10"), ("recall10", "recall_10"), ("recall100", "recall_100")):
    assert ours[key] == pytest.approx(np.mean([theirs[q][name] for q in qrels]), abs=1e-12), key


def test_ece_hand_case_and_bin_edges():
  # bins: 0.05 -> [0, .1], 0.15 -> (.1, .2], 0.95 x2 -> (.9, 1]
  probs, labels = [0.05, 0.15, 0.95, 0.95], [0, 1, 1, 0]
  assert metrics.ece(probs, labels) == pytest.approx(0.25 * 0.05 + 0.25 * 0.85 + 0.5 * 0.45)
  # 0.1 falls in the first bin (upper edges inclusive, as numpy.searchsorted on the inner edges)
  assert metrics.ece([0.1, 0.05], [1, 1]) == pytest.approx(1 - 0.075)
  assert metrics.ece([1.0, 1.0], [1, 1]) == 0.0
  with pytest.raises(ValueError):
    metrics.ece([], [])


def test_retrieval_ece_is_the_softmax_of_the_top_k_scores():
  scores = np.array([[2.0, 1.0, 0.0], [5.0, 5.0, 5.0]])
  ranked = [["a", "b", "c"], ["d", "e", "f"]]
  qrels = {"q1": {"a": 1}, "q2": {"f": 1}}
  p1 = np.exp([2.0, 1.0]) / np.exp([2.0, 1.0]).sum()          # k = 2: the top two only
  probs = np.concatenate([p1, [0.5, 0.5]])
  want = metrics.ece(probs, [1, 0, 0, 0])
  assert metrics.retrieval_ece(scores, ranked, ["q1", "q2"], qrels, k=2) == pytest.approx(want)
