"""The simulated road, its objects and the two sensors (road-side unit and ego vehicle).

A straight two-lane road along x: the ego lane is centred on y = 0 (the ego drives there, from
x = 0), the oncoming lane on y = +3.5, a parking strip on y = -3.25, sidewalks beyond |y| = 4.5.
Objects (fixed count per episode, so episodes vectorise):
  parked cars   stationary on the parking strip; they occlude what stands behind them;
  pedestrians   each waits just behind a parked car (hidden from the ego) and, with probability
                `cross_prob`, walks across the road at constant speed, then stops on the far
                sidewalk. It starts when the approaching ego is `trigger` seconds away (its time
                to arrive at the current speed), as scenario-based driving tests trigger actors:
                the occluded "ghost" pedestrian that road-side sensing exists for. The trigger range
                (1.6-4.0 s) sets the difficulty: the ego alone collides in 6.8% of episodes of
                the default run, the oracle planner (every true object known) in none;
  a lead car    in the ego lane far ahead, slower than the ego, braking hard at a random time (to
                a stop or a third of its speed): the ego closes in and must follow it;
  oncoming cars in the other lane at constant speed.
Every trajectory but the pedestrians' start time is a function of the episode's key alone; the start
is triggered by each method's own ego, so every method meets the same situation. Cars advance as
p[t+1] = p[t] + v[t]*dt; a pedestrian's position is exact for its start time.

Sensors. The RSU is a pole-mounted sensor at (rsu_x, rsu_y) with range `rsu_range` and, being
elevated, no occlusion; the ego's sensor sees `ego_range` metres around it, except objects whose
line of sight passes within `OCCLUDER_RADIUS` of a nearer vehicle. Both miss with probability
1 - p_det and add Gaussian position noise; the ego also reports a velocity (as its own tracker
would) with noise, and false positives appear in its range. The paper's system uses LiDAR on both
sides; these are abstract object-level sensors (a deviation named in the README).
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

PARKED, PEDESTRIAN, LEAD, ONCOMING = 0, 1, 2, 3
OCCLUDER_RADIUS = 1.2          # metres: a car's silhouette as seen along the road
VEHICLE_HALF = (2.25, 0.9)     # half length, half width (metres)
PEDESTRIAN_HALF = (0.3, 0.3)
PARKING_Y, ONCOMING_Y = -3.25, 3.5
PED_START_Y, PED_END_Y = -3.4, 5.5


@dataclasses.dataclass(frozen=True)
class Scenario:
  """Static description of the road and sensors (hashable: a jit static argument)."""
  frames: int = 200
  dt: float = 0.1
  road_length: float = 320.0
  ego_speed: float = 15.0
  n_parked: int = 4
  n_pedestrians: int = 2
  n_oncoming: int = 2
  cross_prob: float = 0.8
  trigger_min: float = 1.6        # seconds: the ego's time to arrive when a pedestrian starts
  trigger_max: float = 4.0
  rsu_x: float = 160.0
  rsu_y: float = -6.0
  rsu_range: float = 110.0
  comm_range: float = 260.0
  ego_range: float = 60.0
  ego_sigma: float = 0.2
  ego_vel_sigma: float = 0.3
  ego_p_det: float = 0.95
  ego_fp_slots: int = 2
  ego_fp_rate: float = 0.02
  rsu_sigma: float = 0.3
  rsu_p_det: float = 0.95

  @property
  def n_objects(self) -> int:
    return self.n_parked + self.n_pedestrians + 1 + self.n_oncoming

  def kinds(self) -> jnp.ndarray:
    return jnp.array([PARKED] * self.n_parked + [PEDESTRIAN] * self.n_pedestrians + [LEAD]
                     + [ONCOMING] * self.n_oncoming, jnp.int32)

  def rsu_sensed_stretch(self) -> tuple[float, float] | None:
    """The part of the road [0, road_length] inside the RSU's sensing range, or None."""
    half = (self.rsu_range ** 2 - self.rsu_y ** 2)
    if half <= 0:
      return None
    lo, hi = max(0.0, self.rsu_x - half ** 0.5), min(self.road_length, self.rsu_x + half ** 0.5)
    return (lo, hi) if hi > lo else None


