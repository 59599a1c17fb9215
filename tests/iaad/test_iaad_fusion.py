"""Association, fusion, perception scoring and the RSU's Kalman tracker on hand cases."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_close_scaled
from jaxpapers.iaad import fusion, kalman
from jaxpapers.iaad.scenario import Detections


def _assoc(a, b, gate, av=None, bv=None):
  a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  av = jnp.ones(len(a), bool) if av is None else jnp.asarray(av)
  bv = jnp.ones(len(b), bool) if bv is None else jnp.asarray(bv)
  return np.asarray(fusion.associate(a, av, b, bv, gate)).tolist()


def test_association_is_greedy_not_optimal():
  a = [(0.0, 0.0), (1.0, 0.0)]
  b = [(0.6, 0.0), (2.0, 0.0)]
  # the closest pair (a1, b0: 0.4 m) goes first; the optimal assignment (a0-b0, a1-b1) is not taken
  assert _assoc(a, b, gate=1.5) == [-1, 0]
  assert _assoc(a, b, gate=2.5) == [1, 0]
  assert _assoc(a, b, gate=0.3) == [-1, -1]                           # nothing within the gate
  assert _assoc(a, b, gate=2.5, bv=[False, True]) == [-1, 1]          # invalid b0 ignored
  assert _assoc(a, b, gate=2.5, av=[True, False]) == [0, -1]
  assert _assoc([(0.0, 0.0)], [(1.0, 0.0), (-1.0, 0.0)], gate=2.0) == [0]   # tie: lower index


def _greedy_reference(a, b, gate):
  d = np.linalg.norm(a[:, None] - b[None], axis=-1)
  match = [-1] * len(a)
  pairs = sorted((d[i, j], i, j) for i, j in itertools.product(range(len(a)), range(len(b))))
  used_a, used_b = set(), set()
  for dist, i, j in pairs:
    if dist <= gate and i not in used_a and j not in used_b:
      match[i] = j
      used_a.add(i)
      used_b.add(j)
  return match


def test_association_rounds_equal_sequential_greedy():
  rng = np.random.default_rng(0)
  assoc = jax.jit(jax.vmap(fusion.associate, in_axes=(0, 0, 0, 0, None)), static_argnums=4)
  cases = []
  for _ in range(300):        # padded to 8 x 8 with validity masks: one compiled program
    na, nb = rng.integers(1, 9, size=2)
    a = rng.uniform(0, 6, (8, 2)).astype(np.float32)
    b = (a[rng.integers(0, na, 8)] + rng.normal(0, 0.8, (8, 2))).astype(np.float32)
    cases.append((a, np.arange(8) < na, b, np.arange(8) < nb))
  a, av, b, bv = (np.stack(x) for x in zip(*cases))
  got = np.asarray(assoc(a, av, b, bv, 1.5))
  for k, (na, nb) in enumerate(zip(av.sum(1), bv.sum(1))):
    want = _greedy_reference(a[k, :na], b[k, :nb], 1.5)
    assert got[k, :na].tolist() == want and (got[k, na:] == -1).all()


def test_fuse_averages_matched_pairs_and_keeps_the_rest():
  ego = Detections(jnp.array([[10.0, 0.0], [30.0, 2.0]]), jnp.array([[1.0, 0.0], [0.0, 0.0]]),
                   jnp.array([0.04, 0.04]), jnp.array([True, True]))
  rsu = Detections(jnp.array([[10.3, 0.0], [50.0, -3.0]]), jnp.array([[2.0, 0.0], [0.0, 1.0]]),
                   jnp.array([0.12, 0.09]), jnp.array([True, True]))
  out, seen = fusion.fuse(ego, rsu, True, gate=2.0)
  w_e, w_r = 1 / 0.04, 1 / 0.12
  assert_close_scaled(out.pos[0, 0], (10.0 * w_e + 10.3 * w_r) / (w_e + w_r), 1e-5)
  assert_close_scaled(out.vel[0, 0], (1.0 * w_e + 2.0 * w_r) / (w_e + w_r), 1e-5)
  assert_close_scaled(out.var[0], 1 / (w_e + w_r), 1e-5)
  assert np.asarray(out.valid).tolist() == [True, True, False, True]   # RSU's partner folded in
  assert_close_scaled(out.pos[3], jnp.array([50.0, -3.0]), 1e-5)
  alone, seen_alone = fusion.fuse(ego, rsu, False, gate=2.0)
  assert np.asarray(alone.valid).tolist() == [True, True, False, False]
  assert_close_scaled(alone.pos[:2], ego.pos, 1e-5)
  # which RSU objects the ego sees is reported whether or not they are fused
  assert np.asarray(seen).tolist() == np.asarray(seen_alone).tolist() == [True, False]


def test_perception_counts():
  truth = jnp.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]])
  perc = Detections(jnp.array([[0.5, 0.0], [10.0, 3.0], [40.0, 0.0], [20.0, 1.0]]),
                    jnp.zeros((4, 2)), jnp.ones(4), jnp.array([True, True, True, False]))
  tp, n_gt, n_perc, err = fusion.perception_counts(perc, truth, jnp.array([True, True, True]), 2.0)
  assert (int(tp), int(n_gt), int(n_perc)) == (1, 3, 3)    # 10,3 is beyond the gate; 20,1 invalid
  assert_close_scaled(err, 0.5, 1e-5)


def test_kalman_compensates_a_constant_velocity_object_exactly():
  T, dt = 30, 0.1
  p0, v = jnp.array([5.0, -3.0]), jnp.array([12.0, 1.5])
  truth = p0 + v * (jnp.arange(T) * dt)[:, None]
  tr = kalman.track(truth[:, None, :], jnp.ones((T, 1), bool), dt, meas_sigma=1e-3,
                    accel_sigma=1e-3, confirm_hits=3, drop_misses=5)
  last = jax.tree.map(lambda a: a[-1], tr)
  assert_close_scaled(last.vel[0], v, 1e-3)
  for age in (0.1, 0.5, 2.0):
    pos, var = kalman.compensate(last, jnp.float32(age), dt, accel_sigma=1e-3)
    assert_close_scaled(pos[0], truth[-1] + v * age, 1e-4)
    assert float(var[0]) > float(last.pp[0])                  # uncertainty grows with age
  # given the exact state, compensation is the CV motion itself
  exact = kalman.Tracks(p0[None], v[None], jnp.zeros(1), jnp.zeros(1), jnp.zeros(1),
                        jnp.ones(1, bool))
  pos, var = kalman.compensate(exact, jnp.float32(0.7), 0.1, accel_sigma=0.0)
  assert_close_scaled(pos[0], p0 + 0.7 * v, 1e-5)
  assert float(var[0]) == 0.0


def test_tracks_are_confirmed_then_dropped():
  det = jnp.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0], bool)[:, None]
  z = jnp.zeros((det.shape[0], 1, 2))
  tr = kalman.track(z, det, 0.1, 0.3, 1.0, confirm_hits=3, drop_misses=5)
  # published from the 3rd detection, coasting through 5 misses, dropped at the 6th
  assert np.asarray(tr.valid[:, 0]).tolist() == [False, False, True, True, True, True, True, True,
                                                 True, False, False]


@pytest.mark.parametrize("fresh", [True, False])
def test_fuse_ignores_invalid_ego_detections(fresh):
  ego = Detections(jnp.array([[0.0, 0.0]]), jnp.zeros((1, 2)), jnp.ones(1), jnp.array([fresh]))
  rsu = Detections(jnp.array([[0.1, 0.0]]), jnp.zeros((1, 2)), jnp.ones(1), jnp.array([True]))
  out, _ = fusion.fuse(ego, rsu, True, gate=1.0)
  assert np.asarray(out.valid).tolist() == ([True, False] if fresh else [False, True])


def _reference_filter(z, det, dt, r, q, confirm, drop):
  """The textbook 4-state matrix Kalman filter, one object, in numpy (float64)."""
  f = np.eye(4)
  f[0, 2] = f[1, 3] = dt
  g = np.array([[dt ** 2 / 2, 0], [0, dt ** 2 / 2], [dt, 0], [0, dt]])
  qm = q * g @ g.T
  h = np.eye(2, 4)
  x, p, hits, misses, alive, out = np.zeros(4), np.eye(4), 0, 0, False, []
  for zt, d in zip(z, det):
    x, p = f @ x, f @ p @ f.T + qm
    if d and alive:
      k = p @ h.T @ np.linalg.inv(h @ p @ h.T + r * np.eye(2))
      x, p = x + k @ (zt - h @ x), (np.eye(4) - k @ h) @ p
      hits += 1
    elif d:
      x, p = np.r_[zt, 0, 0], np.diag([r, r, kalman.INIT_VEL_SIGMA ** 2, kalman.INIT_VEL_SIGMA ** 2])
      hits = 1
    misses = 0 if d else misses + 1
    alive = bool(d) or (alive and misses <= drop)
    hits = hits if alive else 0
    out.append((x.copy(), p.copy(), alive and hits >= confirm))
  return out


def test_kalman_filter_equals_the_matrix_filter():
  rng = np.random.default_rng(1)
  T, dt, sigma, accel = 60, 0.1, 0.3, 3.0
  truth = np.cumsum(rng.normal(0, 0.3, (T, 2)), axis=0) + np.linspace(0, 1, T)[:, None] * 8
  det = rng.uniform(size=T) < 0.8
  det[20:27] = False                                         # a drop, then a fresh track
  z = truth + rng.normal(0, sigma, (T, 2))
  tr = kalman.track(jnp.asarray(z[:, None], jnp.float32), jnp.asarray(det[:, None]), dt, sigma,
                    accel, 3, 5)
  ref = _reference_filter(z, det, dt, sigma ** 2, accel ** 2, 3, 5)
  for t, (x, p, valid) in enumerate(ref):
    assert bool(tr.valid[t, 0]) == valid, t
    if not valid:
      continue
    assert_close_scaled(np.asarray(tr.pos[t, 0]), x[:2], 1e-4)
    assert_close_scaled(np.asarray(tr.vel[t, 0]), x[2:], 1e-3)
    got = np.array([tr.pp[t, 0], tr.pv[t, 0], tr.vv[t, 0]])
    assert_close_scaled(got, np.array([p[0, 0], p[0, 2], p[2, 2]]), 1e-4)
    assert abs(p[0, 0] - p[1, 1]) < 1e-12 and abs(p[0, 1]) < 1e-12   # the axes share it


def test_compensation_variance_is_the_filters_own_prediction():
  pp, pv, vv = jnp.float32(0.05), jnp.float32(0.08), jnp.float32(0.4)
  step = (pp, pv, vv)
  for n in range(1, 31):
    step = kalman.predict_cov(*step, 0.1, 3.0)
    closed = kalman.propagate_cov(pp, pv, vv, jnp.float32(n * 0.1), 0.1, 3.0)
    assert_close_scaled(jnp.stack(closed), jnp.stack(step), 1e-5)
