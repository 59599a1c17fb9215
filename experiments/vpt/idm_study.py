"""IDM alone, for architecture and training studies: 56 demonstrator episodes (key 0) are made
once and cached; the IDM trains on the first `--labelled` and is scored on the last 16 (held-out
non-noop accuracy, per action, confusion of the movement actions). Overrides of the pipeline's
quick-preset IDM config are given as JSON.

    python experiments/vpt/idm_study.py                                             # quick preset's IDM (pixels)
    python experiments/vpt/idm_study.py '{"net": {"motion": true}}'                 # with tile_motion
    python experiments/vpt/idm_study.py '{"train": {"lr": 1e-3, "steps": 300}}'
"""
from __future__ import annotations

import argparse
import json

import numpy as np
from study_setup import cached_episodes, fit_once, quick_config

from jaxpapers.vpt import env as E
from jaxpapers.vpt.learners import idm_accuracy, pseudo_label


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("overrides", nargs="?", default="{}", help='JSON: {"net": {...}, "train": {...}}')
  ap.add_argument("--labelled", type=int, default=20, help="training episodes (of the first 40)")
  ap.add_argument("--cache", default="/tmp/jaxpapers_vpt_idm_study.npz", help="demonstrations cache")
  args = ap.parse_args()
  over = json.loads(args.overrides)
  c = quick_config("idm", over)
  env = E.make_env(c.env)
  eps = cached_episodes(c, env, 56, args.cache)
  train, held = eps.take(np.arange(min(args.labelled, 40))), eps.take(np.arange(40, 56))
  t = fit_once("idm", c, env, train)
  held_acc = idm_accuracy(pseudo_label(t.model, held.frames), held)
  train_acc = idm_accuracy(pseudo_label(t.model, train.frames), train)
  print(json.dumps({"overrides": over, "labelled_episodes": len(train),
                    "held_out_non_noop": round(held_acc["accuracy_non_noop"], 4),
                    "train_non_noop": round(train_acc["accuracy_non_noop"], 4),
                    "final_loss": round(t.final_loss, 4), "step_ms": round(1000 * t.step_time),
                    "per_action": {k: round(v, 3) for k, v in held_acc["per_action"].items()}}))


if __name__ == "__main__":
  main()
