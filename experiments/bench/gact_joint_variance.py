"""Is GACT's variance model additive on a family? On the initial model of a family of the quick
preset, L2.2's allocation (GACT's sensitivities, the official greedy) against uniform 2 bits:
the gradient's squared error with every tensor rounded at once (the joint error, what
`adaptive_variance_ratio` measures), the model's prediction sum_l C_l / (2^b_l - 1)^2, and the sum
of each tensor's error rounded alone (others exact). Additive errors make the joint error equal
that sum.

  python experiments/bench/gact_joint_variance.py [gnn|cnn|transformer] [--workdir DIR]

Prints the allocation, the three quantities for adaptive and uniform bits, and the tensors whose
own error is largest. 16 roundings per estimate.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from flax import nnx

from jaxpapers.configs.gact.memory import get_config
from jaxpapers.gact import adaptive, families
from jaxpapers.gact import experiments as X


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("family", nargs="?", default="gnn", choices=X.FAMILIES)
  ap.add_argument("--workdir", default="runs/gact_joint_variance")
  ap.add_argument("--roundings", type=int, default=16)
  a = ap.parse_args()
  c = get_config("quick")
  Path(a.workdir).mkdir(parents=True, exist_ok=True)
  fam = families.BUILDERS[a.family](c, 0, Path(a.workdir))
  level = adaptive.get_level("L2.2")
  unit_sizes = X.units(fam, level, fam.batch_at(0))
  offsets = np.cumsum([0] + [len(u) for u in unit_sizes]).tolist()
  sizes = np.array([s for u in unit_sizes for s in u])
  n, S = len(sizes), a.roundings
  probe = X.Probe(fam, level, offsets, 8)
  _, params = nnx.split(fam.model, nnx.Param)
  batch = fam.probe_batch()
  sens = np.array(probe.sensitivities(params, batch, 0))
  bits = np.array(adaptive.allocate_bits(list(sens), list(sizes), 2.0))
  exact = probe._exact(params, batch)

  def error(widths) -> float:    # mean over S roundings of |g(widths) - g(exact)|^2
    rows = np.repeat(np.asarray(widths, float)[None], S, 0)
    return float(probe._run(params, batch, rows, np.arange(1, S + 1), exact)[0].mean())

  def alone(l, w) -> float:
    widths = np.full(n, 32.0)
    widths[l] = w
    return error(widths) if w < 32 else 0.0

  uniform = np.full(n, 2)
  print(f"{a.family}: {n} tensors; L2.2 bits {bits.tolist()}")
  for name, b in (("adaptive", bits), ("uniform 2 bits", uniform)):
    own = [alone(l, b[l]) for l in range(n)]
    model = adaptive.objective(sens, [int(x) for x in b])
    print(f"{name}: joint {error(b):.4g}, model {model:.4g}, sum of tensors alone {sum(own):.4g}")


if __name__ == "__main__":
  main()
