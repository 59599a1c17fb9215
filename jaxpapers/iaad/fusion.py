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

from jaxpapers.iaad.scenario import Detections


def associate(a, a_valid, b, b_valid, gate: float) -> jnp.ndarray:
  """[Na] index into b of each a's partner, or -1: greedy global nearest neighbour within `gate`
  (repeatedly pair the closest remaining a and b).

  Computed in rounds of mutual nearest neighbours, which gives the same pairs: the closest
  remaining pair is always mutual, and a mutual pair can never lose a member to a closer pair, so
  every round's mutual pairs are ones greedy takes. Rounds stop when one adds no pair (two or three
  in practice, against min(Na, Nb) sequential picks). Exact ties go to the lower index."""
  na, nb = a.shape[0], b.shape[0]
  d = jnp.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
  d = jnp.where(a_valid[:, None] & b_valid[None, :] & (d <= gate), d, jnp.inf)
  rows, cols = jnp.arange(na)[:, None], jnp.arange(nb)[None, :]

  def body(carry):
    d, match, _, rounds = carry
    j_best = jnp.argmin(d, axis=1)                                  # [na]
    i_best = jnp.argmin(d, axis=0)                                  # [nb]
    pick = (j_best[:, None] == cols) & (i_best[None, :] == rows)    # [na, nb] one-hot, mutual
    mutual = pick.any(1) & jnp.isfinite(d.min(axis=1))
    pick = pick & mutual[:, None]
    match = jnp.where(mutual, j_best, match)
    d = jnp.where(mutual[:, None] | pick.any(0)[None, :], jnp.inf, d)
    return d, match, mutual.any(), rounds + 1

  cond = lambda c: c[2] & (c[3] < min(na, nb))
  init = (d, jnp.full((na,), -1, jnp.int32), jnp.bool_(True), 0)
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
  err = jnp.where(has, jnp.linalg.norm(truth - perceived.pos[jnp.maximum(match, 0)], axis=-1), 0.0)
  return has.sum(), truth_valid.sum(), perceived.valid.sum(), err.sum()
