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


def _episode(D, cfg, **fixed):
  """One episode's carry (a builder with fixed thresholds; its distance fields still unknown)."""
  row = jax.tree.map(lambda x: x[0], D.initial_carry(cfg, 1, jax.random.key(0)))
  return {**row, "style": 0, "drink_below": 4, "food_below": 4, "sleep_below": 3, "hide_below": 7, **fixed}


def _shortest(passable, sources, cost):
  """Dijkstra: the cheapest way to the nearest source through passable cells, entering a cell
  costing cost[cell] (sources count 0; -1: unreachable)."""
  import heapq
  h, w = passable.shape
  dist = np.full((h, w), -1)
  heap = [(0, r, c) for r, c in zip(*np.nonzero(sources))]
  while heap:
    d, r, c = heapq.heappop(heap)
    if dist[r, c] >= 0:
      continue
    dist[r, c] = d
    for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0)):
      y, x = r + dr, c + dc
      if 0 <= y < h and 0 <= x < w and passable[y, x] and dist[y, x] < 0:
        heapq.heappush(heap, (d + cost[y, x], y, x))
  return dist


@pytest.mark.parametrize("pickaxe", [0, 1])
def test_distance_fields_are_shortest_paths_digging_only_with_a_pickaxe(pickaxe):
  """After enough sweeps the water field is the cheapest way to water over walkable cells, and
  through stone (two actions a cell: dig, step) once the player holds a pickaxe; the player
  follows it: walks, or faces a stone in the way and digs."""
  from jaxpapers.vpt import demonstrator as D
  env = E.make_env("Craftax-Classic-Pixels-v1")
  _, st = env.env.reset(jax.random.key(0), env.params)
  m = np.full((64, 64), D.GRASS)
  m[:, 30] = D.STONE                        # a stone wall across the map, with one gap far away
  m[60, 30] = D.GRASS
  m[20, 40:43] = D.WATER
  m[10:14, 20] = D.TREE
  st = st.replace(map=jax.numpy.asarray(m, jax.numpy.int32), player_position=jax.numpy.array([20, 27]),
                  player_direction=D.RIGHT, inventory=st.inventory.replace(wood_pickaxe=pickaxe),
                  cows=st.cows.replace(mask=st.cows.mask & False))
  ep = _episode(D, DemoConfig())
  update = jax.jit(D.update_fields)
  for _ in range(60):                       # 240 sweeps: more than the longest path
    ep = update(ep, st)
  walk = ~np.isin(m, [D.WATER, D.STONE, D.TREE]) | ((m == D.STONE) & bool(pickaxe))
  want = _shortest(walk, m == D.WATER, np.where(m == D.STONE, 2, 1))
  got = np.asarray(ep["water_dist"])
  reach = want >= 0
  np.testing.assert_array_equal(got[reach], want[reach])
  assert (got[~reach] >= D.FAR // 2).all()
  # straight through the wall (one stone: 2) to the water 13 cells right, or round by the gap
  assert got[20, 27] == (14 if pickaxe else (60 - 20) + (30 - 27) + (60 - 20) + (40 - 30))
  action, known = jax.jit(D._descend)(ep["water_dist"], st.map, st.player_position, st.player_direction)
  assert bool(known)
  if pickaxe:   # right towards the wall; there, facing its stone: dig, else turn to it
    assert int(action) == D.RIGHT
    at_wall = st.replace(player_position=jax.numpy.array([20, 29]))
    assert int(D._descend(ep["water_dist"], at_wall.map, at_wall.player_position, D.RIGHT)[0]) == D.DO
    assert int(D._descend(ep["water_dist"], at_wall.map, at_wall.player_position, D.UP)[0]) == D.RIGHT
  else:         # round by the gap at row 60: right or down are both one step nearer
    assert int(action) in (D.RIGHT, D.DOWN)


def test_demonstrator_drinks_up_at_the_water_and_hides_when_hurt():
  """Beside water it keeps drinking until full, not only to its threshold, hurt or not; hurt
  (health below the episode's hide_below) with a pocket site anywhere on the map (found by the
  shelter field, beyond the 10-cell search) it walks to it (intent `sleep`) instead of
  collecting; with the field not yet known it does not."""
  from jaxpapers.vpt import demonstrator as D
  env = E.make_env("Craftax-Classic-Pixels-v1")
  _, st = env.env.reset(jax.random.key(0), env.params)
  (r, c) = st.player_position
  cfg = DemoConfig(random_move=0.0, noop=0.0)
  ep = _episode(D, cfg)
  quiet = st.replace(zombies=st.zombies.replace(mask=st.zombies.mask & False),
                     skeletons=st.skeletons.replace(mask=st.skeletons.mask & False),
                     map=jax.numpy.full_like(st.map, D.GRASS).at[r - 8, c].set(D.TREE))
  # a stone hill 14 cells to the right; the player holds a pickaxe
  hill = quiet.map.at[r - 3:r + 4, c + 14:c + 20].set(D.STONE)
  kit = quiet.inventory.replace(wood_pickaxe=1, wood=9, wood_sword=1)
  by_water = quiet.replace(map=hill.at[r, c - 1].set(D.WATER), player_direction=D.LEFT,
                           player_drink=6, player_food=9, player_energy=9, inventory=kit)
  decide = jax.jit(lambda e, s: D.decide(cfg, e, s, jax.random.key(1)))
  known = ep
  for _ in range(10):
    known = jax.jit(D.update_fields)(known, by_water)
  for health in (9, 5):      # hurt, with a pocket known, it still drinks up first
    a, intent, _ = decide(known, by_water.replace(player_health=health))
    assert int(a) == D.DO and D.INTENTS[int(intent)] == "drink"     # 6 >= drink_below 4, not full
  a, intent, _ = decide(known, by_water.replace(player_drink=9, player_health=5))
  assert D.INTENTS[int(intent)] == "sleep" and int(a) == D.RIGHT   # full: off to the pocket
  hurt = quiet.replace(map=hill, player_health=5, player_food=9, player_drink=9, player_energy=9,
                       player_direction=D.UP, inventory=kit)
  a, intent, _ = decide(ep, hurt)
  assert D.INTENTS[int(intent)] != "sleep"                         # no pocket known yet
  for _ in range(10):
    ep = jax.jit(D.update_fields)(ep, hurt)
  a, intent, _ = decide(ep, hurt)
  assert D.INTENTS[int(intent)] == "sleep" and int(a) == D.RIGHT
  a, intent, _ = decide(ep, hurt.replace(player_health=9))
  assert D.INTENTS[int(intent)] != "sleep"


def test_goal_field_is_replanned_when_the_goal_changes():
  """The goal field plans for the last step's goal; when the next goal differs it starts again
  from FAR (an old field would lead to the old blocks), and it is kept while the goal holds."""
  from jaxpapers.vpt import demonstrator as D
  env = E.make_env("Craftax-Classic-Pixels-v1")
  _, st = env.env.reset(jax.random.key(0), env.params)
  st = jax.tree.map(lambda x: x[None], st)
  frame = np.zeros((1, 63, 63, 3), np.uint8)
  act = jax.jit(D.make_demonstrator(DemoConfig(random_move=0.0, noop=0.0)))
  carry = D.initial_carry(DemoConfig(), 1, jax.random.key(0))
  carry = {**carry, "goal": jax.numpy.array([D.TREE]), "goal_dist": jax.numpy.zeros_like(carry["goal_dist"])}
  a, kept = act(carry, frame, st, jax.random.key(1))          # a fresh world: it wants wood
  assert int(kept["goal"][0]) == D.TREE
  assert (np.asarray(kept["goal_dist"]) < D.FAR).mean() > 0.5   # kept (and relaxed once)
  a, fresh = act({**carry, "goal": jax.numpy.array([D.DIAMOND])}, frame, st, jax.random.key(1))
  assert int(fresh["goal"][0]) == D.TREE
  assert (np.asarray(fresh["goal_dist"]) == D.FAR).all()


def test_demonstrator_sleeps_sealed_and_keeps_still_asleep():
  """Tired in a closed pocket (one cell, or the two cells a shelter has) it sleeps; asleep it
  presses nothing (the game ignores keys then); rested it stays in the pocket at night and digs
  out by day; each episode draws its style with the configured odds."""
  from jaxpapers.vpt import demonstrator as D
  env = E.make_env("Craftax-Classic-Pixels-v1")
  _, st = env.env.reset(jax.random.key(0), env.params)
  cfg = DemoConfig(random_move=0.0, noop=0.0)
  episode = _episode(D, cfg)
  act = jax.jit(lambda s: D.act_one(cfg, episode, s, jax.random.key(1)))
  (r, c) = st.player_position
  pocket = st.map.at[r - 1, c].set(D.STONE).at[r + 1, c].set(D.STONE).at[r, c - 1].set(D.STONE)
  pocket = pocket.at[r, c + 1].set(D.STONE)
  sealed = st.replace(map=pocket, player_direction=D.UP, zombies=st.zombies.replace(mask=st.zombies.mask & False))
  assert int(act(sealed.replace(player_energy=1))) == D.SLEEP
  assert int(act(sealed.replace(player_energy=1, is_sleeping=True))) == D.NOOP
  assert int(act(sealed.replace(player_energy=9))) == D.DO            # facing stone: dig out
  assert int(act(sealed.replace(player_energy=9, player_health=7))) == D.NOOP   # healing: stays
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
