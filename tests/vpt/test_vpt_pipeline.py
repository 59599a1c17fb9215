"""`vpt/pipeline` end to end at the tiny preset: the policy called bc_idm is trained on the IDM's
pseudo-labels (not on the hidden true actions), each replication reports every policy at the step
its validation worlds chose, and results.json carries the keys issue 23 names."""
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxpapers.configs.vpt.pipeline import get_config
from jaxpapers.vpt import experiments as X


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """The tiny pipeline, with what each policy's training was handed recorded (by workdir name)."""
  wd = tmp_path_factory.mktemp("vpt")
  c = get_config("tiny")
  given = {}
  real_fit = X.fit

  def recording_fit(kind, net, train_cfg, episodes, workdir, *a, **k):
    given[Path(workdir).name] = episodes
    return real_fit(kind, net, train_cfg, episodes, workdir, *a, **k)

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(X, "fit", recording_fit)
    # one device: each of the suite's 8 fake devices would play every evaluation rollout (they are
    # replicated on the mesh) on 2 cores; sharded training is tested in test_vpt_models.py
    real_mesh = X.make_mesh
    mp.setattr(X, "make_mesh", lambda shape, axes: real_mesh(shape, axes, devices=jax.devices()[:1]))
    results = X.run(c, str(wd), "test")
  return results, wd, c, given


def test_bc_idm_learns_from_pseudo_labels_not_the_hidden_actions(tiny_run):
  """What bc_idm's training received: the labelled episodes with their actions, then the
  unlabelled ones with labels that agree with the hidden actions (bc_true's) exactly as often as
  the IDM's pseudo-labels do; a two-step IDM labels far from perfectly, so true labels in their
  place (or bc_true's data under bc_idm's name) fail this."""
  results, _, _, given = tiny_run
  rep = results["replications"][0]
  idm_data, true_data, small = given["bc_idm"], given["bc_true"], given["bc_small"]
  k = len(small)
  np.testing.assert_array_equal(idm_data.actions[:k], small.actions)      # the labelled part
  np.testing.assert_array_equal(idm_data.frames, true_data.frames)         # the same video
  v = true_data.valid[k:]
  agreement = float((idm_data.actions[k:] == true_data.actions[k:])[v].mean())
  assert agreement == pytest.approx(rep["pseudo_labels"]["accuracy"], abs=1e-12)
  assert agreement == pytest.approx(rep["bc_idm_labels"]["agreement_with_hidden"], abs=1e-12)
  assert agreement < 0.9


def test_every_policy_reported_at_its_validation_choice(tiny_run):
  results, _, c, _ = tiny_run
  for name in ("bc_idm", "bc_small", "bc_true"):
    p = results["replications"][0]["policies"][name]
    steps = [pt["step"] for pt in p["curve"]]
    assert steps == list(range(c.policy.train.eval_every, c.policy.train.steps + 1,
                               c.policy.train.eval_every))
    best = max(p["curve"], key=lambda pt: pt["validation_score"])     # the earliest best
    assert p["selected_step"] == best["step"]
    assert results["success"][name]["score"]["values"] == [p["test"]["score"]]
  keys = [np.asarray(jax.random.key_data(k)).tobytes() for k in X.world_keys(0).values()]
  model_keys = [np.asarray(jax.random.key_data(jax.random.fold_in(jax.random.key(0), i))).tobytes()
                for i in range(8)]     # what nnx.Rngs(params=0) draws for the learners
  assert len(set(keys)) == 5 and not set(keys) & set(model_keys)   # worlds apart from each other
                                                                   # and from the models' keys


