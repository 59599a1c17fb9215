"""BC policy alone, for architecture and training studies: demonstrator episodes (key 0) are made
once and cached; a policy trains on the true actions of the first `--episodes` and is scored on
16 held-out episodes (action accuracy, causal) and in the game (achievements per episode over
`--eval-episodes` fresh worlds, sampled actions, as the pipeline). Overrides of the pipeline's
quick-preset policy config are given as JSON.

    python experiments/vpt/bc_study.py '{"train": {"steps": 600}}'
    python experiments/vpt/bc_study.py '{"train": {"steps": 600}, "net": {"window": 8}}'
"""
from __future__ import annotations

import argparse
import json

import jax
import numpy as np
from study_setup import cached_episodes, fit_once, quick_config

from jaxpapers.core.mesh import make_mesh
from jaxpapers.vpt import env as E
from jaxpapers.vpt.data import Episodes, WindowBatches
from jaxpapers.vpt.experiments import Evaluator, success


def held_out_accuracy(policy, eps: Episodes, window: int, windows: int = 512) -> float:
  """Accuracy of the causal policy's last-position action on random held-out windows."""
  batches = WindowBatches(eps, window, windows, "policy", seed=123)
  b = batches(0)
  logits = jax.jit(lambda f: policy(f)[:, -1])(b["frames"])
  w = b["weights"][:, -1]
  return float(((np.asarray(logits).argmax(-1) == b["labels"][:, -1]) * w).sum() / w.sum())


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("overrides", nargs="?", default="{}", help='JSON: {"net": {...}, "train": {...}}')
  ap.add_argument("--episodes", type=int, default=100, help="training episodes (true labels)")
  ap.add_argument("--eval-episodes", type=int, default=32)
  ap.add_argument("--cache", default="/tmp/jaxpapers_vpt_bc_study.npz", help="demonstrations cache")
  args = ap.parse_args()
  over = json.loads(args.overrides)
  c = quick_config("policy", over)
  env = E.make_env(c.env)
  eps = cached_episodes(c, env, args.episodes + 16, args.cache)
  train, held = eps.take(np.arange(args.episodes)), eps.take(np.arange(len(eps) - 16, len(eps)))
  t = fit_once("policy", c, env, train)
  r = Evaluator(env, t.model, args.eval_episodes, c.eval.steps, make_mesh([-1], ["data"]))(t.model, jax.random.key(1000))
  s = success(r)
  print(json.dumps({"overrides": over, "episodes": args.episodes, "final_loss": round(t.final_loss, 4),
                    "held_out_accuracy": round(held_out_accuracy(t.model, held, c.policy.net.window), 4),
                    "score": s["score"], "step_ms": round(1000 * t.step_time),
                    "per_achievement": {k: round(v, 2) for k, v in s["per_achievement"].items() if v}}))


if __name__ == "__main__":
  main()
