"""`vpt/pipeline` end to end at the tiny preset: the policy called bc_idm is trained on the IDM's
pseudo-labels (not on the hidden true actions), each replication reports every policy at the step
its validation worlds chose, and results.json carries the keys issue 23 names."""
import json

import jax
import numpy as np
import pytest

from jaxpapers.configs.vpt.pipeline import get_config
from jaxpapers.vpt import experiments as X


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  wd = tmp_path_factory.mktemp("vpt")
  c = get_config("tiny")
  return X.run(c, str(wd), "test"), wd, c


def test_bc_idm_learns_from_pseudo_labels_not_the_hidden_actions(tiny_run):
  results, _, _ = tiny_run
  rep = results["replications"][0]
  trained, pseudo = rep["bc_idm_labels"], rep["pseudo_labels"]
  assert trained["steps"] == results["data"]["unlabelled_steps"]
  # what bc_idm was given agrees with the hidden actions exactly as often as the IDM's labels do;
  # a two-step IDM labels far from perfectly, so true labels in its place would show as 1.0
  assert trained["agreement_with_hidden"] == pytest.approx(pseudo["accuracy"], abs=1e-12)
  assert trained["agreement_with_hidden"] < 0.9


def test_every_policy_reported_at_its_validation_choice(tiny_run):
  results, _, c = tiny_run
  for name in ("bc_idm", "bc_small", "bc_true"):
    p = results["replications"][0]["policies"][name]
    steps = [pt["step"] for pt in p["curve"]]
    assert steps == list(range(c.policy.train.eval_every, c.policy.train.steps + 1,
                               c.policy.train.eval_every))
    best = max(p["curve"], key=lambda pt: pt["validation_score"])     # the earliest best
    assert p["selected_step"] == best["step"]
    assert results["success"][name]["score"]["values"] == [p["test"]["score"]]
  keys = [np.asarray(jax.random.key_data(k)).tobytes() for k in X.world_keys(0).values()]
  assert len(set(keys)) == 3       # demonstration, validation and test worlds differ


def test_results_keys_and_report(tiny_run):
  results, wd, _ = tiny_run
  for k in ("idm_accuracy", "idm_accuracy_all", "idm_accuracy_tile_motion", "success", "paired",
            "score", "selected_steps"):
    assert k in results
  assert set(results["success"]) == {"bc_idm", "bc_small", "bc_true", "random"}
  assert results["paired"]["bc_idm - bc_small"]["values"] == [
      results["replications"][0]["policies"]["bc_idm"]["test"]["score"]
      - results["replications"][0]["policies"]["bc_small"]["test"]["score"]]
  on_disk = json.loads((wd / "results.json").read_text())
  assert on_disk["idm_accuracy"] == results["idm_accuracy"]
  report = (wd / "REPORT.md").read_text()
  assert "learned from pixels" in report and "Paired differences" in report
  assert (wd / "bc_validation_curves.png").is_file() and list(wd.glob("episode_bc_idm_*.gif"))
