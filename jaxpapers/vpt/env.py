"""Craftax-Classic (Matthews et al. 2024, Crafter in JAX) as VPT's environment: a name check, the
action and achievement names, and a jitted, vmapped rollout of any acting function.

Episodes are run without Craftax's auto-reset (which generates a new world at every step and is
~15x slower under vmap): every rollout starts from fresh worlds, and steps after an episode ends
are masked (`alive`), never mixed into the next episode."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxpapers.core.errors import ConfigError

ENVIRONMENTS = ("Craftax-Classic-Pixels-v1",)
ACTION_NAMES = ("noop", "left", "right", "up", "down", "do", "sleep", "place_stone", "place_table",
                "place_furnace", "place_plant", "make_wood_pickaxe", "make_stone_pickaxe",
                "make_iron_pickaxe", "make_wood_sword", "make_stone_sword", "make_iron_sword")
ACHIEVEMENT_NAMES = ("collect_wood", "place_table", "eat_cow", "collect_sapling", "collect_drink",
                     "make_wood_pickaxe", "make_wood_sword", "place_plant", "defeat_zombie",
                     "collect_stone", "place_stone", "eat_plant", "defeat_skeleton",
                     "make_stone_pickaxe", "make_stone_sword", "wake_up", "place_furnace",
                     "collect_coal", "collect_iron", "collect_diamond", "make_iron_pickaxe",
                     "make_iron_sword")
NOOP = 0


@dataclasses.dataclass(frozen=True)
class Env:
  name: str
  env: Any
  params: Any

  @property
  def frame_shape(self) -> tuple[int, int, int]:
    return tuple(self.env.observation_space(self.params).shape)

  @property
  def num_actions(self) -> int:
    return self.env.action_space(self.params).n


def make_env(name: str) -> Env:
  """The named Craftax environment without auto-reset; one clear error for an unknown name."""
  if name not in ENVIRONMENTS:
    raise ConfigError(f"unknown environment {name!r}; known: {', '.join(ENVIRONMENTS)}")
  try:
    from craftax.craftax_env import make_craftax_env_from_name
  except ImportError as e:       # pragma: no cover - depends on the install
    raise ConfigError("VPT needs Craftax: pip install 'jaxpapers[vpt]'") from e
  env = make_craftax_env_from_name(name, auto_reset=False)
  out = Env(name, env, env.default_params)
  if out.num_actions != len(ACTION_NAMES):
    raise ConfigError(f"{name} has {out.num_actions} actions, expected {len(ACTION_NAMES)}")
  return out


def to_uint8(obs: jax.Array) -> jax.Array:
  """Craftax pixel observations are RGB/255 in [0, 1]; frames are stored as uint8."""
  return jnp.round(obs * 255.0).astype(jnp.uint8)


# act(carry, frame [N,H,W,3] uint8, env_state, key) -> (actions [N] int32, carry)
ActFn = Callable[[Any, jax.Array, Any, jax.Array], tuple[jax.Array, Any]]


@dataclasses.dataclass
class Rollout:
  """Time-major arrays of N parallel episodes of `steps` steps. frames[t] is what the agent saw
  before actions[t]; frames has steps+1 entries (the last is the frame after the last action).
  alive[t]: the episode had not ended before step t. achievements[t]: unlocked after step t."""
  frames: np.ndarray          # [T+1, N, H, W, 3] uint8
  actions: np.ndarray         # [T, N] int32
  alive: np.ndarray           # [T, N] bool
  rewards: np.ndarray         # [T, N] float32 (0 once the episode has ended)
  achievements: np.ndarray    # [T, N, 22] bool

  @property
  def returns(self) -> np.ndarray:
    return self.rewards.sum(0)

  @property
  def unlocked(self) -> np.ndarray:
    """[N, 22]: achievements unlocked before the episode ended (or the rollout stopped)."""
    return self.achievements[-1]


def make_rollout(env: Env, act: ActFn, num_envs: int, steps: int, keep_frames: bool = True):
  """A jitted function (key, carry0) -> (Rollout arrays, final carry) running `act` in `num_envs`
  fresh worlds for `steps` steps under lax.scan."""
  e, p = env.env, env.params

  def run(key, carry0):
    k_reset, k_run = jax.random.split(key)
    obs, st = jax.vmap(e.reset, (0, None))(jax.random.split(k_reset, num_envs), p)

    def body(c, k):
      st, frame, carry, done, ach = c
      k_act, k_env = jax.random.split(k)
      a, carry = act(carry, frame, st, k_act)
      a = a.astype(jnp.int32)
      obs, st2, r, d, _ = jax.vmap(e.step, (0, 0, 0, None))(jax.random.split(k_env, num_envs), st, a, p)
      ach2 = jnp.where(done[:, None], ach, st2.achievements)      # frozen once the episode ended
      rec = dict(actions=a, alive=~done, rewards=jnp.where(done, 0.0, r), achievements=ach2)
      if keep_frames:
        rec["frames"] = frame
      return (st2, to_uint8(obs), carry, done | d, ach2), rec

    init = (st, to_uint8(obs), carry0, jnp.zeros(num_envs, bool), st.achievements)
    (st, frame, carry, _, _), rec = jax.lax.scan(body, init, jax.random.split(k_run, steps))
    if keep_frames:
      rec["frames"] = jnp.concatenate([rec["frames"], frame[None]], axis=0)
    return rec, carry

  return jax.jit(run)


def collect(env: Env, act: ActFn, num_envs: int, steps: int, key, carry0=None,
            keep_frames: bool = True) -> Rollout:
  rec, _ = make_rollout(env, act, num_envs, steps, keep_frames)(key, carry0)
  rec = jax.device_get(rec)
  if not keep_frames:
    rec["frames"] = np.zeros((0,), np.uint8)
  return Rollout(frames=rec["frames"], actions=rec["actions"], alive=rec["alive"],
                 rewards=rec["rewards"], achievements=rec["achievements"])


def random_act(carry, frame, st, key):
  """The uniform random policy over all 17 actions (the issue's `random` baseline)."""
  return jax.random.randint(key, (frame.shape[0],), 0, len(ACTION_NAMES)), carry
