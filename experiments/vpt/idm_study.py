"""IDM alone, for architecture and training studies: 56 demonstrator episodes (key 0) are made
once and cached; the IDM trains on the first `--labelled` and is scored on the last 16 (held-out
non-noop accuracy, per action, confusion of the movement actions). Overrides of the pipeline's
quick-preset IDM config are given as JSON.

    python experiments/vpt/idm_study.py                                             # quick preset's IDM
    python experiments/vpt/idm_study.py '{"net": {"motion": false}}'                # without tile_motion
    python experiments/vpt/idm_study.py '{"train": {"lr": 1e-3, "steps": 300}, "net": {"motion": false}}'
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import jax
import ml_collections
import numpy as np

from jaxpapers.core.config import load_config_file
from jaxpapers.core.mesh import make_mesh
from jaxpapers.vpt import env as E
from jaxpapers.vpt.data import Episodes
from jaxpapers.vpt.experiments import demonstrations, net_config
from jaxpapers.vpt.learners import fit, idm_accuracy, pseudo_label


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("overrides", nargs="?", default="{}", help='JSON: {"net": {...}, "train": {...}, "flip": p}')
  ap.add_argument("--labelled", type=int, default=20, help="training episodes (of the first 40)")
  ap.add_argument("--cache", default="/tmp/jaxpapers_vpt_idm_study.npz", help="demonstrations cache")
  args = ap.parse_args()
  over = json.loads(args.overrides)
  c = load_config_file(Path(__file__).parent / "configs" / "pipeline.py", "quick")
  c.idm.net.update(over.get("net", {}))
  c.idm.train.update(over.get("train", {}))
  c.idm.flip = over.get("flip", c.idm.flip)
  env = E.make_env(c.env)
  if not Path(args.cache).exists():
    eps, _ = demonstrations(c, env, 56, jax.random.key(0))
    np.savez(args.cache, frames=eps.frames, actions=eps.actions, valid=eps.valid)
  z = np.load(args.cache)
  eps = Episodes(z["frames"], z["actions"], z["valid"])
  train, held = eps.take(np.arange(min(args.labelled, 40))), eps.take(np.arange(40, 56))
  wd = Path(tempfile.mkdtemp(prefix="idm_study_"))
  try:
    t = fit("idm", net_config(c.idm.net, env), ml_collections.ConfigDict(c.idm.train.to_dict()), train, wd,
            make_mesh(c.mesh.shape, c.mesh.axes), 0, c.idm.flip)
  finally:
    shutil.rmtree(wd, ignore_errors=True)
  held_acc = idm_accuracy(pseudo_label(t.model, held.frames), held)
  train_acc = idm_accuracy(pseudo_label(t.model, train.frames), train)
  print(json.dumps({"overrides": over, "labelled_episodes": len(train),
                    "held_out_non_noop": round(held_acc["accuracy_non_noop"], 4),
                    "train_non_noop": round(train_acc["accuracy_non_noop"], 4),
                    "final_loss": round(t.final_loss, 4), "step_ms": round(1000 * t.step_time),
                    "per_action": {k: round(v, 3) for k, v in held_acc["per_action"].items()}}))


if __name__ == "__main__":
  main()
