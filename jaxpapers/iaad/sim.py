"""The closed-loop episode: sensors -> network -> fusion -> planner -> vehicle, for every fusion
method at once, vectorised over episodes (`jax.vmap`) and frames (`jax.lax.scan`).

Timing (every frame, dt apart): the RSU and the ego capture frame t at t*dt (synchronised clocks).
The RSU's message of frame t arrives at t*dt + latency, or never (lost, or the ego beyond comm
range). The ego fuses at its deadline t*dt + deadline_ms; the messages that arrived by then are
the ones it can use, the newest being k* frames old (age k* * dt).

Methods (named as in the paper's abstract, the adaptive choice after its journal extension's
"S-T choice"; every rule below is ours: the paper's text beyond the abstracts was not available):
  ego_only  the ego's detections alone (no RSU).
  intra     intra-frame fusion: frame t's RSU tracks fused with frame t's ego detections, only if
            they arrived before the deadline; otherwise a fusion miss and the ego's alone.
  inter     inter-frame fusion: the newest arrived RSU message (age <= plan_max_age), its tracks
            motion-compensated to frame t with their Kalman velocity, fused with the ego's frame.
  planning  planning fusion: no object-level fusion; the newest RSU tracks (age <= plan_max_age)
            that the ego does not itself see reach the planner as constraints: obstacles placed two
            (compensated) standard deviations closer, with the lane corridor widened by as much;
            one inside the widened corridor is followed at its own speed, one walking into it is
            treated as standing; traffic moving against the ego (vx < -1 m/s, the other lane's)
            is never a constraint. The ego slows before an occluded pedestrian.
  adaptive  per frame, from the age of the newest message that arrived: fused when it is at most
            inter_max_age old (at age 0, frame t's own message, this is intra-frame fusion; older,
            inter-frame fusion), planning constraints when at most plan_max_age old, else the ego
            alone. So the newest message's confirmed tracks reach the planner, as objects or as
            constraints, until it is plan_max_age old.
  oracle    (reference only) the planner given every true object: the trajectory that planning
            displacement error is measured against.
A frame's RSU information counts as fused (miss ratio) when the method used some: intra only with
frame t's message; inter, planning and adaptive with any message <= plan_max_age old.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from jaxpapers.iaad import fusion, kalman, network, planner
from jaxpapers.iaad.scenario import VEHICLE_HALF, Detections, Scenario, ego_detect, half_extent
from jaxpapers.iaad.scenario import objects, rsu_detect, sample_draws, sample_world
from jaxpapers.iaad.scenario import trigger_pedestrians

METHODS = ("ego_only", "intra", "inter", "planning", "adaptive")
EGO, INTRA, INTER, PLANNING, ADAPTIVE, ORACLE = range(6)
MODES = ("ego", "intra", "inter", "planning")        # adaptive's per-frame choice


@dataclasses.dataclass(frozen=True)
class Fusion:
  deadline_ms: float = 100.0
  gate: float = 2.5            # association gate (m)
  inter_max_age: float = 0.5   # adaptive: newest message age up to which it fuses (s)
  plan_max_age: float = 3.0    # oldest message any method uses (s)
  accel_sigma: float = 3.0     # CV model's white acceleration (m/s^2): a pedestrian starts in ~0.5 s
  confirm_hits: int = 3
  drop_misses: int = 5
  handover_x: tuple = (110.0, 215.0)
  handover_width: float = 10.0
  p_gb_handover: float = 0.3


@dataclasses.dataclass(frozen=True)
class Scoring:
  roi_behind: float = 20.0     # perception is scored on true/perceived objects within this box
  roi_ahead: float = 80.0
  roi_half_width: float = 8.0
  match_gate: float = 2.0      # a perceived object within this distance of a true one is a hit
  near_ttc: float = 1.0        # a near miss: time to collision with an object ahead in the lane
  near_gap: float = 0.5        #   below near_ttc seconds, or a bumper gap below near_gap metres


def history(f: Fusion, s: Scenario) -> int:
  return int(math.floor(f.plan_max_age / s.dt + 1e-6)) + 1


def episode(key, ln: network.Link, trace: network.Trace, s: Scenario, f: Fusion, idm: planner.IDM,
            sc: Scoring, use_trace: bool, record: bool = False):
  """Every method (and the oracle) on one episode; per-frame outputs [M=6, T, ...]."""
  kw, kd, kn = jax.random.split(key, 3)
  world = sample_world(kw, s)
  draws = sample_draws(kd, s)
  nd = network.sample_draws(kn, s.frames, ln.p_gb, ln.p_bg)
  half = half_extent(world.kind)
  H = history(f, s)
  n = s.n_objects
  deadline = f.deadline_ms / 1000.0
  ages = jnp.arange(H) * s.dt

  def run(method):
    def step(carry, t):
      x, v, bad, arr, buf, kf, ped_t0 = carry
      now = t * s.dt
      pos, vel = objects(world, t, now, ped_t0)
      # the RSU senses and tracks; its message of this frame joins the buffer
      z, det = rsu_detect(s, pos, draws, t)
      kf = kalman.filter_step(kf, z, det, s.dt, s.rsu_sigma, f.accel_sigma, f.confirm_hits,
                              f.drop_misses)
      slot = t % H                               # a ring: frame t's message in slot t mod H
      buf = jax.tree.map(lambda b, new: jax.lax.dynamic_update_index_in_dim(b, new, slot, 0), buf,
                         kf.tracks)
      # the network carries it
      dist = jnp.hypot(x - s.rsu_x, s.rsu_y)
      covered = dist <= s.comm_range
      handover = jnp.any(jnp.abs(x - jnp.array(f.handover_x)) < f.handover_width / 2)
      if use_trace:
        latency, lost = network.from_trace(trace, now, nd.offset)
        next_bad = bad
      else:
        latency, lost, next_bad = network.step(ln, bad, dist, handover, nd.z[t], nd.u_state[t],
                                               nd.u_loss[t])
      arrival = jnp.where(covered & ~lost, now + latency / 1000.0, jnp.inf)
      arr = jnp.concatenate([arrival[None], arr[:-1]])
      arrived = arr <= now + deadline + 1e-6
      k = jnp.argmax(arrived)                    # the newest message that made the deadline
      age = ages[k]
      intra_ok = arrived[0]
      plan_ok = arrived.any() & (age <= f.plan_max_age + 1e-6)
      inter_short = plan_ok & (age <= f.inter_max_age + 1e-6)
      newest = jax.tree.map(lambda b: b[(t - k) % H], buf)
      cpos, cvar = kalman.compensate(newest, age, s.dt, f.accel_sigma)
      msg = Detections(cpos, newest.vel, cvar, newest.valid)
      # what this method does with it
      fuse_rsu = jnp.select([method == INTRA, method == INTER, method == ADAPTIVE],
                            [intra_ok, plan_ok, inter_short], False)
      constrain = jnp.select([method == PLANNING, method == ADAPTIVE],
                             [plan_ok, plan_ok & ~inter_short], False)
      used = jnp.select([method == INTRA, method == EGO, method == ORACLE], [intra_ok, False, False],
                        plan_ok)
      mode = jnp.where(fuse_rsu, jnp.where(k == 0, 1, 2), jnp.where(constrain, 3, 0))
      ego = ego_detect(s, x, pos, vel, world.kind, draws, t)
      perc, seen = fusion.fuse(ego, msg, fuse_rsu, f.gate)
      m = perc.pos.shape[0]
      pad = jnp.zeros((m - n, 2))
      truth = Detections(jnp.concatenate([pos, pad]), jnp.concatenate([vel, pad]), jnp.zeros(m),
                         jnp.arange(m) < n)
      perc = jax.tree.map(lambda a, b: jnp.where(method == ORACLE, a, b), truth, perc)
      # planning constraints: RSU tracks the ego does not itself see (constraints are used only
      # when no RSU object is fused, so the perceived objects are then the ego's detections)
      sigma = jnp.sqrt(msg.var)
      c_valid = msg.valid & ~seen & constrain & (msg.vel[:, 0] > -1.0)   # not oncoming traffic
      c_pos = msg.pos - jnp.stack([2 * sigma, jnp.zeros_like(sigma)], -1)
      ob_p, gap_p, vl_p = planner.obstacles(x, v, perc.pos, perc.vel, perc.valid, idm.half_width)
      ob_c, gap_c, vl_c = planner.obstacles(x, v, c_pos, msg.vel, c_valid,
                                            idm.half_width + 2 * sigma)
      a = planner.acceleration(idm, v, jnp.concatenate([ob_p, ob_c]),
                               jnp.concatenate([gap_p, gap_c]), jnp.concatenate([vl_p, vl_c]))
      v_new = jnp.maximum(v + a * s.dt, 0.0)
      x_new = x + (v + v_new) / 2 * s.dt
      ped_t0 = trigger_pedestrians(world, x, v, now, ped_t0)
      # scoring this frame
      box = lambda p: ((p[:, 0] >= x - sc.roi_behind) & (p[:, 0] <= x + sc.roi_ahead)
                       & (jnp.abs(p[:, 1]) <= sc.roi_half_width))
      roi_perc = perc._replace(valid=perc.valid & box(perc.pos))
      tp, n_gt, n_perc, err = fusion.perception_counts(roi_perc, pos, box(pos), sc.match_gate)
      dxy = jnp.abs(pos - jnp.stack([x, 0.0]))
      reach = half + jnp.array(VEHICLE_HALF)          # the ego is a car
      collision = jnp.any((dxy[:, 0] < reach[:, 0]) & (dxy[:, 1] < reach[:, 1]))
      ahead = (pos[:, 0] > x) & (dxy[:, 1] < reach[:, 1])
      gap = dxy[:, 0] - reach[:, 0]
      near = jnp.any(ahead & ((gap < sc.near_gap) | ((v - vel[:, 0]) * sc.near_ttc > gap)))
      out = dict(covered=covered, used=used & covered, tp=tp, n_gt=n_gt, n_perc=n_perc, err=err,
                 collision=collision, near=near, x=x, v=v, mode=mode)
      if record:
        out.update(perc_pos=perc.pos, perc_valid=perc.valid, c_pos=c_pos, c_valid=c_valid,
                   true_pos=pos, latency=jnp.where(covered & ~lost, latency, jnp.nan))
      return (x_new, v_new, next_bad, arr, buf, kf, ped_t0), out

    kf = kalman.init_state(n)
    buf = jax.tree.map(lambda a: jnp.zeros((H,) + a.shape, a.dtype), kf.tracks)
    init = (jnp.float32(0.0), jnp.float32(s.ego_speed), nd.bad0, jnp.full((H,), jnp.inf), buf, kf,
            jnp.full((s.n_pedestrians,), jnp.inf))
    return jax.lax.scan(step, init, jnp.arange(s.frames))[1]

  return jax.vmap(run)(jnp.arange(ORACLE + 1))


def summarize_episode(o: dict) -> dict:
  """Per-method sums and flags of one episode's frames ([M, T] -> [M]); the oracle is the last."""
  collided = o["collision"].any(-1)
  return dict(
      covered=o["covered"].sum(-1), used=o["used"].sum(-1), tp=o["tp"].sum(-1),
      n_gt=o["n_gt"].sum(-1), n_perc=o["n_perc"].sum(-1), err=o["err"].sum(-1),
      collided=collided, near_miss=o["near"].any(-1) & ~collided,
      disp=jnp.abs(o["x"] - o["x"][ORACLE]).mean(-1),
      mode_frames=jnp.stack([(o["mode"] == i).sum(-1) for i in range(len(MODES))], -1))


@functools.partial(jax.jit, static_argnames=("s", "f", "idm", "sc", "use_trace"))
def run_batch(keys, ln: network.Link, trace: network.Trace, s: Scenario, f: Fusion,
              idm: planner.IDM, sc: Scoring, use_trace: bool) -> dict:
  """Episode summaries [E, M] for a batch of episode keys [E]."""
  return jax.vmap(lambda k: summarize_episode(episode(k, ln, trace, s, f, idm, sc, use_trace)))(keys)


@functools.partial(jax.jit, static_argnames=("s", "f", "idm", "sc", "use_trace"))
def record_episode(key, ln, trace, s: Scenario, f: Fusion, idm: planner.IDM, sc: Scoring,
                   use_trace: bool) -> dict:
  """One episode frame by frame, with perceived objects and constraints (for the animation)."""
  return episode(key, ln, trace, s, f, idm, sc, use_trace, record=True)


def no_trace() -> network.Trace:
  return network.Trace(jnp.zeros(2), jnp.zeros(2), jnp.zeros(2, bool), jnp.float32(1.0))
