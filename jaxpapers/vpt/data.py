"""Episodes, the contractor/unlabelled split, and the training windows of the IDM and the policy.

Alignment (VPT §2.1): frame t is what the player saw before action a_t; a_t takes the game from
frame t to frame t+1. So the IDM's target at window position i is a_{s+i}, defined for
i < W-1 (the last frame of a window has no next frame); the causal policy's target at position i
is the same a_{s+i}, predicted from frames s..s+i only."""
from __future__ import annotations

import dataclasses

import numpy as np

from jaxpapers.core.errors import DataError
from jaxpapers.vpt.env import NOOP, Rollout


@dataclasses.dataclass
class Episodes:
  """Episode-major data: frames [N, T+1, H, W, 3] uint8, actions [N, T], valid [N, T] (the
  episode had not ended before the step). `labelled` marks the "contractor" episodes whose
  actions training may read; the others' actions are hidden from every learner except the
  upper-bound `bc_true`."""
  frames: np.ndarray
  actions: np.ndarray
  valid: np.ndarray

  def __post_init__(self):
    check_video(self.frames, self.frames.shape[2:], min_frames=2, name="episode frames")
    n, t = self.actions.shape
    if self.frames.shape[:2] != (n, t + 1) or self.valid.shape != (n, t):
      raise DataError(f"episodes: frames {self.frames.shape[:2]}, actions {(n, t)} and valid "
                      f"{self.valid.shape} do not align (frames must have one more step)")

  @classmethod
  def from_rollout(cls, r: Rollout) -> "Episodes":
    return cls(frames=np.ascontiguousarray(np.swapaxes(r.frames, 0, 1)),
               actions=np.ascontiguousarray(r.actions.T), valid=np.ascontiguousarray(r.alive.T))

  def __len__(self) -> int:
    return self.actions.shape[0]

  @property
  def steps(self) -> int:
    return int(self.valid.sum())

  def take(self, idx) -> "Episodes":
    idx = np.asarray(idx)
    return Episodes(self.frames[idx], self.actions[idx], self.valid[idx])

  def relabel(self, actions: np.ndarray) -> "Episodes":
    if actions.shape != self.actions.shape:
      raise DataError(f"labels {actions.shape} do not match the episodes' actions {self.actions.shape}")
    return Episodes(self.frames, actions.astype(np.int32), self.valid)

  @staticmethod
  def concat(parts) -> "Episodes":
    return Episodes(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("frames", "actions", "valid")))


def check_video(frames: np.ndarray, frame_shape, min_frames: int, name: str = "video") -> None:
  """One clear error for a video of the wrong shape or shorter than `min_frames`.
  frames: [..., T, H, W, C]."""
  frame_shape = tuple(frame_shape)
  if frames.ndim < 4 or tuple(frames.shape[-3:]) != frame_shape:
    raise DataError(f"{name}: frames must be [..., time, {', '.join(map(str, frame_shape))}], "
                    f"got {tuple(frames.shape)}")
  if frames.shape[-4] < min_frames:
    raise DataError(f"{name} has {frames.shape[-4]} frames, shorter than the {min_frames} needed "
                    f"(the IDM window)")


def split(episodes: Episodes, labelled_fraction: float, seed: int) -> tuple[Episodes, Episodes]:
  """(labelled, unlabelled) by episode: a `labelled_fraction` share of the episodes (>= 1) plays
  VPT's contractor data; the rest is the unlabelled video."""
  if not 0.0 < labelled_fraction < 1.0:
    raise DataError(f"labelled_fraction must be in (0, 1), got {labelled_fraction}")
  n = len(episodes)
  k = max(1, int(round(labelled_fraction * n)))
  if k >= n:
    raise DataError(f"{n} episodes leave none unlabelled at labelled_fraction={labelled_fraction}")
  perm = np.random.default_rng([seed, 11]).permutation(n)
  return episodes.take(np.sort(perm[:k])), episodes.take(np.sort(perm[k:]))


def idm_targets(actions: np.ndarray, valid: np.ndarray, start: np.ndarray, window: int):
  """Targets and weights [B, W] of IDM windows starting at `start` [B] of episodes with
  `actions`/`valid` [B, T]: position i is a_{s+i}; the window's last position (no next frame)
  and steps after the episode ended have weight 0."""
  b, t = actions.shape
  pos = start[:, None] + np.arange(window)[None, :]
  inside = pos < t
  p = np.minimum(pos, t - 1)
  y = np.take_along_axis(actions, p, 1)
  w = np.take_along_axis(valid, p, 1) & inside
  w[:, -1] = False
  return y.astype(np.int32), w.astype(np.float32)


