"""How many of the demonstrator's actions can any IDM recover from the video (the identifiability
ceiling, `jaxpapers.vpt.identifiability`), per action.

    python experiments/vpt/identifiability.py --episodes 32 --steps 250
"""
from __future__ import annotations

import argparse
import json

import jax

from jaxpapers.vpt import env as E
from jaxpapers.vpt.demonstrator import DemoConfig
from jaxpapers.vpt.identifiability import measure


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--episodes", type=int, default=32)
  ap.add_argument("--steps", type=int, default=250)
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args()
  r = measure(E.make_env("Craftax-Classic-Pixels-v1"), DemoConfig(), args.episodes, args.steps,
              jax.random.key(args.seed))
  print("| action | steps | visible (next frame differs from the no-op's) | unique (no other action gives it) |")
  print("|---|---|---|---|")
  for name, v in r["per_action"].items():
    print(f"| {name} | {v['steps']} | {100 * v['visible']:.1f}% | {100 * v['unique']:.1f}% |")
  print(f"\nnon-noop actions: {r['non_noop_steps']}, visible {100 * r['visible_non_noop']:.1f}%, "
        f"unique {100 * r['unique_non_noop']:.1f}%")
  print(json.dumps({k: r[k] for k in ("visible_non_noop", "unique_non_noop", "non_noop_steps")}))


if __name__ == "__main__":
  main()
