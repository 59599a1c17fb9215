"""`jaxpapers run cogvideo/t2v`: CogVideo's pipeline and central ablation on the captioned
moving-object world (CogVideo, arXiv 2205.15868): VQ tokenizer -> text-to-image model ->
video models (inherited / scratch / one-stage, equal compute) -> hierarchical generation ->
classifier-based evaluation -> report."""
from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx

from jaxpapers.cogvideo import evaluate as ev
from jaxpapers.cogvideo import vqvae, world
from jaxpapers.cogvideo.layout import image_layout, stage1_layout, stage2_layout
from jaxpapers.cogvideo.model import CogVideo, CogVideoConfig, inherit
from jaxpapers.cogvideo.sample import generate
from jaxpapers.cogvideo.sequences import Batches, batch_logits, frames_of, loss_fn, to_sequence
from jaxpapers.core import config as cfglib
from jaxpapers.core.errors import ConfigError
from jaxpapers.core.mesh import make_mesh
from jaxpapers.core.module_file import load_module, save_module
from jaxpapers.core.workdir import atomic_write_json, read_json
from jaxpapers.core.train import train, validate_train

log = logging.getLogger("jaxpapers")
VARIANTS = ("inherited", "scratch", "one_stage")
FINAL_FRAMES = 9          # 5 key frames at 4 fps, interpolated once -> 9 frames at 8 fps
FINAL_FPS = 8


