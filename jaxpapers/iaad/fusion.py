"""Object-level fusion of RSU tracks with the ego's detections, and the perception score.

Association is greedy global nearest neighbour: repeatedly pair the closest remaining (a, b) whose
distance is within the gate (ties go to the lower index); what is left stays unmatched. A matched
pair becomes one object at the inverse-variance (position variance) average of the two positions
and of the two velocities;
unmatched ego detections and unmatched RSU objects are both kept (the RSU extends the ego's view).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxpapers.iaad.scenario import Detections, planar_norm


def associate(a, a_valid, b, b_valid, gate: float) -> jnp.ndarray:
  """[Na] index into b of each a's partner, or -1: greedy global nearest neighbour within `gate`
  (repeatedly pair the closest remaining a and b).

  Computed in rounds of mutual nearest neighbours, which gives the same pairs: the closest
  remaining pair is always mutual, and a mutual pair can never lose a member to a closer pair, so
  every round's mutual pairs are ones greedy takes; for the same reason a round that leaves a
  finite distance is always followed by one that adds a pair, so rounds stop when none is left
  (one or two in practice, against min(Na, Nb) sequential picks). Exact ties go to the lower
  index. The nearest indices are taken as plain min-reductions (first index at the minimum), which
  XLA's CPU backend vectorises; argmin's variadic (value, index) reduction was the simulator's
  slowest op."""
  na, nb = a.shape[0], b.shape[0]
  diff = a[:, None, :] - b[None, :, :]
  d = diff[..., 0] ** 2 + diff[..., 1] ** 2          # squared: the same order, no root
  d = jnp.where(a_valid[:, None] & b_valid[None, :] & (d <= gate ** 2), d, jnp.inf)
  rows, cols = jnp.arange(na)[:, None], jnp.arange(nb)[None, :]

  def body(carry):
    d, match, _, rounds = carry
    row_min = d.min(axis=1, keepdims=True)
    j_best = jnp.where(d == row_min, cols, nb).min(axis=1)          # [na] first nearest b
    i_best = jnp.where(d == d.min(axis=0, keepdims=True), rows, na).min(axis=0)   # [nb]
    pick = (j_best[:, None] == cols) & (i_best[None, :] == rows) & jnp.isfinite(row_min)
    mutual = pick.any(1)                                            # [na, nb] one-hot, mutual
    match = jnp.where(mutual, j_best, match)
    d = jnp.where(mutual[:, None] | pick.any(0)[None, :], jnp.inf, d)
    return d, match, jnp.isfinite(d).any(), rounds + 1

  cond = lambda c: c[2] & (c[3] < min(na, nb))
  init = (d, jnp.full((na,), -1, jnp.int32), jnp.isfinite(d).any(), 0)
  return jax.lax.while_loop(cond, body, init)[1]


def partnered(match: jnp.ndarray, nb: int) -> jnp.ndarray:
  """[nb] bool: which b's were matched by `associate`."""
  return (match[:, None] == jnp.arange(nb)[None, :]).any(0)


def fuse(ego: Detections, rsu: Detections, use_rsu, gate: float) -> tuple[Detections, jnp.ndarray]:
  """(the fused object list, [Nr] which RSU objects an ego detection matched). The list holds the
  ego detections (merged with their RSU partner when use_rsu) then the RSU objects no ego detection
  matched; with use_rsu False it is the ego's detections alone. The matching is computed either
  way: planning fusion uses it to tell which RSU tracks the ego already sees."""
  match = associate(ego.pos, ego.valid, rsu.pos, rsu.valid, gate)
  seen = partnered(match, rsu.pos.shape[0])
  has = (match >= 0) & use_rsu
  j = jnp.maximum(match, 0)
  we, wr = 1.0 / ego.var, jnp.where(has, 1.0 / rsu.var[j], 0.0)
  pos = (ego.pos * we[:, None] + rsu.pos[j] * wr[:, None]) / (we + wr)[:, None]
  vel = jnp.where(has[:, None], (ego.vel * we[:, None] + rsu.vel[j] * wr[:, None]) / (we + wr)[:, None],
                  ego.vel)
  var = 1.0 / (we + wr)
  rest = rsu.valid & use_rsu & ~seen
  return Detections(jnp.concatenate([pos, rsu.pos]), jnp.concatenate([vel, rsu.vel]),
                    jnp.concatenate([var, rsu.var]), jnp.concatenate([ego.valid, rest])), seen


def perception_counts(perceived: Detections, truth, truth_valid, gate: float):
  """(true positives, ground-truth objects, perceived objects, summed position error) of one frame:
  perceived objects matched one-to-one to true ones within `gate` metres."""
  match = associate(truth, truth_valid, perceived.pos, perceived.valid, gate)
  has = match >= 0
  err = jnp.where(has, planar_norm(truth - perceived.pos[jnp.maximum(match, 0)]), 0.0)
  return has.sum(), truth_valid.sum(), perceived.valid.sum(), err.sum()