def test_summaries_over_replications():
  """Sample std (ddof 1), the standard error and the 95% t-interval (n = 3: t = 4.303) of the
  paired differences; the "suffices" claim as bc_idm - 0.8 bc_true per replication."""
  def rep(idm, small, true, rnd):
    pol = lambda s: {"test": {"score": s, "return": s, "per_achievement": dict.fromkeys(
        X.E.ACHIEVEMENT_NAMES, 0.0)}, "selected_step": 1}
    return {"policies": {"bc_idm": pol(idm), "bc_small": pol(small), "bc_true": pol(true),
                         "random": pol(rnd)},
            "idm": {"accuracy_non_noop": 0.9, "accuracy": 0.8}, "idm_tile_motion": None,
            "pseudo_labels": {"accuracy": 0.8}, "identifiability": None}
  s = X.summarise([rep(5.0, 4.0, 5.0, 2.0), rep(6.0, 4.5, 5.5, 2.0), rep(5.5, 5.5, 6.0, 2.5)])
  d = s["paired"]["bc_idm - bc_small"]
  assert d["values"] == [1.0, 1.5, 0.0] and d["mean"] == pytest.approx(5 / 6)
  sd = np.std([1.0, 1.5, 0.0], ddof=1)
  assert d["std"] == pytest.approx(sd) and d["se"] == pytest.approx(sd / np.sqrt(3))
  assert d["ci95"] == pytest.approx([5 / 6 - 4.303 * sd / np.sqrt(3), 5 / 6 + 4.303 * sd / np.sqrt(3)])
  assert s["bc_idm_minus_0.8_bc_true"]["values"] == pytest.approx([1.0, 1.6, 0.7])
  assert s["success"]["bc_idm"]["score"]["std"] == pytest.approx(0.5)


def test_results_keys_and_report(tiny_run):
  results, wd, c, _ = tiny_run
  for k in ("idm_accuracy", "idm_accuracy_all", "idm_accuracy_tile_motion", "identifiability_ceiling",
            "success", "paired", "score", "selected_steps", "bc_idm_minus_0.8_bc_true"):
    assert k in results
  assert set(results["success"]) == {"bc_idm", "bc_small", "bc_true", "random"}
  assert results["paired"]["bc_idm - bc_small"]["values"] == [
      results["replications"][0]["policies"]["bc_idm"]["test"]["score"]
      - results["replications"][0]["policies"]["bc_small"]["test"]["score"]]
  on_disk = json.loads((wd / "results.json").read_text())
  assert on_disk["idm_accuracy"] == results["idm_accuracy"]
  report = (wd / "REPORT.md").read_text()
  assert "learned from pixels" in report and "Paired differences" in report
  demo = results["demonstrator"]         # the demonstrations' styles and action distribution
  assert sum(demo["styles"].values()) == results["data"]["episodes"] + 2      # + 2 held out
  assert sum(demo["actions"].values()) == pytest.approx(1.0)
  assert "Episodes per style" in report
  # RL fine-tuning from the BC(IDM) prior and from scratch, at the same environment steps
  rl = results["rl"]
  assert rl["env_steps"] == c.rl.iterations * c.rl.envs * c.rl.steps
  for name in ("rl_from_prior", "rl_from_scratch"):
    p = results["replications"][0]["policies"][name]
    assert results[name] == p["test"]["score"] and p["env_steps"] == rl["env_steps"]
    assert [pt["env_steps"] for pt in p["curve"]] == [rl["env_steps"]]
    assert all(np.isfinite(p["curve"][0][k]) for k in ("score", "policy", "value", "entropy"))
  # PPO moved the fine-tuned policy away from its prior (the first update starts at KL 0); RL
  # from scratch has no prior, so no KL
  prior_curve = results["replications"][0]["policies"]["rl_from_prior"]["curve"][0]
  assert prior_curve["kl_to_prior"] > 0
  assert abs(prior_curve["kl_to_prior_first_update"]) < 1e-6    # it started at BC(IDM)'s parameters
  assert "kl_to_prior" not in results["replications"][0]["policies"]["rl_from_scratch"]["curve"][0]
  assert (wd / "seed0" / "bc_idm" / "chosen.npz").is_file() and "RL from the BC(IDM) prior" in report
  assert (wd / "bc_validation_curves.png").is_file() and list(wd.glob("episode_bc_idm_*.gif"))
