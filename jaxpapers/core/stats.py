"""Summaries over seeds: mean, sample standard deviation and the 95% Student-t interval."""
from __future__ import annotations

import numpy as np

# two-sided 95% Student-t quantiles by degrees of freedom
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
        10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
        18: 2.101, 19: 2.093, 20: 2.086}


def mean_std(xs) -> dict:
  """Mean, sample std (ddof 1) and, for n >= 2, the 95% t-interval of the mean (1.96 beyond 20
  degrees of freedom)."""
  xs = [float(x) for x in xs]
  out = {"mean": float(np.mean(xs)), "std": float(np.std(xs, ddof=1)) if len(xs) > 1 else None,
         "n": len(xs), "values": xs}
  if len(xs) > 1:
    half = T975.get(len(xs) - 1, 1.96) * out["std"] / np.sqrt(len(xs))
    out["ci95"] = [out["mean"] - half, out["mean"] + half]
  return out


def verdict(d: dict, smaller_is_claim: bool = False) -> str:
  """From the 95% t-interval of a paired mean difference (`mean_std`): whether the claimed sign
  (positive, or negative with `smaller_is_claim`) excluded zero."""
  if d["n"] < 2:
    return "n/a (one seed)"
  lo, hi = d["ci95"]
  if smaller_is_claim:
    lo, hi = -hi, -lo
  return "reproduced" if lo > 0 else "not reproduced" if hi < 0 else "not established"
