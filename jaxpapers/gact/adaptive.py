"""GACT's levels and adaptive per-tensor bits (arXiv 2206.11357 §4.2-§4.3, Table 2).

The gradient variance that compressing tensor l adds is about C_l / (2^b_l - 1)^2, with the
sensitivity C_l estimated from three gradients: g0, g1 with tensor l at 1 bit under two seeds and
g2 with it at 8 bits (the others uncompressed):
    C_l = max(|g0 - g1|^2, 2 max(|g0 - g2|^2, |g1 - g2|^2))
Bits are then chosen greedily to minimise sum_l C_l / (2^b_l - 1)^2 subject to
sum_l b_l d_l <= b_avg sum_l d_l (d_l = the tensor's size), b_l in {1, 2, 4, 8}.
"""
from __future__ import annotations

import dataclasses
import heapq
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxpapers.core.errors import ConfigError

CHOICES = (1, 2, 4, 8)


@dataclasses.dataclass(frozen=True)
class Level:
  name: str
  bits: float | None        # fixed width, or the average budget of the adaptive levels
  adaptive: bool


LEVELS = {l.name: l for l in [
    Level("L0", None, False),        # no compression: the plain computation
    Level("L1", 4, False), Level("L1.1", 8, False), Level("L1.2", 2, False),
    Level("L2", 4, True), Level("L2.1", 3, True), Level("L2.2", 2, True),
]}


# uncompressed layouts measured beside L0 (transformer family): GLM's jax.checkpoint scan and no remat
REFERENCE_LEVELS = ("remat", "plain")


def get_level(name: str) -> Level:
  if name not in LEVELS:
    raise ConfigError(f"unknown GACT level {name!r}; use one of {', '.join(LEVELS)}")
  return LEVELS[name]


def sensitivity(g0, g1, g2) -> float:
  """GACT's C_l from gradients with tensor l at 1 bit (two seeds: g0, g1) and at 8 bits (g2)."""
  sq = lambda a, b: float(sum(jnp.sum((x - y) ** 2) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))
  return max(sq(g0, g1), 2.0 * max(sq(g0, g2), sq(g1, g2)))


def estimate_sensitivities(grad_with_bits: Callable, n_tensors: int, seed: int = 0) -> list[float]:
  """C_l for every tensor; `grad_with_bits(bits_tuple, seed)` returns the gradient with those
  per-tensor widths (32 = uncompressed)."""
  out = []
  for l in range(n_tensors):
    bits = lambda b: tuple(b if i == l else 32 for i in range(n_tensors))
    g0 = grad_with_bits(bits(1), seed)
    g1 = grad_with_bits(bits(1), seed + 1)
    g2 = grad_with_bits(bits(8), seed + 2)
    out.append(sensitivity(g0, g1, g2))
  return out


def probe_sensitivities(probe_grad: Callable, params, batch, n_tensors: int, seed: int) -> list[float]:
  """`estimate_sensitivities` through one compiled probe gradient
  `probe_grad(params, bits [n] f32, seed uint32, batch)` (traced widths, 32 = uncompressed)."""
  return estimate_sensitivities(
      lambda b, s: probe_grad(params, jnp.asarray(b, jnp.float32), jnp.uint32(s), batch),
      n_tensors, seed)


def allocate_bits(sens: Sequence[float], sizes: Sequence[int], avg_bits: float) -> tuple[int, ...]:
  """Greedy allocation: start every tensor at 1 bit and repeatedly raise the tensor (to its next
  width in {1, 2, 4, 8}) with the largest drop of C_l / (2^b - 1)^2 per added bit while
  sum b_l d_l <= avg_bits * sum d_l."""
  if len(sens) != len(sizes):
    raise ConfigError(f"{len(sens)} sensitivities for {len(sizes)} tensors")
  total = float(sum(sizes))
  budget = avg_bits * total
  if avg_bits < CHOICES[0] or not total:
    raise ConfigError(f"no allocation meets an average of {avg_bits} bits: the smallest width is "
                      f"{CHOICES[0]} bit")
  bits = [CHOICES[0]] * len(sens)
  used = float(sum(b * d for b, d in zip(bits, sizes)))
  var = lambda c, b: c / (2.0 ** b - 1.0) ** 2

  def gain(i):
    b = bits[i]
    if b == CHOICES[-1]:
      return None
    nb = CHOICES[CHOICES.index(b) + 1]
    return (var(sens[i], b) - var(sens[i], nb)) / ((nb - b) * sizes[i]), nb

  heap = []
  for i in range(len(sens)):
    g = gain(i)
    if g is not None:
      heapq.heappush(heap, (-g[0], i, g[1]))
  while heap:
    _, i, nb = heapq.heappop(heap)
    extra = (nb - bits[i]) * sizes[i]
    if used + extra > budget:
      continue          # this step does not fit; a cheaper one elsewhere may
    bits[i], used = nb, used + extra
    g = gain(i)
    if g is not None:
      heapq.heappush(heap, (-g[0], i, g[1]))
  return tuple(bits)


def objective(sens, bits) -> float:
  return float(sum(c / (2.0 ** b - 1.0) ** 2 for c, b in zip(sens, bits)))


def average_bits(bits, sizes) -> float:
  return float(np.dot(bits, sizes) / np.sum(sizes))
