"""A generated GEBD benchmark: seeded videos with generic events, five simulated annotators per
video, written in the Kinetics-GEBD layout (see `jaxpapers.gebd.annotations`).

A video is 32-40 frames of 32x32 RGB at 4 fps (8-10 s, the length of a Kinetics clip at the
models' 4 fps). One or two Fashion-MNIST sprites, each in a colour, move over a textured
background. Generic events happen at random times: a direction change, a speed change (a stop or
a three-fold speed-up), an object appearing or disappearing, a scene cut (new background and
objects), an appearance change (colour and garment); a sprite bouncing off the frame edge is a
direction change too. Confounders that are not events: camera jitter bursts (the frame shifted
by up to 2 px for 2-3 frames), lighting flicker (one or two frames 0.6-1.5x as bright), pixel
noise. A share of videos are "hard": more confounders and annotators who disagree.

Annotators: each of the 5 misses an event with a probability that depends on its kind (a speed
change is missed most often, a cut almost never), marks it with a per-rater bias and timing
jitter, adds extra boundaries (some at confounders), and the marks are cleaned as the
Kinetics-GEBD release cleans its raters' (boundaries within 0.3 s of either end dropped, of two
within 0.6 s the later dropped). `f1_consis` is each rater's mean F1 against the others
(`annotations.consistency`), so videos whose raters disagree fall below the protocol's 0.3.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from jaxpapers.data.images import load_fashion_mnist
from jaxpapers.gebd.annotations import Video, consistency
from jaxpapers.gebd.boundaries import N_SECTIONS, SECTION

EVENT_KINDS = ("direction", "speed", "appear", "disappear", "cut", "appearance")
MISS_PROB = dict(direction=0.15, speed=0.35, appear=0.08, disappear=0.08, cut=0.02, appearance=0.2)
FPS = 1.0 / SECTION
SIZE = 32
SPRITE = 12


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
  train: int = 2000
  val: int = 200
  test: int = 300
  unlabelled: int = 2000
  raters: int = 5
  min_frames: int = 32
  max_events: int = 4
  hard_share: float = 0.12
  rater_jitter_s: float = 0.15
  extra_rate: float = 0.25       # extra boundaries per rater and video (Poisson mean)
  confounder_rate: float = 1.0   # confounder bursts per video (Poisson mean)


@dataclasses.dataclass
class Split:
  frames: np.ndarray              # [V, N_SECTIONS, SIZE, SIZE, 3] uint8 (padded with the last frame)
  videos: dict[str, Video]        # annotations (raters empty for the unlabelled pool)
  events: list[list[tuple[float, str]]]   # the generator's true events (time, kind) per video
  confounders: list[list[float]]

  @property
  def ids(self) -> list[str]:
    return list(self.videos)

  def durations(self) -> np.ndarray:
    return np.array([v.duration for v in self.videos.values()], np.float32)


def _sprites():
  fm = load_fashion_mnist()
  x = fm["train_x"][..., 0]
  x = x[:, 2:26, 2:26].reshape(-1, SPRITE, 2, SPRITE, 2).mean((2, 4))   # centre 24 px -> 12
  return x / np.maximum(x.max((1, 2), keepdims=True), 1e-6), fm["train_y"]


def _background(rng) -> np.ndarray:
  a, b = rng.uniform(0.0, 1.0, 3), rng.uniform(0.0, 1.0, 3)
  ang = rng.uniform(0, 2 * np.pi)
  yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
  g = (np.cos(ang) * xx + np.sin(ang) * yy)
  g = (g - g.min()) / max(g.max() - g.min(), 1e-6)
  tex = np.kron(rng.uniform(-1, 1, (4, 4)), np.ones((SIZE // 4, SIZE // 4)))
  bg = a * (1 - g[..., None]) + b * g[..., None] + 0.12 * tex[..., None]
  return np.clip(bg * 0.8, 0, 1)


class _Obj:
  def __init__(self, rng, sprites, visible: bool):
    self.alpha = sprites[rng.integers(len(sprites))]
    self.colour = rng.uniform(0.2, 1.0, 3) * rng.choice([1.0, 1.0, 0.3])
    self.pos = rng.uniform(0, SIZE - SPRITE, 2)
    ang = rng.uniform(0, 2 * np.pi)
    self.vel = rng.uniform(0.6, 1.2) * np.array([np.cos(ang), np.sin(ang)])
    self.visible = visible


def make_video(rng, n_frames: int, c: BenchmarkConfig, sprites, hard: bool):
  """frames [N_SECTIONS, SIZE, SIZE, 3] uint8, events [(time s, kind)], confounder times."""
  objs = [_Obj(rng, sprites, True), _Obj(rng, sprites, bool(rng.random() < 0.5))]
  bg = _background(rng)
  n_ev = int(rng.integers(1, c.max_events + 1))
  slots = rng.permutation(np.arange(3, n_frames - 2))
  chosen = []
  for f in slots:
    if len(chosen) == n_ev:
      break
    if all(abs(f - g) >= 4 for g in chosen):
      chosen.append(int(f))
  plan = {f: str(rng.choice(EVENT_KINDS)) for f in chosen}
  n_conf = rng.poisson(c.confounder_rate * (3 if hard else 1))
  shift, gain, conf_t = {}, {}, []
  for _ in range(n_conf):
    f0 = int(rng.integers(1, n_frames - 1))
    conf_t.append(f0 / FPS)
    if rng.random() < 0.5:
      for f in range(f0, min(n_frames, f0 + int(rng.integers(2, 4)))):
        shift[f] = tuple(int(v) for v in rng.integers(-2, 3, 2))
    else:
      for f in range(f0, min(n_frames, f0 + int(rng.integers(1, 3)))):
        gain[f] = float(rng.uniform(0.6, 1.5))
  frames = np.empty((N_SECTIONS, SIZE, SIZE, 3), np.float32)
  events = []
  for f in range(n_frames):
    kind = plan.get(f)
    vis = [o for o in objs if o.visible]
    if kind == "direction" and vis:
      o = vis[rng.integers(len(vis))]
      a = rng.uniform(np.pi * 0.55, np.pi) * rng.choice([-1, 1])
      o.vel = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ o.vel
    elif kind == "speed" and vis:
      o = vis[rng.integers(len(vis))]
      sp = np.linalg.norm(o.vel)
      if sp < 0.2:
        ang = rng.uniform(0, 2 * np.pi)
        o.vel = 0.9 * np.array([np.cos(ang), np.sin(ang)])
      else:
        o.vel = o.vel * (0.0 if rng.random() < 0.5 else min(3.0, 2.5 / sp))
    elif kind in ("appear", "disappear"):
      hidden = [o for o in objs if not o.visible]
      if (kind == "appear" and hidden) or not vis:
        kind = "appear"
        o = hidden[0]
        o.__init__(rng, sprites, True)
      else:
        kind = "disappear"
        vis[rng.integers(len(vis))].visible = False
    elif kind == "cut":
      bg = _background(rng)
      objs = [_Obj(rng, sprites, True), _Obj(rng, sprites, bool(rng.random() < 0.5))]
    elif kind == "appearance" and vis:
      o = vis[rng.integers(len(vis))]
      o.colour = 1.2 - o.colour if rng.random() < 0.5 else rng.uniform(0.2, 1.0, 3)
      o.alpha = sprites[rng.integers(len(sprites))]
    elif kind is not None:
      kind = None
    if kind is not None:
      events.append((f / FPS, kind))
    bounced = False
    if f > 0:
      for o in objs:
        o.pos = o.pos + o.vel
        for d in range(2):
          if o.pos[d] < 0 or o.pos[d] > SIZE - SPRITE:
            o.pos[d] = np.clip(o.pos[d], 0, SIZE - SPRITE)
            o.vel[d] = -o.vel[d]
            bounced |= o.visible
    if bounced and kind is None:
      events.append((f / FPS, "direction"))
    img = bg.copy()
    for o in objs:
      if o.visible:
        y, x = (int(round(v)) for v in o.pos)
        a = o.alpha[..., None]
        img[y:y + SPRITE, x:x + SPRITE] = img[y:y + SPRITE, x:x + SPRITE] * (1 - a) + a * o.colour
    if f in shift:
      img = np.roll(img, shift[f], axis=(0, 1))
    img = img * gain.get(f, 1.0) + rng.normal(0, 0.03, img.shape)
    frames[f] = img
  frames[n_frames:] = frames[n_frames - 1]
  return (np.clip(frames, 0, 1) * 255).astype(np.uint8), events, conf_t


def annotate(rng, events, conf_t, duration: float, c: BenchmarkConfig, hard: bool):
  """Each rater's cleaned boundary times."""
  raters = []
  for _ in range(c.raters):
    bias = rng.normal(0, 0.05)
    jit = c.rater_jitter_s * rng.uniform(0.6, 1.4) * (3 if hard else 1)
    marks = [t + bias + rng.normal(0, jit) for t, k in events
             if rng.random() >= min(0.9, MISS_PROB[k] + (0.3 if hard else 0))]
    marks += list(rng.uniform(0, duration, rng.poisson(c.extra_rate * (5 if hard else 1))))
    marks += [t + rng.normal(0, jit) for t in conf_t if rng.random() < 0.15]
    kept = []
    for t in sorted(round(float(m), 3) for m in marks):
      if t < 0.3 or t > duration - 0.3:
        continue
      if kept and t - kept[-1] <= 0.6:
        continue
      kept.append(t)
    raters.append(kept)
  return raters


