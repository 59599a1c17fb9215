"""`jaxpapers run vpt/pipeline`: VPT's whole pipeline in Craftax-Classic (arXiv 2206.11795):
scripted demonstrations -> a small labelled ("contractor") split -> IDM -> pseudo-labels of the
unlabelled video -> BC policies on IDM labels / the small labelled set / true labels -> evaluation
in the environment against a random policy."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np

from jaxpapers.core.errors import ConfigError
from jaxpapers.core.mesh import make_mesh
from jaxpapers.vpt import env as E
from jaxpapers.vpt.data import Episodes, split
from jaxpapers.vpt.demonstrator import DemoConfig, make_demonstrator
from jaxpapers.vpt.learners import (fit, idm_accuracy, initial_policy_carry, make_policy_act,
                                    pseudo_label)
from jaxpapers.vpt.models import NetConfig

log = logging.getLogger("jaxpapers")
POLICIES = ("bc_idm", "bc_small", "bc_true", "random")


def validate(c: ml_collections.ConfigDict) -> None:
  if c.env not in E.ENVIRONMENTS:
    raise ConfigError(f"--config.env: unknown environment {c.env!r}; known: {', '.join(E.ENVIRONMENTS)}")
  if not 0.0 < c.data.labelled_fraction < 1.0:
    raise ConfigError(f"--config.data.labelled_fraction must be in (0, 1), got {c.data.labelled_fraction}")
  for f in c.idm.scaling:
    if not 0.0 < f < 1.0:
      raise ConfigError(f"--config.idm.scaling: fractions of the labelled set in (0, 1), got {f}")
  if c.data.steps + 1 < max(c.idm.net.window, c.policy.net.window):
    raise ConfigError(f"--config.data.steps={c.data.steps}: episodes shorter than the model windows")
  if not 0.0 <= c.idm.flip <= 1.0:
    raise ConfigError(f"--config.idm.flip is a probability, got {c.idm.flip}")
  if not c.seeds:
    raise ConfigError("--config.seeds is empty")
  for name in ("idm", "policy"):
    n = c[name].net
    if n.window < 2:
      raise ConfigError(f"--config.{name}.net.window must be >= 2, got {n.window}")
    if n.d_model % n.heads:
      raise ConfigError(f"--config.{name}.net.d_model={n.d_model} is not divisible by heads={n.heads}")


def net_config(n: ml_collections.ConfigDict, env: E.Env) -> NetConfig:
  return NetConfig(frame_shape=env.frame_shape, num_actions=env.num_actions, window=n.window,
                   stem_channels=n.stem_channels, channels=tuple(n.channels),
                   blocks_per_stage=n.blocks_per_stage, d_model=n.d_model, heads=n.heads,
                   layers=n.layers, temporal_kernel=n.get("temporal_kernel", 5),
                   tile_features=n.get("tile_features", 16), pooled=n.get("pooled", False),
                   motion=n.get("motion", False))


def demonstrations(c, env: E.Env, episodes: int, key) -> tuple[Episodes, E.Rollout]:
  demo = make_demonstrator(DemoConfig(**c.demonstrator))
  r = E.collect(env, demo, episodes, c.data.steps, key)
  return Episodes.from_rollout(r), r


def success(r: E.Rollout) -> dict:
  """Per-achievement success rate (share of episodes that unlocked it before ending), mean
  return, and `score` = mean number of achievements unlocked per episode."""
  u = r.unlocked
  return {"per_achievement": {n: float(s) for n, s in zip(E.ACHIEVEMENT_NAMES, u.mean(0))},
          "score": float(u.sum(1).mean()), "return": float(r.returns.mean()),
          "episode_length": float(r.alive.sum(0).mean())}


class Evaluator:
  """Runs policies in `episodes` fresh worlds for `steps` steps: one compiled rollout for every
  BC policy (parameters are part of the carry) and one for the random policy."""

  def __init__(self, env: E.Env, template_policy, episodes: int, steps: int):
    self.env, self.n, self.steps = env, episodes, steps
    self.rollout = E.make_rollout(env, make_policy_act(template_policy), episodes, steps)
    self.random = E.make_rollout(env, E.random_act, episodes, steps)

  def __call__(self, policy, key) -> E.Rollout:
    if policy is None:
      rec, _ = self.random(key, None)
    else:
      rec, _ = self.rollout(key, initial_policy_carry(policy, self.n))
    return E.Rollout(**jax.device_get(rec))


def _train_cfg(t: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(t.to_dict())


def run(c: ml_collections.ConfigDict, workdir: str, command: str) -> dict:
  validate(c)
  from jaxpapers.vpt.report import write  # noqa: PLC0415 (matplotlib/imageio only when reporting)
  wd = Path(workdir)
  t_start = time.perf_counter()
  env = E.make_env(c.env)
  mesh = make_mesh(c.mesh.shape, c.mesh.axes)
  timing: dict[str, float] = {}

  # 1. demonstrations: training episodes (split into labelled / unlabelled) and held-out labelled
  t0 = time.perf_counter()
  everything, demo_rollout = demonstrations(c, env, c.data.episodes + c.data.test_episodes,
                                            jax.random.key(c.seed))
  n = c.data.episodes
  episodes, held_out = everything.take(np.arange(n)), everything.take(np.arange(n, len(everything)))
  labelled, unlabelled = split(episodes, c.data.labelled_fraction, c.seed)
  timing["demonstrations"] = time.perf_counter() - t0
  log.info("demonstrations: %d episodes x %d steps (%d labelled, %d unlabelled, %d held out) in %.0f s",
           len(episodes), c.data.steps, len(labelled), len(unlabelled), len(held_out), timing["demonstrations"])

  # 2. IDM on the labelled set; 3. its held-out accuracy and the data-scaling curve
  t0 = time.perf_counter()
  idm_net = net_config(c.idm.net, env)
  idm = fit("idm", idm_net, _train_cfg(c.idm.train), labelled, wd / "idm", mesh, c.seed, c.idm.flip)
  held_pred = pseudo_label(idm.model, held_out.frames)
  idm_eval = idm_accuracy(held_pred, held_out)
  scaling = []
  for f in sorted(c.idm.scaling):
    k = max(1, int(round(f * len(labelled))))
    sub = labelled.take(np.arange(k))
    t = _train_cfg(c.idm.train)
    m = fit("idm", idm_net, t, sub, wd / f"idm_scaling_{k}", mesh, c.seed, c.idm.flip)
    acc = idm_accuracy(pseudo_label(m.model, held_out.frames), held_out)
    scaling.append({"episodes": k, "steps": sub.steps, "train_steps": t.steps, "accuracy_non_noop": acc["accuracy_non_noop"],
                    "accuracy": acc["accuracy"]})
  scaling.append({"episodes": len(labelled), "steps": labelled.steps, "train_steps": c.idm.train.steps,
                  "accuracy_non_noop": idm_eval["accuracy_non_noop"], "accuracy": idm_eval["accuracy"]})
  timing["idm"] = time.perf_counter() - t0
  log.info("IDM: held-out accuracy %.3f (non-noop %.3f)", idm_eval["accuracy"], idm_eval["accuracy_non_noop"])

  # 4. pseudo-labels of the unlabelled video
  t0 = time.perf_counter()
  pseudo = pseudo_label(idm.model, unlabelled.frames)
  pseudo_eval = idm_accuracy(pseudo, unlabelled)
  timing["pseudo_label"] = time.perf_counter() - t0
  log.info("pseudo-labels: %d steps, agreement with the hidden actions %.3f (non-noop %.3f)",
           unlabelled.steps, pseudo_eval["accuracy"], pseudo_eval["accuracy_non_noop"])

  # 5. BC policies and the environment evaluation, per seed
  t0 = time.perf_counter()
  pol_net = net_config(c.policy.net, env)
  datasets = {"bc_idm": Episodes.concat([labelled, unlabelled.relabel(pseudo)]),
              "bc_small": labelled,
              "bc_true": Episodes.concat([labelled, unlabelled])}
  evaluator = None
  per_seed: dict[str, list] = {p: [] for p in POLICIES}
  training: dict[str, list] = {p: [] for p in datasets}
  gif_rollouts = {}
  for seed in c.seeds:
    k_eval = jax.random.fold_in(jax.random.key(c.seed + 1000), seed)
    for name, data in datasets.items():
      pol = fit("policy", pol_net, _train_cfg(c.policy.train), data, wd / f"{name}_seed{seed}", mesh, seed)
      training[name].append({"seconds": pol.seconds, "final_loss": pol.final_loss, "step_time": pol.step_time})
      if evaluator is None:
        evaluator = Evaluator(env, pol.model, c.eval.episodes, c.eval.steps)
      r = evaluator(pol.model, k_eval)
      per_seed[name].append(success(r))
      log.info("seed %d %s: score %.2f, return %.2f", seed, name, per_seed[name][-1]["score"],
               per_seed[name][-1]["return"])
      if seed == c.seeds[0]:
        gif_rollouts[name] = r
    r = evaluator(None, k_eval)
    per_seed["random"].append(success(r))
    if seed == c.seeds[0]:
      gif_rollouts["random"] = r
  timing["bc_and_eval"] = time.perf_counter() - t0

  summary = {}
  for p in POLICIES:
    runs = per_seed[p]
    summary[p] = {
        "score": float(np.mean([r["score"] for r in runs])),
        "score_std": float(np.std([r["score"] for r in runs])),
        "return": float(np.mean([r["return"] for r in runs])),
        "per_achievement": {a: float(np.mean([r["per_achievement"][a] for r in runs]))
                            for a in E.ACHIEVEMENT_NAMES}}
  demo = success(demo_rollout)
  timing["total"] = time.perf_counter() - t_start
  results = {
      "idm_accuracy": idm_eval["accuracy_non_noop"],
      "idm_accuracy_all": idm_eval["accuracy"],
      "idm": idm_eval, "idm_scaling": scaling, "pseudo_labels": pseudo_eval,
      "success": {p: summary[p]["per_achievement"] for p in POLICIES},
      "score": {p: summary[p]["score"] for p in POLICIES},
      "score_std": {p: summary[p]["score_std"] for p in POLICIES},
      "return": {p: summary[p]["return"] for p in POLICIES},
      "per_seed": per_seed,
      "bc_idm_over_bc_true": summary["bc_idm"]["score"] / max(summary["bc_true"]["score"], 1e-9),
      "demonstrator": demo,
      "data": {"episodes": len(episodes), "steps_per_episode": c.data.steps,
               "labelled_episodes": len(labelled), "labelled_steps": labelled.steps,
               "unlabelled_steps": unlabelled.steps, "held_out_steps": held_out.steps},
      "training": {"idm": {"seconds": idm.seconds, "final_loss": idm.final_loss, "step_time": idm.step_time},
                   **training},
      "seeds": list(c.seeds), "timing_seconds": timing,
  }
  write(wd, command, c, results, gif_rollouts)
  return results
