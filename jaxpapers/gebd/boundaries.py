"""Boundary targets, decoding and segmentation alignment of MAE-GEBD (arXiv 2206.08610, §2-§3;
details the text leaves open read from the authors' release, ContentAndMaterialPortrait/MAE-GEBD).

A video is cut into N_SECTIONS sections of SECTION seconds (40 x 0.25 s: Kinetics clips are at
most 10 s); a model gives one score per section.

* `hard_targets`: 1 at section floor(t / p) of each boundary t (the MAE model's targets);
* `soft_targets` (§2.2 "soft label"): a boundary at u = t / p sections splits one unit between
  its two neighbouring sections, 1 - frac(u) to floor(u) and frac(u) to floor(u) + 1 (u capped
  below N - 1; a later boundary overwrites an earlier one's value);
* `decode`: optional Gaussian smoothing (7 taps, centre weight 1, zero padding), peaks = the
  maximum of their 5-section window at or above a threshold, each refined by a sub-section offset
  from its neighbours' scores (soft-target models) or placed at its section's centre (hard-target
  models, as the release decodes its MAE model), kept below the video's duration;
* `align` (§3 "segmentation alignment"): boundaries are pushed at least 0.3 s + 0.05 x duration
  from both ends and at least 0.095 x duration (forward pass) / 0.1 x duration (backward pass)
  apart, the way the release post-processes its submissions.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

SECTION = 0.25
N_SECTIONS = 40


def hard_targets(times: Sequence[float], n: int = N_SECTIONS, p: float = SECTION) -> np.ndarray:
  y = np.zeros(n, np.float32)
  for t in times:
    y[min(int(t / p), n - 1)] = 1.0
  return y


def soft_targets(times: Sequence[float], n: int = N_SECTIONS, p: float = SECTION) -> np.ndarray:
  y = np.zeros(n, np.float32)
  for t in sorted(set(float(t) for t in times)):
    u = min(t / p, n - 1 - 1e-3)
    i = int(np.floor(u))
    y[i] = i + 1 - u
    y[i + 1] = u - i
  return y


def gaussian_smooth(s: np.ndarray, sigma: float) -> np.ndarray:
  """s [..., N] convolved along the last axis with 7 Gaussian taps whose centre weight is 1
  (not normalised to sum 1, as the release), zero padding; sigma = 0: unchanged."""
  if sigma <= 0:
    return np.asarray(s, np.float32)
  k = np.exp(-np.arange(-3, 4) ** 2 / (2.0 * sigma ** 2))
  pad = np.pad(np.asarray(s, np.float64), [(0, 0)] * (np.ndim(s) - 1) + [(3, 3)])
  n = np.shape(s)[-1]
  return sum(k[i] * pad[..., i:i + n] for i in range(7)).astype(np.float32)


def peaks(s: np.ndarray, threshold: float) -> np.ndarray:
  """Indices j where s[j] is the maximum of s[j-2 .. j+2] (clipped at the ends) and s[j] >=
  threshold; a flat top gives several."""
  n = len(s)
  win = np.stack([np.pad(s, 2, constant_values=-np.inf)[i:i + n] for i in range(5)])
  return np.nonzero((s >= win.max(0)) & (s >= threshold))[0]


def offset(s: np.ndarray, j: int, p: float = SECTION) -> float:
  """Sub-section refinement of peak j from the slope of its neighbours' scores."""
  n = len(s)
  if 2 <= j <= n - 3:
    return float((s[j + 1] + s[j + 2] - s[j - 1] - s[j - 2]) / s[j] * p / 2)
  if j in (1, n - 2):
    return float((s[j + 1] - s[j - 1]) / s[j] * p / 2)
  return 0.0


def decode(scores: np.ndarray, duration: float, sigma: float, threshold: float,
           p: float = SECTION, hard: bool = False) -> list[float]:
  """One video's section scores -> boundary times in seconds (sorted). A model trained on soft
  targets gives p x j + offset (the release's base-model decoding); one trained on hard targets
  (a boundary at section floor(t / p)) gives the section's centre, p x j + p / 2 (the release's
  MAE decoding)."""
  s = gaussian_smooth(np.asarray(scores, np.float32), sigma)
  if hard:
    out = [float(p * j + p / 2) for j in peaks(s, threshold)]
  else:
    out = [float(p * j + offset(s, j, p)) for j in peaks(s, threshold)]
  return sorted(t for t in out if t < duration)


def align(times: Sequence[float], duration: float) -> list[float]:
  """Segmentation alignment: with margin M = 0.3 + 0.05 x duration, a forward pass moves each
  boundary up to at least M (the first) or the previous one + 0.095 x duration, a backward pass
  moves each down to at most duration - M (the last) or the next one - 0.1 x duration, then
  boundaries at or below 0 are dropped and a first one below M is set to M."""
  t = sorted(float(x) for x in times)
  if not t:
    return []
  m = 0.3 + 0.05 * duration
  bound = m
  for i in range(len(t)):
    need = bound + (0.0 if i == 0 else 0.095 * duration)
    if t[i] < need:
      t[i] = need
    bound = t[i]
  bound = duration - m
  for i in range(len(t) - 1, -1, -1):
    need = bound - (0.0 if i == len(t) - 1 else 0.1 * duration)
    if t[i] > need:
      t[i] = need
    bound = t[i]
  t = [x for x in t if x > 0]
  if t and t[0] < m:
    t[0] = m
  return t
