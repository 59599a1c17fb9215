"""The road-side unit's object tracker: a constant-velocity Kalman filter per object, and the
vehicle-side motion compensation of a track that arrives late (inter-frame fusion).

State [px, py, vx, vy]; the discrete white-noise-acceleration model (a constant acceleration of
variance `accel_sigma`^2 within each dt step, independent between steps: Q = accel_sigma^2 G G^T,
G = [dt^2/2, dt] per axis; Bar-Shalom, Li & Kirubarajan 2001, ch. 6); position measurements with
per-axis variance r. The two
axes follow the same model and are measured at the same times with the same variance, so they
share one 2x2 covariance [[pp, pv], [pv, vv]]; the filter keeps that (exact, not an approximation).
A track starts at a detection with zero velocity and velocity std INIT_VEL_SIGMA, is published once
it has `confirm_hits` detections, coasts (predicted, still published) through misses and is dropped
after more than `drop_misses` consecutive misses. Association on the RSU side is by object identity
(the RSU's own tracker is not what the paper studies; a deviation named in the README).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

INIT_VEL_SIGMA = 5.0


class Tracks(NamedTuple):
  """Per object slot [..., N]: what the RSU publishes (and, for the filter, hits/misses/alive)."""
  pos: jnp.ndarray      # [..., N, 2]
  vel: jnp.ndarray      # [..., N, 2]
  pp: jnp.ndarray       # per-axis position variance
  pv: jnp.ndarray       # per-axis position-velocity covariance
  vv: jnp.ndarray       # per-axis velocity variance
  valid: jnp.ndarray    # confirmed and alive: published


class FilterState(NamedTuple):
  tracks: Tracks
  hits: jnp.ndarray
  misses: jnp.ndarray
  alive: jnp.ndarray


def init_state(n: int) -> FilterState:
  z = jnp.zeros(n)
  return FilterState(Tracks(jnp.zeros((n, 2)), jnp.zeros((n, 2)), z, z, z, jnp.zeros(n, bool)),
                     jnp.zeros(n, jnp.int32), jnp.zeros(n, jnp.int32), jnp.zeros(n, bool))


def propagate_cov(pp, pv, vv, age, dt: float, accel_sigma: float):
  """The per-axis covariance after age / dt prediction steps of dt, in closed form: F^n P F^nT plus
  sum_i F^i Q F^iT, with (F^i G) = [dt^2 (i + 1/2), dt], so the sums are q dt^4 n(4n^2 - 1)/12,
  q dt^3 n^2/2 and q dt^2 n (a = n dt: q(a^3 dt/3 - a dt^3/12), q a^2 dt/2, q a dt). Equal to
  stepping `predict_cov` n times (tested) when age is a multiple of dt, as the simulator's
  ages are."""
  q = accel_sigma ** 2
  a = age
  return (pp + 2 * a * pv + a ** 2 * vv + q * (a ** 3 * dt / 3 - a * dt ** 3 / 12),
          pv + a * vv + q * a ** 2 * dt / 2, vv + q * a * dt)


def predict_cov(pp, pv, vv, dt: float, accel_sigma: float):
  """One prediction step: F P F^T + Q."""
  return propagate_cov(pp, pv, vv, dt, dt, accel_sigma)


def filter_step(st: FilterState, z, detected, dt: float, meas_sigma: float, accel_sigma: float,
                confirm_hits: int, drop_misses: int) -> FilterState:
  """One frame for every object: predict, then update with z [N, 2] where detected [N]."""
  r = meas_sigma ** 2
  tr = st.tracks
  pos = tr.pos + dt * tr.vel
  pp, pv, vv = predict_cov(tr.pp, tr.pv, tr.vv, dt, accel_sigma)
  s = pp + r
  kp, kv = pp / s, pv / s
  innov = z - pos
  up_pos, up_vel = pos + kp[:, None] * innov, tr.vel + kv[:, None] * innov
  up = (pp - pp * kp, pv - pv * kp, vv - pv * kv)
  fresh = detected & ~st.alive
  keep = detected & st.alive
  pick = lambda a, b, c: jnp.where(fresh, a, jnp.where(keep, b, c))
  pos = jnp.where(fresh[:, None], z, jnp.where(keep[:, None], up_pos, pos))
  vel = jnp.where(fresh[:, None], 0.0, jnp.where(keep[:, None], up_vel, tr.vel))
  pp, pv, vv = (pick(r, up[0], pp), pick(0.0, up[1], pv), pick(INIT_VEL_SIGMA ** 2, up[2], vv))
  hits = jnp.where(fresh, 1, jnp.where(keep, st.hits + 1, st.hits))
  misses = jnp.where(detected, 0, st.misses + 1)
  alive = detected | (st.alive & (misses <= drop_misses))
  hits = jnp.where(alive, hits, 0)
  return FilterState(Tracks(pos, vel, pp, pv, vv, alive & (hits >= confirm_hits)), hits, misses,
                     alive)


def track(z: jnp.ndarray, detected: jnp.ndarray, dt: float, meas_sigma: float, accel_sigma: float,
          confirm_hits: int, drop_misses: int) -> Tracks:
  """Published tracks [T, N, ...] from measurements z [T, N, 2] and flags [T, N]."""
  def step(st, inp):
    st = filter_step(st, *inp, dt, meas_sigma, accel_sigma, confirm_hits, drop_misses)
    return st, st.tracks
  return jax.lax.scan(step, init_state(z.shape[1]), (z, detected))[1]


def compensate(tr: Tracks, age, dt: float, accel_sigma: float) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Tracks `age` seconds old moved to the present by the filter's own CV model: the means
  pos + vel * age and the per-axis position variance of age / dt prediction steps (exact for a
  constant-velocity object)."""
  age = jnp.broadcast_to(age, tr.pp.shape)
  var = propagate_cov(tr.pp, tr.pv, tr.vv, age, dt, accel_sigma)[0]
  return tr.pos + tr.vel * age[..., None], var
