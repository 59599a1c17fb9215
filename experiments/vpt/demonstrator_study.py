"""The demonstrators alone: how long their episodes last, what each style achieves and the action
distribution, on fresh worlds (no frames kept, so 64 worlds x 1,000 steps take half a minute on
two cores).

  python experiments/vpt/demonstrator_study.py --episodes 64 --steps 1000
"""
from __future__ import annotations

import argparse

import jax
import numpy as np

from jaxpapers.vpt import env as E
from jaxpapers.vpt.demonstrator import STYLES, DemoConfig, initial_carry, make_demonstrator


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--episodes", type=int, default=64)
  ap.add_argument("--steps", type=int, default=1000)
  ap.add_argument("--seed", type=int, default=0)
  a = ap.parse_args()
  env, cfg = E.make_env("Craftax-Classic-Pixels-v1"), DemoConfig()
  k_styles, k_worlds = jax.random.split(jax.random.key(a.seed))
  carry = initial_carry(cfg, a.episodes, k_styles)
  r = E.collect(env, make_demonstrator(cfg), a.episodes, a.steps, k_worlds, carry0=carry,
                keep_frames=False)
  length, style = r.alive.sum(0), np.asarray(carry["style"])
  print(f"episode length: mean {length.mean():.0f}, median {np.median(length):.0f}, "
        f"{(length >= a.steps).sum()} of {a.episodes} alive at {a.steps} steps")
  print(f"achievements per episode: {r.unlocked.sum(1).mean():.2f}")
  for k, name in enumerate(STYLES):
    m = style == k
    if m.any():
      got = {E.ACHIEVEMENT_NAMES[i]: f"{100 * u:.0f}%" for i, u in enumerate(r.unlocked[m].mean(0)) if u > 0}
      print(f"{name} ({m.sum()} episodes, mean length {length[m].mean():.0f}, "
            f"{(length[m] >= a.steps).sum()} alive at {a.steps}): "
            f"{r.unlocked[m].sum(1).mean():.2f} achievements: {got}")
  played = r.actions[r.alive]
  print("actions:", ", ".join(f"{n} {100 * (played == i).mean():.1f}%" for i, n in enumerate(E.ACTION_NAMES)))


if __name__ == "__main__":
  main()
