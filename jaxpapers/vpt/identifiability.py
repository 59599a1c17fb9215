"""How many of the demonstrator's actions can any IDM recover from the video? For every step of
demonstrator episodes, the game is stepped from the same state with the same key under each of
the 17 actions and the next frames are compared:

- `visible`: the taken action's next frame differs from the no-op's (the action left a trace);
- `unique`: no other action gives the taken action's next frame (an IDM that sees frames t and
  t+1 perfectly can name it without guessing).

The `unique` share of non-noop actions is the identifiability ceiling: the held-out non-noop
accuracy an IDM can reach from two frames without exploiting the demonstrator's habits (for the
ambiguous rest it must guess from context)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxpapers.vpt import env as E
from jaxpapers.vpt.demonstrator import DemoConfig, initial_carry, make_demonstrator


def measure(env: E.Env, demo_config: DemoConfig, episodes: int, steps: int, key) -> dict:
  """The shares of the demonstrator's actions that are visible and unique (see the module
  docstring) over `episodes` episodes of `steps` steps in the worlds of `key`."""
  e, p = env.env, env.params
  demo = make_demonstrator(demo_config)
  actions = jnp.arange(env.num_actions)

  def run(key):
    k0, k1, k2 = jax.random.split(key, 3)
    obs, st = jax.vmap(e.reset, (0, None))(jax.random.split(k0, episodes), p)
    styles = initial_carry(demo_config, episodes, k2)

    def body(c, k):
      st, frame, done = c
      k_act, k_env = jax.random.split(k)
      a, _ = demo(styles, frame, st, k_act)
      keys = jax.random.split(k_env, episodes)
      # next frame under every action, same state and key: [N, A, H, W, 3]
      every = jax.vmap(lambda s, kk: jax.vmap(lambda b: E.to_uint8(e.step(kk, s, b, p)[0]))(actions))(st, keys)
      taken = jnp.take_along_axis(every, a[:, None, None, None, None], 1)
      same = jnp.all(every == taken, axis=(2, 3, 4))                     # [N, A]
      obs, st2, _, d, _ = jax.vmap(e.step, (0, 0, 0, None))(keys, st, a, p)
      rec = dict(a=a, alive=~done, visible=~same[:, E.NOOP], unique=same.sum(1) == 1)
      return (st2, E.to_uint8(obs), done | d), rec

    init = (st, E.to_uint8(obs), jnp.zeros(episodes, bool))
    _, rec = jax.lax.scan(body, init, jax.random.split(k1, steps))
    return rec

  rec = jax.device_get(jax.jit(run)(key))
  a, alive = rec["a"], rec["alive"]
  nn = alive & (a != E.NOOP)
  per_action = {}
  for i, name in enumerate(E.ACTION_NAMES):
    m = alive & (a == i)
    if m.sum():
      per_action[name] = {"steps": int(m.sum()), "visible": float(rec["visible"][m].mean()),
                          "unique": float(rec["unique"][m].mean())}
  return {"episodes": episodes, "steps": steps, "non_noop_steps": int(nn.sum()),
          "visible_non_noop": float(rec["visible"][nn].mean()),
          "unique_non_noop": float(rec["unique"][nn].mean()), "per_action": per_action}
