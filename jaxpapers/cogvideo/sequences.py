"""Token sequences of the text-to-image base and of the two CogVideo stages, and the training
batches built from the video world (CogVideo, arXiv 2205.15868 §3.1, §4.1)."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxpapers.cogvideo import world
from jaxpapers.cogvideo.layout import Layout, image_layout, stage1_layout, stage2_layout
from jaxpapers.cogvideo.model import CogVideoConfig
from jaxpapers.cogvideo.sample import batch_layout


def to_sequence(text: np.ndarray, codes: np.ndarray, lay: Layout, cfg: CogVideoConfig) -> np.ndarray:
  """tokens [B, T]: text [B, text_len], then each block of the layout as [BOI, its frame's codes]
  with codes [B, F, G*G] in *time* order (block b holds the frame at time lay.time of b)."""
  B = text.shape[0]
  out = np.empty((B, lay.length), np.int32)
  out[:, :cfg.text_len] = text
  n = cfg.grid * cfg.grid
  for b in range(int(lay.block.max()) + 1):
    start = lay.block_start(b)
    t = int(lay.time[start])
    out[:, start] = cfg.boi
    out[:, start + 1:start + 1 + n] = codes[:, t].reshape(B, n) + cfg.text_vocab
  return out


def frames_of(tokens: np.ndarray, lay: Layout, cfg: CogVideoConfig) -> np.ndarray:
  """codes [B, F, G, G] in time order from a sequence (inverse of `to_sequence`)."""
  B, n = tokens.shape[0], cfg.grid * cfg.grid
  nblocks = int(lay.block.max()) + 1
  out = np.zeros((B, nblocks, cfg.grid, cfg.grid), np.int32)
  for b in range(nblocks):
    start = lay.block_start(b)
    out[:, int(lay.time[start])] = (tokens[:, start + 1:start + 1 + n] - cfg.text_vocab).reshape(
        B, cfg.grid, cfg.grid)
  return out


def drop_captions(text: np.ndarray, rng: np.random.Generator, p: float, pad_id: int) -> np.ndarray:
  """Caption slots 1.. replaced by padding with probability p per sample (classifier-free
  guidance's unconditional model, Ho & Salimans 2021 §3.2); slot 0 (<img> / frame rate) kept."""
  text = text.copy()
  drop = rng.random(text.shape[0]) < p
  text[drop, 1:] = pad_id
  return text


@dataclasses.dataclass
class Batches:
  """get_batch(step) for core.train: a deterministic function of (seed, step).

  kind "image": single captioned frames (the base model). kind "video": 5-frame clips; each row
  is stage 1 with probability `stage1_prob` (sequential, at a frame rate drawn from
  `stage1_fps`), else stage 2 (interpolation at `stage2_fps`: frames 0, 2, 4 given, 1 and 3
  generated). `first_frame_loss` False: no loss on the first frame of stage 1 (an inherited
  model makes it with the image model, as the release does)."""
  cfg: CogVideoConfig
  encode: callable            # frames [N, 16, 16] -> codes [N, G, G]
  kind: str
  batch: int
  seed: int
  split: str = "train"
  stage1_prob: float = 0.5
  stage1_fps: tuple = (8, 4)
  stage2_fps: int = 8
  first_frame_loss: bool = True
  caption_dropout: float = 0.1
  two_object_prob: float = 0.25

  def __call__(self, step: int) -> dict:
    rng = np.random.default_rng([self.seed, step, 0 if self.split == "train" else 1])
    cfg = self.cfg
    if self.kind == "image":
      d = world.sample_frames(rng, self.split, self.batch)
      codes = np.asarray(self.encode(d["frames"]))[:, None]
      lay = image_layout(cfg.text_len, cfg.grid)
      text = drop_captions(d["text"], rng, self.caption_dropout, cfg.pad_id)
      rows = [(lay, to_sequence(text, codes, lay, cfg), np.ones(1, bool))]
    else:
      stage1 = rng.random(self.batch) < self.stage1_prob
      rows = []
      for is1, n in ((True, int(stage1.sum())), (False, int((~stage1).sum()))):
        if n == 0:
          continue
        fps = (rng.choice(self.stage1_fps, n) if is1 else np.full(n, self.stage2_fps))
        lay = (stage1_layout if is1 else stage2_layout)(cfg.text_len, cfg.grid, cfg.num_frames)
        for f in np.unique(fps):
          m = int((fps == f).sum())
          d = world.sample_clips(rng, self.split, m, cfg.num_frames, int(f),
                                 two_object_prob=self.two_object_prob)
          codes = np.asarray(self.encode(d["frames"].reshape(-1, *d["frames"].shape[2:])))
          codes = codes.reshape(m, cfg.num_frames, cfg.grid, cfg.grid)
          text = drop_captions(d["text"], rng, self.caption_dropout, cfg.pad_id)
          time_ok = np.ones(cfg.num_frames, bool)
          if is1 and not self.first_frame_loss:
            time_ok[0] = False
          rows.append((lay, to_sequence(text, codes, lay, cfg), time_ok))
    return assemble(rows, cfg)


def assemble(rows, cfg: CogVideoConfig) -> dict:
  """One batch dict from (layout, tokens [n, T], frames-with-loss [F]) groups."""
  layouts, tokens, weights = [], [], []
  for lay, tok, time_ok in rows:
    w = lay.generated_targets() & np.append(time_ok[np.clip(lay.time[1:], 0, None)], False)
    w &= np.append(lay.block[1:] >= 0, False)
    layouts += [lay] * len(tok)
    tokens.append(tok)
    weights.append(np.broadcast_to(w, tok.shape))
  tokens = np.concatenate(tokens)
  arrays, masks = batch_layout(layouts, tokens, cfg)
  targets = np.clip(np.roll(tokens, -1, axis=1) - cfg.text_vocab, 0, cfg.codebook - 1)
  return {"tokens": tokens, "targets": targets.astype(np.int32),
          "weights": np.concatenate(weights).astype(np.float32),
          "block": arrays["block"], "time": arrays["time"], "cell": arrays["cell"],
          "offset": arrays["offset"], "text_ok": arrays["text_ok"],
          "spatial": masks["spatial"], "temporal": np.swapaxes(masks["temporal"], 0, 1)}


def batch_logits(model, batch: dict, **kw):
  """The model's logits [B, T, K] on a batch of `assemble` (kw: e.g. spatial_only,
  layer_wrapper)."""
  lay = {k: batch[k] for k in ("block", "time", "cell", "offset", "text_ok")}
  masks = {"spatial": batch["spatial"], "temporal": jnp.swapaxes(batch["temporal"], 0, 1)}
  return model(batch["tokens"], lay, masks, **kw)


def code_nll(logits, targets):
  """-log p(target code) at every position, [B, T]."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def loss_fn(model, batch: dict, dropout_key):
  """Mean cross-entropy of the next image code at the weighted positions (generated frames)."""
  logits = batch_logits(model, batch)
  nll = code_nll(logits, batch["targets"])
  w = batch["weights"]
  total = jnp.maximum(w.sum(), 1.0)
  acc = ((jnp.argmax(logits, -1) == batch["targets"]) * w).sum() / total
  return (nll * w).sum() / total, {"tokens": w.sum(), "code_acc": acc}
