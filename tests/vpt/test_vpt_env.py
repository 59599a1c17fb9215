"""Craftax rollouts: the demonstrator plays, frames/actions/achievements line up, episodes that
end are masked; unknown environment names fail clearly."""
import jax
import numpy as np
import pytest

from jaxpapers.core.errors import ConfigError
from jaxpapers.vpt import env as E
from jaxpapers.vpt.data import Episodes
from jaxpapers.vpt.demonstrator import make_demonstrator


def test_unknown_environment_fails_clearly():
  with pytest.raises(ConfigError, match="unknown environment 'Craftax-Pixels-v9'; known: Craftax-Classic-Pixels-v1"):
    E.make_env("Craftax-Pixels-v9")


def test_demonstrator_rollout_lines_up():
  env = E.make_env("Craftax-Classic-Pixels-v1")
  assert env.frame_shape == (63, 63, 3) and env.num_actions == 17
  r = E.collect(env, make_demonstrator(), num_envs=4, steps=40, key=jax.random.key(0))
  assert r.frames.shape == (41, 4, 63, 63, 3) and r.frames.dtype == np.uint8
  assert r.actions.shape == (40, 4) and r.achievements.shape == (40, 4, 22)
  # achievements only ever switch on, and the demonstrator collects wood within 40 steps
  assert (np.diff(r.achievements.astype(int), axis=0) >= 0).all()
  assert r.unlocked[:, E.ACHIEVEMENT_NAMES.index("collect_wood")].all()
  # a move changes the frame: the view scrolls or the player turns
  moved = np.isin(r.actions, [1, 2, 3, 4]) & r.alive
  changed = (r.frames[1:] != r.frames[:-1]).reshape(40, 4, -1).any(-1)
  assert changed[moved].all()
  ep = Episodes.from_rollout(r)
  assert ep.frames.shape == (4, 41, 63, 63, 3)
  np.testing.assert_array_equal(ep.actions[2], r.actions[:, 2])


def test_bad_pipeline_config_fails_before_work(tmp_path, capsys):
  from jaxpapers.cli import main
  for override, msg in [("--config.env=Minecraft-v1", "unknown environment 'Minecraft-v1'"),
                        ("--config.data.labelled_fraction=1.0", "labelled_fraction"),
                        ("--config.data.steps=2", "shorter than the model windows"),
                        ("--config.seeds=0", "number of replications"),
                        ("--config.eval.episodes=0", "eval.episodes")]:
    code = main(["run", "vpt/pipeline", "--preset", "tiny", "--workdir", str(tmp_path / "w"), override])
    assert code == 2
    assert msg in capsys.readouterr().err



@pytest.mark.parametrize("value", [True, -1])
def test_motion_ablation_is_a_count_of_replications(value):
  import ml_collections
  from jaxpapers.configs.vpt.pipeline import get_config
  from jaxpapers.vpt.experiments import validate
  d = get_config("tiny").to_dict()
  d["idm"]["motion_ablation"] = value      # True: an old config's flag, not a count
  with pytest.raises(ConfigError, match="motion_ablation is the number of replications"):
    validate(ml_collections.ConfigDict(d))