class World(NamedTuple):
  parked: jnp.ndarray       # [Np, 2] positions of the parked cars
  ped_x: jnp.ndarray        # [P] pedestrians' x (each behind a parked car)
  ped_speed: jnp.ndarray    # [P] walking speed (m/s)
  ped_trigger: jnp.ndarray  # [P] ego time-to-arrive (s) that starts the crossing; inf: never
  movers_pos: jnp.ndarray   # [T, 1 + No, 2] the lead car then the oncoming cars
  movers_vel: jnp.ndarray   # [T, 1 + No, 2]
  kind: jnp.ndarray         # [N] object kinds, in the order of `objects`


class Draws(NamedTuple):
  """The episode's sensor randomness, drawn once and shared by every fusion method."""
  ego_noise: jnp.ndarray    # [T, N, 4] position and velocity noise (standard normal)
  ego_u: jnp.ndarray        # [T, N] detection uniforms
  fp_u: jnp.ndarray         # [T, K]
  fp_pos: jnp.ndarray       # [T, K, 2] uniforms
  rsu_noise: jnp.ndarray    # [T, N, 2]
  rsu_u: jnp.ndarray        # [T, N]


def half_extent(kind: jnp.ndarray) -> jnp.ndarray:
  """[N, 2] half length and half width of each object."""
  return jnp.where((kind == PEDESTRIAN)[:, None], jnp.array(PEDESTRIAN_HALF),
                   jnp.array(VEHICLE_HALF))


def sample_world(key, s: Scenario) -> World:
  """One episode's objects (see the module docstring)."""
  ks = jax.random.split(key, 10)
  t = jnp.arange(s.frames, dtype=jnp.float32) * s.dt
  u = lambda k, shape, lo, hi: jax.random.uniform(k, shape, minval=lo, maxval=hi)
  xp = u(ks[0], (s.n_parked,), 40.0, s.road_length - 60.0)
  parked = jnp.stack([xp, jnp.full_like(xp, PARKING_Y)], -1)
  crosses = jax.random.uniform(ks[3], (s.n_pedestrians,)) < s.cross_prob
  trigger = jnp.where(crosses, u(ks[1], (s.n_pedestrians,), s.trigger_min, s.trigger_max), -jnp.inf)
  # the lead car: cruise, then brake at 3 m/s^2 to a stop or a third of its speed
  x_lead = u(ks[4], (1,), 100.0, 140.0)
  v_lead = u(ks[5], (1,), 10.0, 14.0)
  t_brake = u(ks[6], (1,), 2.0, s.frames * s.dt - 4.0)
  v_after = jnp.where(jax.random.uniform(ks[7], (1,)) < 0.5, 0.0, v_lead / 3)
  vx_lead = jnp.where(t[:, None] < t_brake, v_lead,
                      jnp.maximum(v_after, v_lead - 3.0 * (t[:, None] - t_brake)))
  x_on = u(ks[8], (s.n_oncoming,), 60.0, s.road_length + 60.0)
  v_on = -u(ks[9], (s.n_oncoming,), 9.0, 14.0)
  p0 = jnp.concatenate([jnp.stack([x_lead, jnp.zeros(1)], -1),
                        jnp.stack([x_on, jnp.full_like(x_on, ONCOMING_Y)], -1)])
  vx = jnp.concatenate([vx_lead, jnp.broadcast_to(v_on, (s.frames, s.n_oncoming))], axis=1)
  vel = jnp.stack([vx, jnp.zeros_like(vx)], -1)
  pos = p0 + jnp.concatenate([jnp.zeros((1,) + p0.shape), jnp.cumsum(vel[:-1] * s.dt, axis=0)])
  return World(parked, xp[:s.n_pedestrians] + 2.8, u(ks[2], (s.n_pedestrians,), 1.2, 1.8),
               trigger, pos, vel, s.kinds())


def objects(w: World, t, now, ped_t0) -> tuple[jnp.ndarray, jnp.ndarray]:
  """([N, 2] positions, [N, 2] velocities) at frame t (time `now`), pedestrians started at ped_t0
  (inf: not started)."""
  walk = (PED_END_Y - PED_START_Y) / w.ped_speed
  elapsed = jnp.clip(now - ped_t0, 0.0, walk)
  walking = (now >= ped_t0) & (now - ped_t0 < walk)
  ped_pos = jnp.stack([w.ped_x, PED_START_Y + w.ped_speed * elapsed], -1)
  ped_vel = jnp.stack([jnp.zeros_like(w.ped_x), jnp.where(walking, w.ped_speed, 0.0)], -1)
  return (jnp.concatenate([w.parked, ped_pos, w.movers_pos[t]]),
          jnp.concatenate([jnp.zeros_like(w.parked), ped_vel, w.movers_vel[t]]))