def validate(c: ml_collections.ConfigDict) -> None:
  pos_int = lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0
  for key in ("model.num_layers", "model.d_model", "model.num_heads", "model.ffn_dim",
              "model.window", "sample.videos_per_combo", "sample.real_per_combo",
              "sample.frame_rate_per_combo", "sample.top_k"):
    cfglib.check(c, key, pos_int, "a positive int")
  cfglib.check(c, "model.d_model", lambda v: v % c.model.num_heads == 0, "divisible by model.num_heads")
  cfglib.check(c, "model.window", lambda v: vqvae.GRID % v == 0,
               f"a divisor of the {vqvae.GRID}x{vqvae.GRID} code grid")
  for key in ("base_train", "video_train"):
    validate_train(c, key)
    cfglib.check(c, f"{key}.steps", pos_int, "a positive int")
    cfglib.check(c, f"{key}.batch", pos_int, "a positive int")
  for f in tuple(c.video.stage1_fps) + (c.video.stage2_fps, c.sample.keyframe_fps):
    world.check_frame_rate(f)
  if world.FRAME_RATES[c.video.stage2_fps] * 2 != world.FRAME_RATES[c.sample.keyframe_fps]:
    raise ConfigError(f"--config.sample.keyframe_fps={c.sample.keyframe_fps}: stage 2 doubles the "
                      f"frame rate, so key frames must be at half of video.stage2_fps="
                      f"{c.video.stage2_fps}")
  cfglib.check(c, "sample.frame_rate_per_combo", lambda v: v <= c.sample.videos_per_combo,
               "at most sample.videos_per_combo")
  cfglib.check(c, "video.stage1_prob", lambda v: 0.0 < v < 1.0, "in (0, 1)")
  cfglib.check(c, "video.caption_dropout", lambda v: 0.0 <= v < 1.0, "in [0, 1)")
  cfglib.check(c, "world.two_object_prob", lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
  cfglib.check(c, "sample.guidance", lambda v: v > 0, "positive")
  cfglib.check(c, "sample.temperature", lambda v: v > 0, "positive")
  cfglib.check(c, "sample.one_stage_overlap", lambda v: isinstance(v, int) and 1 <= v < 5,
               "an int in [1, 4] (frames carried into the next 5-frame window)")
  vqvae.resolve_config(c.vq.to_dict())
  ev.resolve_config(c.classifier.to_dict())
  make_mesh(c.mesh.shape, c.mesh.axes)


def model_config(c, codebook: int) -> CogVideoConfig:
  return CogVideoConfig(text_vocab=len(world.VOCAB), codebook=codebook, text_len=world.TEXT_LEN,
                        grid=vqvae.GRID, num_frames=5, pad_id=world.TOKEN["<pad>"],
                        **c.model.to_dict())


def _fit(name, model, batches, t, c, wd, mesh):
  cfg = ml_collections.ConfigDict({"seed": c.seed, "train": t.to_dict()})
  log.info("training %s (%d steps of %d)", name, t.steps, t.batch)
  return train(cfg=cfg, workdir=wd / name, model=model, loss_fn=loss_fn, get_batch=batches,
               mesh=mesh)


@nnx.jit
def _loss(model, batch):
  return loss_fn(model, batch, None)[0]


@functools.partial(nnx.jit, static_argnums=2)
def _logits(model, batch, spatial_only: bool):
  return batch_logits(model, batch, spatial_only=spatial_only)


def _val_loss(model, batches, n: int = 4) -> float:
  """Mean next-code loss on `n` validation batches (held-out caption combinations). `_loss` and
  `_logits` are jitted once at module level, so the three video models (one structure) share
  their compiled programs."""
  return float(np.mean([_loss(model, batches(i)) for i in range(n)]))


class Generator:
  """Videos for captions with one video model (and the image model for first frames)."""

  def __init__(self, name: str, video: CogVideo, image: CogVideo, c):
    self.name, self.video, self.image, self.s = name, video, image, c.sample
    self.fps = c.video.stage2_fps                # the final frame rate (key frames at half)
    self.cfg = video.cfg
    self.first_from_image = name != "scratch"   # release: frame 1 by CogView2 (§3.1)

  def _text(self, captions, fps):
    return np.stack([world.encode_text(t, fps) for t in captions])

  def first_frames(self, captions, key) -> np.ndarray:
    cfg, s = self.cfg, self.s
    lay = image_layout(cfg.text_len, cfg.grid)
    empty = np.zeros((len(captions), 1, cfg.grid, cfg.grid), np.int32)
    tok = to_sequence(self._text(captions, None), empty, lay, cfg)
    out = generate(self.image, lay, tok, key, guidance=s.guidance, top_k=s.top_k,
                   temperature=s.temperature)
    return frames_of(out, lay, cfg)[:, 0]

  def stage1(self, captions, fps, key, given=None) -> np.ndarray:
    """5 frames [n, 5, G, G] at `fps`, sequentially; `given` [n, k, G, G]: the first k frames."""
    cfg, s = self.cfg, self.s
    lay = stage1_layout(cfg.text_len, cfg.grid, cfg.num_frames)
    codes = np.zeros((len(captions), cfg.num_frames, cfg.grid, cfg.grid), np.int32)
    k = 0
    if given is not None:
      k = given.shape[1]
      codes[:, :k] = given
    elif self.first_from_image:
      codes[:, 0] = self.first_frames(captions, jax.random.fold_in(key, 1))
      k = 1
    tok = to_sequence(self._text(captions, fps), codes, lay, cfg)
    out = generate(self.video, lay, tok, key, guidance=s.guidance, top_k=s.top_k,
                   temperature=s.temperature, from_block=k)
    return frames_of(out, lay, cfg)

  def interpolate(self, frames, captions, fps, key) -> np.ndarray:
    """Stage 2 (§3.1): N frames -> 2N-1 at twice the rate, each window (2i, 2i+1, 2i+2) of the
    input as given frames 0, 2, 4 of one 5-frame sequence."""
    cfg, s = self.cfg, self.s
    lay = stage2_layout(cfg.text_len, cfg.grid, cfg.num_frames)
    n, N = frames.shape[:2]
    out = [frames[:, :1]]
    for w in range(0, N - 1, 2):
      codes = np.zeros((n, 5, cfg.grid, cfg.grid), np.int32)
      codes[:, 0::2] = frames[:, w:w + 3]
      tok = to_sequence(self._text(captions, fps), codes, lay, cfg)
      filled = frames_of(generate(self.video, lay, tok, jax.random.fold_in(key, w),
                                  guidance=s.stage2_guidance, top_k=s.top_k,
                                  temperature=s.temperature), lay, cfg)
      out.append(filled[:, 1:])
    return np.concatenate(out, axis=1)

  def video_codes(self, captions, key) -> np.ndarray:
    """[n, 9, G, G] at 8 fps: hierarchical (stage 1 at 4 fps, stage 2 once) or, for one_stage,
    stage 1 at 8 fps with a sliding window carrying `one_stage_overlap` frames."""
    if self.name == "one_stage":
      frames = self.stage1(captions, self.fps, key)
      w = 0
      while frames.shape[1] < FINAL_FRAMES:
        w += 1
        carry = frames[:, -self.s.one_stage_overlap:]
        nxt = self.stage1(captions, self.fps, jax.random.fold_in(key, 100 + w), given=carry)
        frames = np.concatenate([frames, nxt[:, carry.shape[1]:]], axis=1)
      return frames[:, :FINAL_FRAMES]
    keys = self.stage1(captions, self.s.keyframe_fps, key)
    return self.interpolate(keys, captions, self.fps, jax.random.fold_in(key, 7))


def eval_combos(c) -> np.ndarray:
  """The caption combinations evaluated: all 32, or (sample.eval_combos = n > 0) the first n of
  the held-out (test) ones followed by the others in order."""
  order = list(world.combos("test")) + [k for k in range(world.NUM_COMBOS) if k not in world.combos("test")]
  n = c.sample.get("eval_combos", 0) or world.NUM_COMBOS
  return np.array(order[:n]) if n < world.NUM_COMBOS else np.arange(world.NUM_COMBOS)


def eval_attrs(c) -> tuple[np.ndarray, np.ndarray]:
  """(attrs [n, 3], combo [n]): the evaluated caption combinations, videos_per_combo each."""
  combos = np.repeat(eval_combos(c), c.sample.videos_per_combo)
  return np.array([world.combo_attrs(int(k)) for k in combos], np.int32), combos


def loss_by_frame(model: CogVideo, batches, first_by_image: bool, n: int = 2) -> list[float]:
  """Teacher-forced next-code loss per frame (time 0..4) of stage-1 validation clips: the first
  frame has only the text to go on, later ones also the earlier frames through the temporal
  channel; how far they fall below the first shows how much the model uses the past.
  `first_by_image`: frame 0 scored through the spatial channel alone, i.e. the frozen image
  model, which is what makes an inherited model's first frame (it is not in its loss)."""
  tot, cnt = np.zeros(5), np.zeros(5)
  for i in range(n):
    b = batches(i)
    logp = np.asarray(jax.nn.log_softmax(_logits(model, b, False)))
    if first_by_image:
      first = np.asarray(jax.nn.log_softmax(_logits(model, b, True)))
      logp = np.where((np.roll(b["time"], -1, axis=1) == 0)[..., None], first, logp)
    nll = -np.take_along_axis(logp, b["targets"][..., None], -1)[..., 0]
    t, w = np.roll(b["time"], -1, axis=1), b["weights"]
    for k in range(5):
      tot[k] += (nll * w * (t == k)).sum()
      cnt[k] += (w * (t == k)).sum()
  return [float(x) for x in tot / np.maximum(cnt, 1)]


def paired_bootstrap(feats: dict, accs: dict, real_feats, pairs, n: int = 200, seed: int = 0) -> dict:
  """95% intervals of fd(a) - fd(b) and caption_acc(a) - caption_acc(b) for model pairs, videos
  resampled with replacement with the same indices for both models (video i of every model has
  the same caption)."""
  rng = np.random.default_rng(seed)
  size = len(next(iter(feats.values())))
  idx = [rng.integers(0, size, size) for _ in range(n)]
  out = {}
  for a, b in pairs:
    dfd = [ev.frechet_distance(feats[a][i], real_feats) - ev.frechet_distance(feats[b][i], real_feats)
           for i in idx]
    dacc = [accs[a][i].mean() - accs[b][i].mean() for i in idx]
    out[f"{a}-{b}"] = {"fd_diff_ci95": [float(np.percentile(dfd, 2.5)), float(np.percentile(dfd, 97.5))],
                       "caption_acc_diff_ci95": [float(np.percentile(dacc, 2.5)),
                                                 float(np.percentile(dacc, 97.5))]}
  return out


def score(clf, videos, attrs, combos, real_feats) -> dict:
  """caption_acc (per attribute, mean; all captions and held-out ones), fd against real clips,
  speed_error (|measured - captioned| px per tick) and the motion-based direction accuracy."""
  pred = ev.predict(clf, videos)
  held = np.isin(combos, world.combos("test"))
  motion = ev.estimate_motion(videos, world.FRAME_RATES[FINAL_FPS])
  want = np.asarray(world.SPEED_PX)[attrs[:, 2]]
  return {"caption_acc": ev.caption_accuracy(pred, attrs),
          "caption_acc_heldout": ev.caption_accuracy(pred[held], attrs[held]),
          "fd": ev.frechet_distance(ev.features(clf, videos), real_feats),
          "speed_error": float(np.mean(np.abs(motion["speed_px_per_tick"] - want))),
          "motion_direction_acc": float(np.mean(motion["direction"] == attrs[:, 1])),
          "still_fraction": float(np.mean(motion["direction"] < 0))}


def frame_rate_control(gen: Generator, vq, attrs, key) -> dict:
  """§3.1's frame-rate token: stage-1 clips of the same captions at each trained frame rate;
  the measured shift per frame should be speed x (ticks per frame)."""
  out = {}
  want = np.asarray(world.SPEED_PX)[attrs[:, 2]]
  for fps, interval in world.FRAME_RATES.items():
    captions = [world.caption_of(a) for a in attrs]
    frames = vqvae.decode(vq, gen.stage1(captions, fps, jax.random.fold_in(key, fps)))
    m = ev.estimate_motion(np.asarray(frames), 1)            # px per frame
    out[f"fps{fps}"] = {"px_per_frame": float(np.mean(m["speed_px_per_tick"])),
                        "expected_px_per_frame": float(np.mean(want * interval)),
                        "abs_error": float(np.mean(np.abs(m["speed_px_per_tick"] - want * interval)))}
  return out


def _vq_model(c) -> vqvae.VQVAE:
  v = vqvae.resolve_config(c.vq.to_dict())
  return vqvae.VQVAE(v["codebook_size"], v["code_dim"], v["channels"], rngs=nnx.Rngs(0))


def train_or_load_vq(c, wd: Path) -> vqvae.VQVAE:
  path = wd / "vq.npz"
  if path.is_file():
    return load_module(path, _vq_model(c))
  vq, _ = vqvae.train_vqvae(
      lambda rng, n: world.sample_frames(rng, "train", n, c.world.two_object_prob)["frames"],
      c.vq.to_dict(), seed=c.seed)
  save_module(path, vq)
  return vq


def train_or_load_classifier(c, wd: Path):
  path, info = wd / "classifier.npz", wd / "classifier.json"
  if path.is_file() and info.is_file():
    k = ev.resolve_config(c.classifier.to_dict())
    clf = ev.ClipClassifier(k["num_frames"], k["channels"], k["features"], rngs=nnx.Rngs(0))
    return load_module(path, clf), read_json(info)
  clf, metrics = ev.train_classifier(c.classifier.to_dict(), seed=c.seed)
  save_module(path, clf)
  atomic_write_json(info, metrics)
  return clf, metrics


def video_model(c, name: str, image: CogVideo | None, codebook: int) -> CogVideo:
  """A freshly initialised video model of variant `name` (inherited ones from `image`)."""
  mcfg = model_config(c, codebook)
  if name == "scratch":
    return CogVideo(mcfg.video(False), rngs=nnx.Rngs(params=c.seed + 1))
  model = CogVideo(mcfg.video(True), rngs=nnx.Rngs(params=c.seed + 1))
  return inherit(model, image) if image is not None else model


def run(c: ml_collections.ConfigDict, workdir: str, command: str) -> dict:
  validate(c)
  from jaxpapers.cogvideo.report import write  # noqa: PLC0415 (matplotlib only when reporting)
  wd = Path(workdir)
  mesh = make_mesh(c.mesh.shape, c.mesh.axes)
  timing, t_all = {}, time.perf_counter()
  two = c.world.two_object_prob

  # 1. the tokenizer (§3: CogView's VQ stage), on train-world frames; 2. the evaluator: a
  # classifier of real 9-frame clips (every combination, train images). Both are kept in the
  # workdir, so a resumed run reuses them.
  t0 = time.perf_counter()
  vq = train_or_load_vq(c, wd)
  held_frames = world.sample_clips(np.random.default_rng([c.seed, 11]), "test", 128, FINAL_FRAMES,
                                   FINAL_FPS)["frames"]
  vq_m = vqvae.vq_metrics(vq, held_frames.reshape(-1, 16, 16))
  encode = nnx.jit(vqvae.encode)
  timing["vq"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  clf, clf_m = train_or_load_classifier(c, wd)
  timing["classifier"] = time.perf_counter() - t0

  # 3. the text-to-image model (CogView2 analogue)
  mcfg = model_config(c, vq.codebook_size)
  enc = lambda frames: encode(vq, frames)
  def batches(**kw):
    kw = dict(dict(two_object_prob=two, caption_dropout=c.video.caption_dropout), **kw)
    return Batches(cfg=mcfg, encode=enc, seed=c.seed, stage1_fps=tuple(c.video.stage1_fps),
                   stage2_fps=c.video.stage2_fps, **kw)
  t0 = time.perf_counter()
  base_out = _fit("base", CogVideo(mcfg, rngs=nnx.Rngs(params=c.seed)),
                  batches(kind="image", batch=c.base_train.batch), c.base_train, c, wd, mesh)
  image = base_out.model()
  timing["base"] = time.perf_counter() - t0

  # 4. three video models at equal compute (same steps and batch)
  data = {"inherited": dict(stage1_prob=c.video.stage1_prob, first_frame_loss=False),
          "scratch": dict(stage1_prob=c.video.stage1_prob, first_frame_loss=True),
          "one_stage": dict(stage1_prob=1.0, first_frame_loss=False)}
  videos_models, train_info = {}, {}
  for name, spec in data.items():
    t0 = time.perf_counter()
    out = _fit(name, video_model(c, name, image, vq.codebook_size),
               batches(kind="video", batch=c.video_train.batch, **spec), c.video_train, c, wd, mesh)
    videos_models[name] = out.model()
    val = batches(kind="video", batch=c.video_train.batch, split="val", caption_dropout=0.0,
                  two_object_prob=0.0, **spec)
    by_frame = batches(kind="video", batch=c.video_train.batch, split="val", caption_dropout=0.0,
                       two_object_prob=0.0, stage1_prob=1.0, first_frame_loss=True)
    train_info[name] = {"final_loss": float(np.mean([h["loss"] for h in out.history[-20:]])),
                        "val_loss": _val_loss(videos_models[name], val),
                        "val_loss_by_frame": loss_by_frame(videos_models[name], by_frame,
                                                           first_by_image=name != "scratch"),
                        "loss_curve": [(h["step"], h["loss"]) for h in out.history]}
    timing[f"train_{name}"] = time.perf_counter() - t0

  # 5. generation and evaluation
  t0 = time.perf_counter()
  attrs, combos = eval_attrs(c)
  def real_clips(stream: int, draw: int, images: str, keep: int | None = None) -> dict:
    """Real 9-frame clips of the evaluated captions: `draw` clips of all captions from the
    seeded stream, those of the evaluated ones kept (the first `keep` of them)."""
    d = world.sample_clips(np.random.default_rng([c.seed, stream]), "all", draw, FINAL_FRAMES,
                           FINAL_FPS, images=images)
    return {k: v[np.isin(d["combo"], eval_combos(c))][:keep] for k, v in d.items()}

  # the reference: clips of the same captions, test images
  real = real_clips(12, world.NUM_COMBOS * c.sample.real_per_combo, "test")
  real_feats = ev.features(clf, real["frames"])
  # floors at the generated sets' size (a Frechet distance of n samples is biased by n)
  draw = 2 * len(attrs) * world.NUM_COMBOS // len(eval_combos(c))
  real2 = real_clips(13, draw, "test", len(attrs))
  recon = np.asarray(vqvae.decode(vq, encode(vq, real2["frames"])))
  train_img = real_clips(14, draw, "train", len(attrs))
  results = {
      "fd_real_train_images": ev.frechet_distance(ev.features(clf, train_img["frames"]), real_feats),
      "caption_acc_vq_reconstructed": ev.caption_accuracy(ev.predict(clf, recon), real2["attrs"]),
      "vq_recon_mse": vq_m["recon_mse"], "vq_codebook_usage": vq_m["codebook_usage"],
      "vq_perplexity": vq_m["perplexity"], "classifier_real_acc": clf_m,
      "fd_real_vs_real": ev.frechet_distance(ev.features(clf, real2["frames"]), real_feats),
      "fd_vq_reconstructed": ev.frechet_distance(ev.features(clf, recon), real_feats),
      "caption_acc": {}, "caption_acc_heldout": {}, "fd": {}, "speed_error": {},
      "motion_direction_acc": {}, "still_fraction": {}, "frame_rate_control": {},
      "train": {k: {kk: vv for kk, vv in v.items() if kk != "loss_curve"} for k, v in train_info.items()},
  }
  samples, feats, correct = {}, {}, {}
  for name, model in videos_models.items():
    gen = Generator(name, model, image, c)
    codes = gen.video_codes([world.caption_of(a) for a in attrs], jax.random.key(c.seed + 100))
    videos = np.asarray(vqvae.decode(vq, codes))
    for key, value in score(clf, videos, attrs, combos, real_feats).items():
      results[key][name] = value
    feats[name] = ev.features(clf, videos)
    correct[name] = (ev.predict(clf, videos) == attrs).astype(np.float64)
    per = c.sample.frame_rate_per_combo
    results["frame_rate_control"][name] = frame_rate_control(
        gen, vq, attrs.reshape(len(eval_combos(c)), -1, 3)[:, :per].reshape(-1, 3),
        jax.random.key(c.seed + 200))
    samples[name] = videos
  results["paired_bootstrap"] = paired_bootstrap(
      feats, correct, real_feats, [("inherited", "scratch"), ("inherited", "one_stage")], seed=c.seed)
  timing["generate_and_evaluate"] = time.perf_counter() - t0
  timing["total"] = time.perf_counter() - t_all
  results["timing_s"] = timing
  results["equal_compute"] = {"steps": c.video_train.steps, "batch": c.video_train.batch}
  write(wd, command, c, results, samples, attrs, combos, real, train_info)
  return results


def load_trained(workdir: str | Path, name: str):
  """(config, vq, image model, video model `name`) of a cogvideo/t2v run's workdir."""
  from jaxpapers.core.checkpoint import has_checkpoints
  from jaxpapers.core.errors import CheckpointError, WorkdirError
  from jaxpapers.core.train import load_params
  wd = Path(workdir)
  if not (wd / "config.json").is_file():
    raise WorkdirError(f"{wd} holds no config.json of a cogvideo/t2v run")
  c = ml_collections.ConfigDict(read_json(wd / "config.json"))
  if c.get("experiment") != "cogvideo/t2v":
    raise ConfigError(f"{wd} is a {c.get('experiment')!r} run, not cogvideo/t2v: its checkpoints "
                      "hold another model")
  if name not in VARIANTS:
    raise ConfigError(f"unknown video model {name!r}; the run trains {', '.join(VARIANTS)}")
  for part in ("base", name):
    if not has_checkpoints(wd / part / "checkpoints"):
      raise CheckpointError(f"{wd / part} holds no checkpoint yet: train the run first (jaxpapers run)")
  if not (wd / "vq.npz").is_file():
    raise CheckpointError(f"{wd} holds no vq.npz (the tokenizer): train the run first")
  vq = load_module(wd / "vq.npz", _vq_model(c))
  mcfg = model_config(c, vq.codebook_size)
  train_cfg = lambda t: ml_collections.ConfigDict({"seed": c.seed, "train": t.to_dict()})
  image = load_params(train_cfg(c.base_train), wd / "base", CogVideo(mcfg, rngs=nnx.Rngs(0)))
  video = load_params(train_cfg(c.video_train), wd / name, video_model(c, name, None, vq.codebook_size))
  return c, vq, image, video


def generate_videos(workdir: str | Path, caption: str, fps: int = FINAL_FPS, name: str = "inherited",
                    num: int = 1, seed: int = 0) -> np.ndarray:
  """Frames [num, T, 16, 16] for `caption` from a trained run. fps 8: hierarchical (key frames at
  4 fps, one interpolation pass: 9 frames); 4: the 5 key frames of stage 1 only."""
  world.parse_caption(caption)                        # one clear line for a bad caption
  world.check_frame_rate(fps)
  if not isinstance(num, int) or num < 1:
    raise ConfigError(f"the number of videos must be a positive int, got {num!r}")
  c, vq, image, video = load_trained(workdir, name)
  gen = Generator(name, video, image, c)
  key = jax.random.key(seed)
  captions = [caption] * num
  if fps == FINAL_FPS:
    codes = gen.video_codes(captions, key)
  else:
    codes = gen.stage1(captions, fps, key)
  return np.asarray(vqvae.decode(vq, codes))
