"""The IDM planner: stops behind a standing obstacle, follows a moving one at a safe gap, and
takes only a real crossing for an obstacle."""
import jax.numpy as jnp
import numpy as np

from jaxpapers.iaad import planner

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
