"""The ego's longitudinal planner: the Intelligent Driver Model (Treiber, Hennecke & Helbing 2000)
following the nearest obstacle that is, or will be, in its lane.

An object ahead is an obstacle when it is inside the lane corridor (|y| < `half_width`), or walking
toward it (lateral speed >= MIN_CROSSING_SPEED, three standard deviations of the ego's velocity
noise, so that a standing object's noise is rarely taken for a crossing; pedestrians walk at
1.2-1.8 m/s) and inside the corridor at some time within one second of the ego's arrival (it
enters before the arrival + 1 s and leaves after the arrival - 1 s); an object already in the
corridor is followed at its own forward speed, one still entering is treated as standing. The gap
is the longitudinal distance minus OBSTACLE_LENGTH (the ego's half length plus a car's: perceived
objects carry no class, so every obstacle is given a car's length). The IDM acceleration is clipped
to [-b_max, a_max] and the speed to >= 0.
"""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

OBSTACLE_LENGTH = 4.5
MIN_CROSSING_SPEED = 0.9     # m/s: 3 sigma of the ego's velocity noise (0.3), 2.8 of the RSU track's


class IDM(NamedTuple):
  v0: float = 15.0          # desired speed (m/s)
  headway: float = 1.2      # T (s)
  a_max: float = 1.5        # m/s^2
  b_comf: float = 2.0       # m/s^2
  b_max: float = 8.0        # hard braking limit (m/s^2)
  s0: float = 2.0           # standstill gap (m)
  half_width: float = 2.1   # lane corridor: ego half width + a car's half width + 0.3 m


def obstacles(ego_x, ego_v, pos, vel, valid, half_width):
  """([M] bool obstacle, [M] gap, [M] obstacle speed along the lane)."""
  dx = pos[:, 0] - ego_x
  y, vy = pos[:, 1], vel[:, 1]
  in_lane = jnp.abs(y) < half_width
  t_reach = jnp.maximum(dx - OBSTACLE_LENGTH, 0.0) / jnp.maximum(ego_v, 1.0)
  speed = jnp.maximum(jnp.abs(vy), 1e-3)
  t_enter = (jnp.abs(y) - half_width) / speed
  t_exit = (jnp.abs(y) + half_width) / speed
  entering = ((y * vy < 0) & (jnp.abs(vy) >= MIN_CROSSING_SPEED) & (t_enter <= t_reach + 1.0)
              & (t_exit >= t_reach - 1.0))
  return (valid & (dx > 0) & (in_lane | entering), dx - OBSTACLE_LENGTH,
          jnp.where(in_lane, jnp.maximum(vel[:, 0], 0.0), 0.0))


def acceleration(p: IDM, v, is_obstacle, gap, v_lead):
  """IDM acceleration behind the binding obstacle (the one asking for the strongest braking)."""
  s_star = p.s0 + v * p.headway + v * (v - v_lead) / (2 * jnp.sqrt(p.a_max * p.b_comf))
  interaction = jnp.where(is_obstacle, (jnp.maximum(s_star, 0.0) / jnp.maximum(gap, 0.1)) ** 2, 0.0)
  a = p.a_max * (1 - (v / p.v0) ** 4 - interaction.max(initial=0.0))
  return jnp.clip(a, -p.b_max, p.a_max)
