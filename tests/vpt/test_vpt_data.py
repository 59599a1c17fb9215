"""Frame windowing and action alignment (VPT §2.1): the IDM's target for frame t is a_t, the
action between frames t and t+1; checked on a hand-made sequence whose frame t shows t."""
import numpy as np
import pytest

from jaxpapers.core.errors import DataError
from jaxpapers.vpt.data import (Episodes, WindowBatches, check_video, idm_targets, label_windows,
                                policy_targets, split)

SHAPE = (63, 63, 3)


def counting_episodes(n=2, t=12, dead_after=None):
  """Frame t of episode e is filled with the value 10*e + t; action a_t = (t + e) % 17."""
  frames = np.zeros((n, t + 1) + SHAPE, np.uint8)
  for e in range(n):
    for s in range(t + 1):
      frames[e, s] = 10 * e + s
  actions = (np.arange(t)[None, :] + np.arange(n)[:, None]) % 17
  valid = np.ones((n, t), bool)
  if dead_after is not None:
    valid[:, dead_after:] = False
  return Episodes(frames, actions.astype(np.int32), valid)


def test_idm_target_of_frame_t_is_the_action_from_t_to_t_plus_1():
  y, w = idm_targets(np.array([[5, 6, 7, 8, 9]]), np.ones((1, 5), bool), np.array([1]), 3)
  np.testing.assert_array_equal(y, [[6, 7, 8]])
  np.testing.assert_array_equal(w, [[1, 1, 0]])     # the last frame of a window has no next frame


def test_policy_target_of_position_t_is_the_action_taken_at_t():
  y, w = policy_targets(np.array([[5, 6, 7, 8, 9]]), np.array([[1, 1, 1, 0, 0]], bool), np.array([2]), 3)
  np.testing.assert_array_equal(y, [[7, 8, 9]])
  np.testing.assert_array_equal(w, [[1, 0, 0]])     # steps after the episode ended do not count


def test_the_frame_after_the_last_action_has_no_policy_target():
  """A window reaching frame T (the frame after a_{T-1}) of an episode that did not end: that
  position has no action to imitate (it was trained on a_{T-1} before)."""
  y, w = policy_targets(np.array([[5, 6, 7, 8, 9]]), np.ones((1, 5), bool), np.array([3]), 3)
  np.testing.assert_array_equal(w, [[1, 1, 0]])
  np.testing.assert_array_equal(y[w > 0], [8, 9])


def test_null_actions_dropped_from_policy_targets_on_request():
  y, w = policy_targets(np.array([[0, 6, 0, 8]]), np.ones((1, 4), bool), np.array([0]), 4,
                        drop_null=True)
  np.testing.assert_array_equal(w, [[0, 1, 0, 1]])
  _, w = policy_targets(np.array([[0, 6, 0, 8]]), np.ones((1, 4), bool), np.array([0]), 4)
  np.testing.assert_array_equal(w, [[1, 1, 1, 1]])


def test_policy_burn_in_is_context_except_at_the_episode_start():
  """The first `burn_in` positions of a window depend on frames before it, which the acting
  policy's memory would hold: no target there, unless the window starts the episode."""
  actions, valid = np.arange(1, 11)[None].repeat(2, 0), np.ones((2, 10), bool)
  _, w = policy_targets(actions, valid, np.array([0, 3]), 5, burn_in=2)
  np.testing.assert_array_equal(w, [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
  with pytest.raises(DataError, match="no target after a burn-in of 4 frames"):
    WindowBatches(counting_episodes(dead_after=None), window=4, batch=2, kind="policy", seed=0,
                  burn_in=4)


@pytest.mark.parametrize("dead_after", [9, None])
@pytest.mark.parametrize("kind", ["idm", "policy"])
def test_window_batches_align_frames_and_actions(kind, dead_after):
  """Every weighted target, including those of windows that reach the episode's last frame
  (dead_after=None: no episode ends, so nothing masks the boundary), is the action from its frame
  to the next."""
  ep = counting_episodes(dead_after=dead_after)
  b = WindowBatches(ep, window=4, batch=256, kind=kind, seed=0)(step=3)
  assert b["frames"].shape == (256, 4) + SHAPE and b["frames"].dtype == np.uint8
  reaches_end = 0
  for frames, y, w in zip(b["frames"], b["labels"], b["weights"]):
    e, t0 = divmod(int(frames[0, 0, 0, 0]), 10)
    np.testing.assert_array_equal(frames[:, 0, 0, 0], 10 * e + t0 + np.arange(4))   # consecutive frames
    for i in range(4):
      t = t0 + i
      if w[i]:
        assert y[i] == (t + e) % 17            # frame t's target: the action between t and t+1
        assert t < (dead_after or 12)           # only steps before the episode ended
      reaches_end += t == 12
    if kind == "idm":
      assert w[-1] == 0
  assert dead_after or reaches_end          # the boundary was drawn (and had weight 0)
  again = WindowBatches(ep, window=4, batch=256, kind=kind, seed=0)(step=3)
  np.testing.assert_array_equal(again["labels"], b["labels"])          # deterministic in (seed, step)


def test_label_windows_cover_every_action_with_context():
  starts, source = label_windows(num_frames=30, window=8)
  assert starts[0] == 0 and starts[-1] == 30 - 8
  for t in range(29):
    s = starts[source[t]]
    assert s <= t and t + 1 <= s + 8 - 1       # frames t and t+1 are both inside the window
  # an action in the middle of the video is not read from a window's edge
  s = starts[source[15]]
  assert min(15 - s, s + 6 - 15) >= 2


def test_short_video_and_wrong_frames_fail_clearly():
  with pytest.raises(DataError, match="shorter than the IDM window of 8"):
    label_windows(num_frames=5, window=8)
  with pytest.raises(DataError, match="shorter than the 8 needed"):
    check_video(np.zeros((5,) + SHAPE, np.uint8), SHAPE, min_frames=8)
  with pytest.raises(DataError, match="frames must be"):
    check_video(np.zeros((10, 64, 64, 3), np.uint8), SHAPE, min_frames=8)
  with pytest.raises(DataError, match="do not align"):
    Episodes(np.zeros((1, 4) + SHAPE, np.uint8), np.zeros((1, 4), np.int32), np.ones((1, 4), bool))


def test_split_keeps_labelled_and_unlabelled_apart():
  ep = counting_episodes(n=10)
  lab, unl = split(ep, 0.2, seed=0)
  assert len(lab) == 2 and len(unl) == 8
  ids = sorted([int(f[0, 0, 0, 0]) // 10 for f in lab.frames] + [int(f[0, 0, 0, 0]) // 10 for f in unl.frames])
  assert ids == list(range(10))
  with pytest.raises(DataError, match="labelled_fraction"):
    split(ep, 1.5, seed=0)
