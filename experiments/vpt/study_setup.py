"""Shared setup of the single-learner studies (idm_study.py, bc_study.py): the pipeline's quick
config with JSON overrides, cached demonstrator episodes, and a fit in a throw-away workdir."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import jax
import ml_collections
import numpy as np

from jaxpapers.core.config import load_config_file
from jaxpapers.core.mesh import make_mesh
from jaxpapers.registry import configs_root
from jaxpapers.vpt import env as E
from jaxpapers.vpt.data import Episodes
from jaxpapers.vpt.experiments import demonstrations, net_config
from jaxpapers.vpt.learners import Trained, fit

CONFIG = configs_root() / "vpt" / "pipeline.py"


def quick_config(learner: str, overrides: dict) -> ml_collections.ConfigDict:
  """The quick preset with `overrides` = {"net": {...}, "train": {...}} applied to c[learner]."""
  c = load_config_file(CONFIG, "quick")
  c[learner].net.update(overrides.get("net", {}))
  c[learner].train.update(overrides.get("train", {}))
  return c


def cached_episodes(c: ml_collections.ConfigDict, env: E.Env, n: int, cache: str) -> Episodes:
  """At least `n` demonstrator episodes (key 0), made once and kept in `cache` (.npz)."""
  if not Path(cache).exists() or np.load(cache)["actions"].shape[0] < n:
    eps = demonstrations(c, env, n, jax.random.key(0))[0]
    np.savez(cache, frames=eps.frames, actions=eps.actions, valid=eps.valid)
  z = np.load(cache)
  return Episodes(z["frames"], z["actions"], z["valid"])


def fit_once(kind: str, c: ml_collections.ConfigDict, env: E.Env, episodes: Episodes) -> Trained:
  """fit() of c.idm or c.policy (by `kind`) with seed 0 in a temporary workdir (no resuming; the
  policy without its validation choice of length, and with the pipeline's drop_null)."""
  section = c.idm if kind == "idm" else c.policy
  wd = Path(tempfile.mkdtemp(prefix=f"{kind}_study_"))
  try:
    return fit(kind, net_config(section.net, env), ml_collections.ConfigDict(section.train.to_dict()),
               episodes, wd, make_mesh(c.mesh.shape, c.mesh.axes), 0,
               drop_null=kind == "policy" and c.policy.drop_null)
  finally:
    shutil.rmtree(wd, ignore_errors=True)