def trigger_pedestrians(w: World, ego_x, ego_v, now, ped_t0):
  """Start (at `now`) each waiting pedestrian whose ego time-to-arrive is within its trigger."""
  t_arrive = (w.ped_x - ego_x - VEHICLE_HALF[0]) / jnp.maximum(ego_v, 0.1)
  start = jnp.isinf(ped_t0) & (t_arrive >= 0) & (t_arrive <= w.ped_trigger)
  return jnp.where(start, now, ped_t0)


def sample_draws(key, s: Scenario) -> Draws:
  ks = jax.random.split(key, 6)
  T, N, K = s.frames, s.n_objects, s.ego_fp_slots
  return Draws(jax.random.normal(ks[0], (T, N, 4)), jax.random.uniform(ks[1], (T, N)),
               jax.random.uniform(ks[2], (T, K)), jax.random.uniform(ks[3], (T, K, 2)),
               jax.random.normal(ks[4], (T, N, 2)), jax.random.uniform(ks[5], (T, N)))


def planar_norm(v: jnp.ndarray) -> jnp.ndarray:
  """|v| over a last axis of 2, written out: XLA's CPU backend runs the generic norm's size-2
  reduction as a library call many times slower than these elementwise ops."""
  return jnp.sqrt(v[..., 0] ** 2 + v[..., 1] ** 2)


def line_of_sight(viewer: jnp.ndarray, pos: jnp.ndarray, occluder: jnp.ndarray) -> jnp.ndarray:
  """[N] bool: object i is visible from `viewer` unless the segment viewer -> pos[i] passes within
  OCCLUDER_RADIUS of the centre of a nearer occluding object j != i (squared distances: no root)."""
  d = pos - viewer                                              # [N, 2] object offsets
  dist2 = d[:, 0] ** 2 + d[:, 1] ** 2
  dot = d[:, None, 0] * d[None, :, 0] + d[:, None, 1] * d[None, :, 1]       # [i, j]
  proj = jnp.clip(dot * (1.0 / jnp.maximum(dist2, 1e-9))[:, None], 0, 1)   # along i's sight line
  perp2 = (proj * d[:, None, 0] - d[None, :, 0]) ** 2 + (proj * d[:, None, 1] - d[None, :, 1]) ** 2
  n = pos.shape[0]
  blocks = (occluder[None, :] & ~jnp.eye(n, dtype=bool) & (perp2 < OCCLUDER_RADIUS ** 2)
            & (dist2[None, :] < dist2[:, None]))
  return ~blocks.any(axis=1)


class Detections(NamedTuple):
  pos: jnp.ndarray     # [M, 2]
  vel: jnp.ndarray     # [M, 2]
  var: jnp.ndarray     # [M] position variance per axis
  valid: jnp.ndarray   # [M] bool


def ego_detect(s: Scenario, ego_x, pos, vel, kind, d: Draws, t) -> Detections:
  """The ego sensor at frame t: true objects (range, occlusion, misses, noise) then false
  positives (each of K slots fires with probability ego_fp_rate, uniform in range, |y| <= 8)."""
  viewer = jnp.stack([ego_x, 0.0])
  dist = planar_norm(pos - viewer)
  seen = (dist <= s.ego_range) & line_of_sight(viewer, pos, kind != PEDESTRIAN) & (
      d.ego_u[t] < s.ego_p_det)
  noise = d.ego_noise[t]
  zp = pos + s.ego_sigma * noise[:, :2]
  zv = vel + s.ego_vel_sigma * noise[:, 2:]
  fp = d.fp_pos[t] * jnp.array([2 * s.ego_range, 16.0]) - jnp.array([s.ego_range, 8.0])
  fp = fp + viewer
  k = s.ego_fp_slots
  return Detections(jnp.concatenate([zp, fp]), jnp.concatenate([zv, jnp.zeros((k, 2))]),
                    jnp.full((pos.shape[0] + k,), s.ego_sigma ** 2),
                    jnp.concatenate([seen, d.fp_u[t] < s.ego_fp_rate]))


def rsu_detect(s: Scenario, pos, d: Draws, t) -> tuple[jnp.ndarray, jnp.ndarray]:
  """[N, 2] RSU measurements and [N] detected flags at frame t (no occlusion: a raised sensor)."""
  rsu = jnp.array([s.rsu_x, s.rsu_y])
  in_range = planar_norm(pos - rsu) <= s.rsu_range
  return pos + s.rsu_sigma * d.rsu_noise[t], in_range & (d.rsu_u[t] < s.rsu_p_det)
