"""GACT's levels and adaptive per-tensor bits (arXiv 2206.11357 §4.2-§4.3, Table 2, and the
released code's `conf.py` / `autoprec.py`).

Levels (the official meaning): L0 = no compression, plain training keeping every activation;
L1 / L1.1 / L1.2 = every saved activation at 4 / 8 / 2 bits; L2 / L2.1 / L2.2 = adaptive widths
with an average of 4 / 3 / 2 bits. The checkpointed rows of the official text benchmarks are
levels of their own here: `ckpt` = activation checkpointing without compression (each block
keeps its input, recomputes itself), `L1_ckpt` / `L2.2_ckpt` = checkpointing whose saved block
inputs are compressed (fixed 4 bits / adaptive 2 bits on average).

The gradient variance that compressing tensor l adds is about C_l / (2^b_l - 1)^2, with the
sensitivity C_l estimated from three gradients: g0, g1 with tensor l at 1 bit under two seeds and
g with it exact (the official code takes g with tensor l at 8 bits and the others at their
current widths; ours keeps the others exact, so that g0 - g1 isolates tensor l's rounding, and
the 8-bit rounding would add (1/255)^2 of the 1-bit variance):
    C_l = max(|g0 - g1|^2, 2 max(|g0 - g|^2, |g1 - g|^2))
`allocate_bits` is the official greedy: every tensor starts at the top width (32, uncompressed);
repeatedly the tensor whose next step down (32 -> 8 -> 4 -> 2 -> 1) adds the least variance per
bit saved is lowered, until sum_l b_l d_l <= b_avg sum_l d_l (d_l = the tensor's element count).
"""
from __future__ import annotations

import dataclasses
import heapq
import itertools
from typing import Sequence

import numpy as np

from jaxpapers.core.errors import ConfigError

CHOICES = (1, 2, 4, 8)
LADDER = (32, 8, 4, 2, 1)        # the greedy's steps down from uncompressed


@dataclasses.dataclass(frozen=True)
class Level:
  name: str
  bits: float | None        # fixed width, or the average budget of the adaptive levels
  adaptive: bool
  checkpointed: bool = False

  @property
  def compressed(self) -> bool:
    return self.bits is not None


LEVELS = {l.name: l for l in [
    Level("L0", None, False),
    Level("L1", 4, False), Level("L1.1", 8, False), Level("L1.2", 2, False),
    Level("L2", 4, True), Level("L2.1", 3, True), Level("L2.2", 2, True),
    Level("ckpt", None, False, True), Level("L1_ckpt", 4, False, True),
    Level("L2.2_ckpt", 2, True, True),
]}


def get_level(name: str) -> Level:
  if name not in LEVELS:
    raise ConfigError(f"unknown GACT level {name!r}; use one of {', '.join(LEVELS)}")
  return LEVELS[name]


def sensitivity(d01, d0, d1):
  """GACT's C_l = max(|g0 - g1|^2, 2 max(|g0 - g|^2, |g1 - g|^2)) from the squared distances
  d01 = |g0 - g1|^2, d0 = |g0 - g|^2, d1 = |g1 - g|^2 (numpy, elementwise over units)."""
  return np.maximum(d01, 2.0 * np.maximum(d0, d1))


def _var(c: float, b: int) -> float:
  return 0.0 if b >= 32 else c / (2.0 ** b - 1.0) ** 2


def allocate_bits(sens: Sequence[float], sizes: Sequence[int], avg_bits: float) -> tuple[int, ...]:
  """The official greedy (see the module docstring); widths in {1, 2, 4, 8, 32}."""
  if len(sens) != len(sizes):
    raise ConfigError(f"{len(sens)} sensitivities for {len(sizes)} tensors")
  total = float(sum(sizes))
  if avg_bits < CHOICES[0] or not total:
    raise ConfigError(f"no allocation meets an average of {avg_bits} bits: the smallest width is "
                      f"{CHOICES[0]} bit")
  budget = avg_bits * total
  bits = [LADDER[0]] * len(sens)
  used = LADDER[0] * total

  def cost(i):        # variance added per bit saved by lowering tensor i one step
    b = bits[i]
    nb = LADDER[LADDER.index(b) + 1]
    return (_var(sens[i], nb) - _var(sens[i], b)) / ((b - nb) * sizes[i]), nb

  heap = [(cost(i)[0], i) for i in range(len(sens))]
  heapq.heapify(heap)
  while used > budget and heap:
    _, i = heapq.heappop(heap)
    nb = cost(i)[1]
    used -= (bits[i] - nb) * sizes[i]
    bits[i] = nb
    if nb > LADDER[-1]:
      heapq.heappush(heap, (cost(i)[0], i))
  return tuple(bits)


def exhaustive_bits(sens, sizes, avg_bits) -> tuple[int, ...]:
  """The allocation minimising the variance model under the budget (small cases; tests)."""
  budget = avg_bits * float(sum(sizes))
  best, arg = None, None
  for bits in itertools.product(LADDER, repeat=len(sens)):
    if float(np.dot(bits, sizes)) <= budget:
      v = objective(sens, bits)
      if best is None or v < best:
        best, arg = v, bits
  return arg


def objective(sens, bits) -> float:
  return float(sum(_var(c, b) for c, b in zip(sens, bits)))


def average_bits(bits, sizes) -> float:
  return float(np.dot(bits, sizes) / np.sum(sizes))