def policy_targets(actions: np.ndarray, valid: np.ndarray, start: np.ndarray, window: int,
                   drop_null: bool = False, burn_in: int = 0):
  """Targets and weights [B, W] of the causal policy: position i (frames s..s+i) is a_{s+i}. A
  window may reach frame T, the frame after the last action: it has no action, so weight 0 (as
  steps after the episode ended). `drop_null`: no-op targets get weight 0 too (VPT's BC data
  loader drops null actions, App. D). `burn_in`: the first `burn_in` positions of a window that
  does not start the episode get weight 0: their output depends on frames before the window
  (Policy.burn_in), so only positions that see what the acting policy's memory holds are trained
  (as R2D2's burn-in; VPT instead carries the memory from the previous chunk of the episode)."""
  b, t = actions.shape
  pos = start[:, None] + np.arange(window)[None, :]
  inside = pos < t
  p = np.minimum(pos, t - 1)
  y = np.take_along_axis(actions, p, 1)
  w = np.take_along_axis(valid, p, 1) & inside
  if drop_null:
    w &= y != NOOP
  w[:, :burn_in] &= (start == 0)[:, None]
  return y.astype(np.int32), w.astype(np.float32)


class WindowBatches:
  """Random windows of `window` frames, `get_batch(step)` for `core.train.train`: frames
  [B, W, H, W', 3] uint8, labels [B, W], weights [B, W]. `kind` is "idm" or "policy" (which
  positions are targets, see idm_targets/policy_targets; `drop_null` and `burn_in` for the
  policy). Windows
  start where their first step is valid; deterministic in (seed, step), so a resumed run sees the
  same data."""

  def __init__(self, episodes: Episodes, window: int, batch: int, kind: str, seed: int,
               drop_null: bool = False, burn_in: int = 0):
    if kind not in ("idm", "policy"):
      raise ValueError(kind)
    t = episodes.actions.shape[1]
    check_video(episodes.frames, episodes.frames.shape[2:], min_frames=window, name="training episodes")
    last = t + 1 - window                                   # last start with a full window
    starts = [(e, s) for e in range(len(episodes)) for s in range(last + 1) if episodes.valid[e, s]]
    if not starts:
      raise DataError("no training window has a valid first step")
    self.ep, self.starts = episodes, np.array(starts, np.int64)
    self.window, self.batch, self.kind, self.seed = window, batch, kind, seed
    self.drop_null, self.burn_in = drop_null, burn_in
    if kind == "policy" and burn_in >= window:
      raise DataError(f"policy windows of {window} frames leave no target after a burn-in of "
                      f"{burn_in} frames (layers x (memory - 1)): make the window longer")

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([self.seed, 3, step])
    pick = self.starts[rng.integers(len(self.starts), size=self.batch)]
    e, s = pick[:, 0], pick[:, 1]
    idx = s[:, None] + np.arange(self.window)[None, :]
    frames = self.ep.frames[e[:, None], idx]
    if self.kind == "idm":
      y, w = idm_targets(self.ep.actions[e], self.ep.valid[e], s, self.window)
    else:
      y, w = policy_targets(self.ep.actions[e], self.ep.valid[e], s, self.window, self.drop_null,
                            self.burn_in)
    return {"frames": frames, "labels": y, "weights": w}


def label_windows(num_frames: int, window: int) -> tuple[np.ndarray, np.ndarray]:
  """How a video of `num_frames` frames is cut into IDM windows for labelling: (starts [S],
  source [T] = for each action t the window whose prediction is used). Windows overlap by half;
  each action is read from the window where it is most central (furthest from both ends), so
  every label sees context on both sides when the video has it (VPT labels its video the same way,
  with overlapping windows)."""
  if num_frames < window:
    raise DataError(f"video has {num_frames} frames, shorter than the IDM window of {window}")
  stride = max(1, window // 2)
  starts = sorted(set(list(range(0, num_frames - window + 1, stride)) + [num_frames - window]))
  starts = np.array(starts, np.int64)
  t = np.arange(num_frames - 1)
  inside = (t[:, None] >= starts[None, :]) & (t[:, None] <= starts[None, :] + window - 2)
  centrality = np.minimum(t[:, None] - starts[None, :], starts[None, :] + window - 2 - t[:, None])
  source = np.argmax(np.where(inside, centrality, -1), axis=1)
  return starts, source
