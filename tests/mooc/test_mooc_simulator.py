"""The student simulator's statistics match its parameters: IRT correctness with guessing and
slipping, the dropout hazard, prerequisites gating learning, learning styles, exercise rate; the
world; the token layout."""
import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from jaxpapers.core.errors import ConfigError
from jaxpapers.mooc import simulator as sim
from jaxpapers.mooc.world import WorldConfig, make_world

W = WorldConfig(n_courses=6, concepts_per_course=8)
S = sim.StudentConfig(steps=24)


@pytest.fixture(scope="module")
def run():
  world = make_world(W, 3)
  return world, sim.simulate(world, S, 6000, 3, chunk=3000)


def _z_ok(observed, expected, var, z=4.5):
  return abs(observed - expected) <= z * np.sqrt(var) + 1e-9


def test_world_structure():
  w = make_world(W, 0)
  assert w.n_courses == 6 and w.n_concepts == 48 and w.n_exercises == 48 * 3
  # prerequisites: earlier concepts of the course, or another course's first concepts (cross)
  for k in range(w.n_concepts):
    for j in w.prereq[k][w.prereq[k] >= 0]:
      same = w.concept_course[j] == w.concept_course[k]
      assert (same and j < k) or not same
  # a course's videos are contiguous and chained by video_next, ending with -1
  for c in range(w.n_courses):
    vids = np.nonzero(w.video_course == c)[0]
    assert w.course_first_video[c] == vids[0]
    assert list(w.video_next[vids[:-1]]) == list(vids[1:]) and w.video_next[vids[-1]] == -1
  assert all(t.strip() for t in w.video_text) and 0 < w.video_quality.min() < w.video_quality.max() < 1
  assert np.array_equal(make_world(W, 0).video_quality, w.video_quality)
  assert not np.array_equal(make_world(W, 1).video_quality, w.video_quality)


def test_correctness_is_irt_with_guess_and_slip(run):
  world, tr = run
  ans = tr["active"] & tr["has_exercise"]
  x, skill = tr["exercise"][ans], tr["skill_at_answer"][ans]
  p = tr["p_correct"][ans]
  expect = S.guess + (1 - S.guess - S.slip) / (1 + np.exp(-1.7 * (skill - world.exercise_difficulty[x])))
  np.testing.assert_allclose(p, expect, rtol=1e-5)
  y = tr["correct"][ans]
  for lo, hi in [(0, 0.3), (0.3, 0.5), (0.5, 0.7), (0.7, 1.0)]:
    sel = (p >= lo) & (p < hi)
    assert sel.sum() > 300
    assert _z_ok(y[sel].mean(), p[sel].mean(), (p[sel] * (1 - p[sel])).sum() / sel.sum() ** 2)
  gap = skill - world.exercise_difficulty[x]
  # far below an exercise's difficulty a student guesses; far above, only slips
  low, high = gap < -2.5, gap > 2.5
  assert low.sum() > 100 and high.sum() > 100
  assert _z_ok(y[low].mean(), S.guess, S.guess * (1 - S.guess) / low.sum(), z=6) or y[low].mean() < S.guess + 0.05
  assert abs(y[high].mean() - (1 - S.slip)) < 0.05
  # harder exercises are answered correctly less often at equal skill
  mid = np.abs(skill) < 0.5
  hard = world.exercise_difficulty[x] > np.median(world.exercise_difficulty)
  assert y[mid & hard].mean() < y[mid & ~hard].mean() - 0.05
  assert _z_ok(ans.sum() / tr["active"].sum(), S.p_exercise, S.p_exercise * (1 - S.p_exercise) / tr["active"].sum())


def test_dropout_follows_the_hazard(run):
  _, tr = run
  act = tr["active"]
  seen = act[:, :-1]                    # a drop drawn after the last step is not observed
  h = tr["hazard"][:, :-1][seen]
  dropped = ~act[:, -1]
  assert _z_ok(dropped.sum(), h.sum(), (h * (1 - h)).sum())
  assert 0.2 < dropped.mean() < 0.7
  # failing students drop out more: hazard rises with recent failures (h_fail > 0)
  logs = sim.to_logs(tr, 0)
  assert np.array_equal(logs.dropped, dropped)


def test_prerequisites_gate_learning(run):
  world, tr = run
  a = tr["active"]
  q = world.video_quality[tr["video"]]
  np.testing.assert_allclose(tr["gain"][a], (S.learn_rate * q * tr["completion"] * tr["ready"])[a],
                             rtol=1e-5)
  low, high = a & (tr["ready"] < 0.2), a & (tr["ready"] > 0.8)
  assert low.sum() > 500 and high.sum() > 500
  assert tr["gain"][low].mean() < 0.5 * tr["gain"][high].mean()
  assert tr["completion"][low].mean() < tr["completion"][high].mean()


def test_readiness_is_the_least_prerequisite_mastery():
  skill = jnp.array([[2.0], [0.0], [-2.0]])           # [K=3, B=1]
  diff = jnp.zeros(3)
  prereq = jnp.array([[-1, -1, -1], [0, -1, -1], [0, 2, -1]])
  r = np.asarray(sim.readiness(skill, diff, prereq, 1.0))[:, 0]
  m = 1 / (1 + np.exp(-np.array([2.0, 0.0, -2.0])))
  np.testing.assert_allclose(r, [1.0, m[0], min(m[0], m[2])], rtol=1e-6)


def test_learning_styles(run):
  _, tr = run
  seq = tr["sequential"]
  later = tr["active"].copy()
  later[:, 0] = False                  # step 0 never jumps
  for who, p in ((seq, S.p_jump_sequential), (~seq, S.p_jump)):
    m = later & who[:, None]
    assert _z_ok(tr["jumped"][m].mean(), p, p * (1 - p) / m.sum())
  assert _z_ok(seq.mean(), S.p_sequential, S.p_sequential * (1 - S.p_sequential) / len(seq))


def test_tokens_of_a_hand_trace():
  tr = dict(video=np.array([[3, 4, 5]]), exercise=np.array([[0, 1, 2]]),
            completion=np.array([[0.1, 0.99, 0.6]]), correct=np.array([[True, False, True]]),
            active=np.array([[True, True, False]]), has_exercise=np.array([[False, True, True]]),
            sequential=np.array([True]))
  lg = sim.to_logs(tr, n_videos=10)
  assert lg.length.tolist() == [3] and lg.dropped.tolist() == [True]
  assert lg.items[0, :3].tolist() == [3, 4, 11] and lg.items[0, 3:].tolist() == [-1, -1, -1]
  assert lg.responses[0, :3].tolist() == [0, 3, sim.WRONG]


def test_seeded_and_validated():
  world = make_world(W, 0)
  a = sim.simulate(world, S, 64, 5)
  b = sim.simulate(world, S, 64, 5)
  c = sim.simulate(world, S, 64, 6)
  assert all(np.array_equal(a[k], b[k]) for k in a)
  assert not np.array_equal(a["video"], c["video"])
  with pytest.raises(ConfigError, match="guess \\+ slip"):
    sim.validate(dataclasses.replace(S, guess=0.6, slip=0.5))
  with pytest.raises(ConfigError, match="n_courses"):
    make_world(dataclasses.replace(W, n_courses=10_000), 0)
