"""The IDM planner: stops behind a standing obstacle, follows a moving one at a safe gap, and
takes only a real crossing for an obstacle; planning fusion's constraints from an old message."""
import jax.numpy as jnp
import numpy as np

from jaxpapers.iaad import fusion, kalman, planner
from jaxpapers.iaad.scenario import Detections

P = planner.IDM()


def _drive(obstacle_x, obstacle_v, steps=400, dt=0.1):
  x, v, ox = 0.0, 15.0, obstacle_x
  for _ in range(steps):
    ob, gap, vl = planner.obstacles(jnp.float32(x), jnp.float32(v), jnp.array([[ox, 0.0]]),
                                    jnp.array([[obstacle_v, 0.0]]), jnp.array([True]),
                                    P.half_width)
    a = float(planner.acceleration(P, jnp.float32(v), ob, gap, vl))
    v_new = max(v + a * dt, 0.0)
    x, v, ox = x + (v + v_new) / 2 * dt, v_new, ox + obstacle_v * dt
  return ox - x - planner.OBSTACLE_LENGTH, v


def test_stops_behind_a_standing_obstacle():
  gap, v = _drive(120.0, 0.0)
  assert v < 0.05 and 0.5 * P.s0 < gap < 1.5 * P.s0          # stopped near the standstill gap


def test_follows_a_slower_car_at_its_speed():
  gap, v = _drive(40.0, 8.0)
  assert abs(v - 8.0) < 0.2
  # the IDM equilibrium gap at v = 8 behind a car at 8 m/s: (s0 + v T) / sqrt(1 - (v/v0)^4)
  eq = (P.s0 + 8.0 * P.headway) / np.sqrt(1 - (8.0 / P.v0) ** 4)
  assert abs(gap - eq) < 0.05 * eq


def test_only_a_real_crossing_is_an_obstacle():
  pos = jnp.array([[40.0, -3.4]] * 4)
  vel = jnp.array([[0.0, 1.4], [0.0, 0.5], [0.0, -1.4], [0.0, 1.4]])
  valid = jnp.array([True, True, True, False])
  ob, _, vl = planner.obstacles(jnp.float32(0.0), jnp.float32(15.0), pos, vel, valid, P.half_width)
  # walking toward the lane: yes; standing noise below the crossing speed, walking away, invalid: no
  assert np.asarray(ob).tolist() == [True, False, False, False]
  assert float(vl[0]) == 0.0                                  # a crossing pedestrian is standing
  far = planner.obstacles(jnp.float32(0.0), jnp.float32(15.0), jnp.array([[200.0, -3.4]]),
                          jnp.array([[0.0, 1.4]]), jnp.array([True]), P.half_width)[0]
  assert not bool(far[0])                                     # would cross long before we arrive


def test_old_constraints_widen_a_pedestrians_corridor_not_a_parked_cars():
  """Planning fusion's constraints from a message 1.5 s old: a parked car (on the parking strip,
  y = -3.25) and a waiting pedestrian (y = -3.4) measured with the RSU's 0.3 m noise, both now
  uncertain by the compensated variance. The pedestrian may have started to cross, so its
  corridor widens until it is an obstacle; the car keeps its lane, so it does not; a stopped car
  in the ego lane stays one, and oncoming traffic and what the ego sees are never constraints."""
  pos = jnp.array([[40.0, -3.25], [43.0, -3.4], [60.0, 0.0], [70.0, 3.5], [45.0, -3.25]])
  vel = jnp.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [-12.0, 0.0], [0.0, 0.0]])
  measured = jnp.full(5, 0.09)
  now = kalman.propagate_cov(measured, jnp.zeros(5), jnp.full(5, 0.01), 1.5, 0.1, 3.0)[0]
  msg = Detections(pos, vel, now, jnp.ones(5, bool))
  vehicle = jnp.array([True, False, True, True, True])
  seen = jnp.array([False, False, False, False, True])
  c_pos, valid, widen = fusion.planning_constraints(msg, measured, vehicle, True, seen)
  assert np.asarray(valid).tolist() == [True, True, True, False, False]
  np.testing.assert_allclose(np.asarray(widen), 2 * np.sqrt(np.where(vehicle, measured, now)))
  np.testing.assert_allclose(np.asarray(c_pos[:, 0]), np.asarray(pos[:, 0] - 2 * np.sqrt(now)))
  ob, _, _ = planner.obstacles(jnp.float32(0.0), jnp.float32(15.0), c_pos, vel, valid,
                               P.half_width + widen)
  assert np.asarray(ob).tolist() == [False, True, True, False, False]
  # before the change every track's corridor grew with the message's age: the car was an obstacle
  assert bool(planner.obstacles(jnp.float32(0.0), jnp.float32(15.0), c_pos[:1], vel[:1],
                                valid[:1], P.half_width + 2 * jnp.sqrt(now[:1]))[0][0])
  _, none_valid, _ = fusion.planning_constraints(msg, measured, vehicle, False, seen)
  assert not np.asarray(none_valid).any()                     # no constraints unless used
