"""Checkpoint choice on validation (kgt.selection, the official `save_best`/`from_best`): per
type the earliest point with the best validation Hits@3, the kept parameters, the test scored
with each type's own choice, a resumed run's points; and the summaries over seeds."""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxpapers.core.errors import WorkdirError
from jaxpapers.kgt import queries as Q
from jaxpapers.kgt.experiments import summarise
from jaxpapers.kgt.selection import FALLBACK, Selection, chosen_params

Q1, Q2 = (0, (0,)), (0, (0, 1))      # a 1p and a 2p query; entity 0 is the (hard) answer


class Tiny(nnx.Module):
  def __init__(self):
    self.w = nnx.Param(jnp.zeros(2))


class Scorer:
  """Entity 0 scores w[0] (1p) or w[1] (2p) against the others' 0.5, 0.4, 0.3: a weight of 1
  ranks the answer first, 0 last."""

  def __init__(self):
    self.w = None
    self.calls = 0

  def use(self, model):
    self.w = np.asarray(model.w[...])

  def scores(self, qtype, queries):
    self.calls += 1
    return np.array([[self.w[0 if qtype == "1p" else 1], 0.5, 0.4, 0.3]] * len(queries))


def _split():
  return Q.QuerySplit({"1p": [Q1], "2p": [Q2]}, {Q1: frozenset({0}), Q2: frozenset({0})}, {})


def test_each_type_gets_its_earliest_best_point(tmp_path):
  m, scorer = Tiny(), Scorer()
  sel = Selection(tmp_path, _split(), scorer)
  for step, w in ((1, (1.0, 0.0)), (2, (0.0, 1.0)), (3, (1.0, 1.0))):
    m.w[...] = jnp.array(w)
    out = sel(m, step)
  assert out == {"valid_hits3_avg_in": 1.0}                   # step 3: both answers first
  assert sel.chosen() == {"1p": 1, "2p": 2, FALLBACK: 3}       # ties go to the earlier point
  # with the last point's weights swapped, a single final checkpoint would rank one answer last
  m.w[...] = jnp.array([1.0, 0.0])
  sel(m, 4)
  assert sel.chosen() == {"1p": 1, "2p": 2, FALLBACK: 3}
  # a resumed run reads the points it has (every point's parameters are kept until the test)
  again = Selection(tmp_path, _split(), Scorer())
  assert again.chosen() == sel.chosen() and sorted(again.curve) == [1, 2, 3, 4]
  assert sorted(f.name for f in tmp_path.glob("step_*.npz")) == [f"step_{s}.npz" for s in (1, 2, 3, 4)]
  summary = again.summary()
  assert summary["chosen"]["2p"] == 2 and [p["step"] for p in summary["curve"]] == [1, 2, 3, 4]
  assert again.valid_at_choice()["avg_in"]["hits3"] == 1.0
  # the test loads each type's choice; a type without validation queries (3p) gets the point
  # best on the validation types together; then only the chosen points' files stay
  Q3 = (0, (0, 1, 1))
  test_split = Q.QuerySplit({"1p": [Q1], "2p": [Q2], "3p": [Q3]},
                            {Q1: frozenset({0}), Q2: frozenset({0}), Q3: frozenset({0})}, {})
  m.w[...] = jnp.zeros(2)
  test = again.test(m, test_split)
  assert test["1p"]["mrr"] == test["2p"]["mrr"] == test["3p"]["mrr"] == 1.0 and test["avg_in"]["mrr"] == 1.0
  assert sorted(f.name for f in tmp_path.glob("step_*.npz")) == ["step_1.npz", "step_2.npz", "step_3.npz"]
  # what `jaxpapers explain` loads: the type's choice, else the fallback
  assert chosen_params(tmp_path, m, "2p", "hits3") == 2 and list(np.asarray(m.w[...])) == [0.0, 1.0]
  assert chosen_params(tmp_path, m, "ip", "hits3") == 3
  (tmp_path / "step_2.npz").unlink()
  with pytest.raises(WorkdirError, match="step_2.npz"):
    again.test(m, _split())


def test_points_of_another_config_are_refused(tmp_path):
  m = Tiny()
  Selection(tmp_path, _split(), Scorer(), fingerprint={"finetune": {"eval_every": 5}})(m, 1)
  Selection(tmp_path, _split(), Scorer(), fingerprint={"finetune": {"eval_every": 5}})     # same: resumes
  for other in ({"fingerprint": {"finetune": {"eval_every": 7}}}, {"metric": "mrr"}):
    kw = {"fingerprint": {"finetune": {"eval_every": 5}}} | other
    with pytest.raises(WorkdirError, match="another config"):
      Selection(tmp_path, _split(), Scorer(), **kw)


def test_selection_refuses_an_unknown_metric_and_no_validation_queries(tmp_path):
  with pytest.raises(ValueError, match="metric"):
    Selection(tmp_path, _split(), Scorer(), metric="auc")
  with pytest.raises(ValueError, match="no validation queries"):
    Selection(tmp_path, _split(), Scorer(), types=("3p",))


def test_summaries_over_seeds_pair_the_models_seed_by_seed():
  def det(in_, out):
    return {"test": {"avg_in": {"mrr": in_}, "avg_out": {"mrr": out}, "1p": {"mrr": in_}}}
  seeds = [{"kgtransformer": det(0.5, 0.3), "betae": det(0.4, 0.3)},
           {"kgtransformer": det(0.6, 0.2), "betae": det(0.4, 0.25)},
           {"kgtransformer": det(0.7, 0.4), "betae": det(0.7, 0.3)}]
  table, spread, paired = summarise(seeds, ["kgtransformer", "betae"])
  assert table["kgtransformer"]["avg_in"] == pytest.approx(0.6)
  assert spread["kgtransformer"]["avg_in"]["std"] == pytest.approx(0.1)            # ddof 1
  d = paired["kgtransformer - betae"]["avg_in"]
  assert d["values"] == pytest.approx([0.1, 0.2, 0.0]) and d["mean"] == pytest.approx(0.1)
  sd = np.std([0.1, 0.2, 0.0], ddof=1)
  assert d["ci95"] == pytest.approx([0.1 - 4.303 * sd / np.sqrt(3), 0.1 + 4.303 * sd / np.sqrt(3)])
  assert paired["kgtransformer - betae"]["avg_out"]["values"] == pytest.approx([0.0, -0.05, 0.1])
