"""Craftax rollouts: the demonstrator plays, frames/actions/achievements line up, episodes that
end are masked; unknown environment names fail clearly."""
import jax
import numpy as np
import pytest

from jaxpapers.core.errors import ConfigError
from jaxpapers.vpt import env as E
from jaxpapers.vpt.data import Episodes
from jaxpapers.vpt.demonstrator import DemoConfig, initial_carry, make_demonstrator


def test_unknown_environment_fails_clearly():
  with pytest.raises(ConfigError, match="unknown environment 'Craftax-Pixels-v9'; known: Craftax-Classic-Pixels-v1"):
    E.make_env("Craftax-Pixels-v9")


def test_demonstrator_rollout_lines_up():
  env = E.make_env("Craftax-Classic-Pixels-v1")
  assert env.frame_shape == (63, 63, 3) and env.num_actions == 17
  r = E.collect(env, make_demonstrator(), num_envs=4, steps=40, key=jax.random.key(0),
                carry0=initial_carry(DemoConfig(), 4, jax.random.key(1)))
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


def test_policy_memory_must_leave_targets_after_its_burn_in():
  from jaxpapers.configs.vpt.pipeline import get_config
  from jaxpapers.vpt.experiments import validate
  c = get_config("quick")
  c.policy.net.memory = 9                  # burn-in 2 x 8 = 16 = the whole 16-frame window
  with pytest.raises(ConfigError, match=r"longer than the burn-in layers x \(memory - 1\) = 16"):
    validate(c)


def test_demonstrator_sleeps_sealed_and_keeps_still_asleep():
  """Tired in a closed pocket (one cell, or the two cells a shelter has) it sleeps; asleep it
  presses nothing (the game ignores keys then); rested it stays in the pocket at night and digs
  out by day; each episode draws its style with the configured odds."""
  from jaxpapers.vpt import demonstrator as D
  env = E.make_env("Craftax-Classic-Pixels-v1")
  _, st = env.env.reset(jax.random.key(0), env.params)
  cfg = DemoConfig(random_move=0.0, noop=0.0)
  episode = {"style": 0, "drink_below": 4, "food_below": 4, "sleep_below": 3}
  act = jax.jit(lambda s: D.act_one(cfg, episode, s, jax.random.key(1)))
  (r, c) = st.player_position
  pocket = st.map.at[r - 1, c].set(D.STONE).at[r + 1, c].set(D.STONE).at[r, c - 1].set(D.STONE)
  pocket = pocket.at[r, c + 1].set(D.STONE)
  sealed = st.replace(map=pocket, player_direction=D.UP, zombies=st.zombies.replace(mask=st.zombies.mask & False))
  assert int(act(sealed.replace(player_energy=1))) == D.SLEEP
  assert int(act(sealed.replace(player_energy=1, is_sleeping=True))) == D.NOOP
  assert int(act(sealed.replace(player_energy=9))) == D.DO            # facing stone: dig out
  # a two-cell pocket (the player and the cell to its left, everything around them stone) is
  # sealed too: tired, it sleeps there; at night, rested, it stays
  stone = st.map.at[r - 2:r + 3, c - 3:c + 3].set(D.STONE)
  two = stone.at[r, c].set(D.PATH).at[r, c - 1].set(D.PATH)
  pocket2 = sealed.replace(map=two, player_direction=D.RIGHT)
  assert int(act(pocket2.replace(player_energy=1))) == D.SLEEP
  assert int(act(pocket2.replace(player_energy=9, light_level=0.1))) == D.NOOP
  assert int(act(pocket2.replace(player_energy=9, light_level=1.0))) == D.DO   # morning: dig out
  styles = D.initial_carry(DemoConfig(styles=(0.5, 0.25, 0.25)), 4000, jax.random.key(2))["style"]
  np.testing.assert_allclose(np.bincount(np.asarray(styles), minlength=3) / 4000, [0.5, 0.25, 0.25], atol=0.03)


@pytest.mark.parametrize("setting", [{"epochs": 0}, {"minibatch_envs": 3}, {"gamm": 0.9}])
def test_bad_rl_settings_fail_clearly(setting):
  import ml_collections
  from jaxpapers.configs.vpt.pipeline import get_config
  from jaxpapers.vpt.experiments import validate
  d = get_config("quick").to_dict()
  d["rl"].update(setting)
  with pytest.raises(ConfigError, match="--config.rl"):
    validate(ml_collections.ConfigDict(d))
