"""The video evaluator: Fréchet distance (FID/FVD, Unterthiner 2018 §3), motion estimation by
circular cross-correlation, caption accuracy and the clip classifier's interface."""
import numpy as np
import pytest
import scipy.linalg
from flax import nnx

from jaxpapers.cogvideo import evaluate, world
from jaxpapers.core.errors import DataError


def test_frechet_distance_of_1d_gaussians_is_mean_and_std_gap():
  a = np.array([[-1.0], [1.0]])        # mean 0, unbiased variance 2
  b = np.array([[2.0], [6.0]])         # mean 4, unbiased variance 8
  # (0 - 4)^2 + (sqrt 2 - sqrt 8)^2 = 16 + 2
  assert evaluate.frechet_distance(a, b) == pytest.approx(18.0, rel=1e-12)


def test_frechet_distance_matches_scipy_sqrtm_formula_and_is_zero_on_identical_sets():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(60, 5)) @ rng.normal(size=(5, 5))
  b = rng.normal(size=(80, 5)) @ rng.normal(size=(5, 5)) + 0.5
  mu_a, mu_b = a.mean(0), b.mean(0)
  s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  ref = (np.sum((mu_a - mu_b) ** 2) + np.trace(s_a + s_b)
         - 2 * np.trace(scipy.linalg.sqrtm(s_a @ s_b).real))
  assert evaluate.frechet_distance(a, b) == pytest.approx(ref, rel=1e-9)
  assert abs(evaluate.frechet_distance(a, a)) < 1e-9 * np.trace(s_a)
  # a shift by (3, 4, 0, 0, 0) keeps the covariance: distance 3^2 + 4^2
  assert evaluate.frechet_distance(a, a + [3, 4, 0, 0, 0]) == pytest.approx(25.0, rel=1e-9)


def test_frechet_distance_rejects_bad_features():
  with pytest.raises(DataError, match="n >= 2 samples"):
    evaluate.frechet_distance(np.zeros((1, 3)), np.zeros((4, 3)))
  with pytest.raises(DataError, match="differ in width: 3 vs 2"):
    evaluate.frechet_distance(np.ones((4, 3)), np.ones((4, 2)))


@pytest.mark.parametrize("fps", [8, 4])
def test_motion_estimate_is_exact_on_real_clips(fps):
  clips = world.sample_clips(np.random.default_rng(7), "all", 48, 5, fps, images="test")
  interval = world.FRAME_RATES[fps]
  m = evaluate.estimate_motion(clips["frames"], interval)
  px = np.array([1, 2])[clips["attrs"][:, 2]]
  vec = np.array([(0, -1), (0, 1), (-1, 0), (1, 0)])[clips["attrs"][:, 1]]   # (dy, dx)
  np.testing.assert_array_equal(m["dy"], vec[:, 0] * px * interval)
  np.testing.assert_array_equal(m["dx"], vec[:, 1] * px * interval)
  np.testing.assert_array_equal(m["speed_px_per_tick"], px)
  np.testing.assert_array_equal(m["direction"], clips["attrs"][:, 1])
  np.testing.assert_array_equal(m["speed"], clips["attrs"][:, 2])


def test_motion_estimate_hand_built_wrap_and_still():
  frame = np.zeros((16, 16))
  frame[3, 1], frame[4, 1] = 1.0, 0.5
  moving = np.stack([np.roll(frame, -3 * t, axis=1) for t in range(4)])  # 3 px left, wraps
  still = np.stack([frame] * 4)
  m = evaluate.estimate_motion(np.stack([moving, still]), 2)
  np.testing.assert_array_equal(m["dx"], [-3, 0])
  np.testing.assert_array_equal(m["dy"], [0, 0])
  np.testing.assert_array_equal(m["speed_px_per_tick"], [1.5, 0.0])
  np.testing.assert_array_equal(m["direction"], [0, -1])     # left; none
  with pytest.raises(DataError, match="T >= 2"):
    evaluate.estimate_motion(np.zeros((2, 1, 16, 16)), 1)


def test_caption_accuracy_hand_built():
  true = np.array([[0, 1, 0], [1, 2, 1], [2, 3, 0], [3, 0, 1]])
  pred = np.array([[0, 1, 0], [1, 0, 1], [0, 3, 1], [3, 0, 1]])
  acc = evaluate.caption_accuracy(pred, true)
  assert acc == dict(object=0.75, direction=0.75, speed=0.75, mean=0.75, all=0.5)
  with pytest.raises(DataError, match=r"\[n, 3\]"):
    evaluate.caption_accuracy(pred[:, :2], true[:, :2])


def test_classifier_shapes():
  """(Training it is exercised by the cogvideo/t2v end-to-end test.)"""
  clf = evaluate.ClipClassifier(num_frames=3, channels=4, features=8, rngs=nnx.Rngs(0))
  clips = world.sample_clips(np.random.default_rng(0), "all", 5, 3, 8)
  f = evaluate.features(clf, clips["frames"])
  p = evaluate.predict(clf, clips["frames"])
  assert f.shape == (5, 8) and f.dtype == np.float32 and (f >= 0).all()
  assert p.shape == (5, 3) and p.dtype == np.int32
  assert (p.max(0) < [4, 4, 2]).all() and (p >= 0).all()
  with pytest.raises(DataError, match=r"clips must be \[n, 3, 16, 16\].*got \(5, 2, 16, 16\)"):
    evaluate.predict(clf, clips["frames"][:, :2])