def make_split(name: str, n: int, c: BenchmarkConfig, seed: int, labelled: bool = True) -> Split:
  sprites, _ = _sprites()
  rng = np.random.default_rng([seed, 71, ["train", "val", "test", "unlabelled"].index(name)])
  frames = np.empty((n, N_SECTIONS, SIZE, SIZE, 3), np.uint8)
  videos, events, confs = {}, [], []
  for i in range(n):
    nf = int(rng.integers(c.min_frames, N_SECTIONS + 1))
    hard = bool(rng.random() < c.hard_share)
    frames[i], ev, conf = make_video(rng, nf, c, sprites, hard)
    dur = nf / FPS
    raters = annotate(rng, ev, conf, dur, c, hard) if labelled else []
    consis = consistency(raters, dur) if raters else []
    vid = f"synth_{name}_{seed}_{i:05d}"
    videos[vid] = Video(vid, FPS, dur, nf, raters, consis, float(np.mean(consis)) if consis else 0.0,
                        path_video=f"generated/{name}/{vid}.mp4", extra=dict(hard=hard))
    events.append(ev)
    confs.append(conf)
  return Split(frames, videos, events, confs)


def make_benchmark(c: BenchmarkConfig, seed: int) -> dict[str, Split]:
  return {"train": make_split("train", c.train, c, seed), "val": make_split("val", c.val, c, seed),
          "test": make_split("test", c.test, c, seed),
          "unlabelled": make_split("unlabelled", c.unlabelled, c, seed, labelled=False)}
