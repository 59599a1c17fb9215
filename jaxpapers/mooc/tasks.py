"""The four downstream tasks on behaviour sequences: which examples each has, how the pre-trained
model (or the same model from scratch) reads them, its losses and its scores.

* recommendation: the next video. A target is a watch token t >= 1; the model reads tokens < t
  and a [MASK] at t and scores every video (the masked-item head). Evaluation: each student's
  last watch (leave-one-out, as SASRec / BERT4Rec), ranked against every video.
* knowledge tracing: the next answer. A target is an exercise token with an earlier exercise
  token; the model reads tokens <= t with t's response masked and predicts right / wrong (the
  response head's right minus wrong logit). Evaluation: every such token.
* dropout: a student still active after the first `obs` tokens; the model reads those tokens
  and predicts whether the student drops out later (mean-pooled hidden states, a new linear head).
* resource evaluation: per video, its ground-truth quality from frozen representations (ridge
  regression; see `jaxpapers.mooc.baselines.ridge`): the mean hidden state at the video's tokens.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxpapers.core.batched import apply_batched
from jaxpapers.mooc.model import MASK_RESPONSE, BehaviourModel, masked_ce
from jaxpapers.mooc.simulator import RIGHT, Logs
from jaxpapers.nn.param import param


def rec_targets(logs: Logs, last_only: bool) -> np.ndarray:
  """[P, 2] (student, token) of watch tokens with index >= 1 (only each student's last if
  last_only)."""
  L = logs.items.shape[1]
  pos = np.arange(L)[None]
  ok = (pos >= 1) & (pos < logs.length[:, None]) & (logs.items >= 0) & (logs.items < logs.n_videos)
  if last_only:
    last = np.where(ok, pos, -1).max(1)
    s = np.nonzero(last >= 1)[0]
    return np.stack([s, last[s]], 1)
  return np.argwhere(ok)


def kt_targets(logs: Logs) -> np.ndarray:
  """[P, 2] (student, token) of exercise tokens that have an earlier exercise token, in student
  then time order (the order DKT and SAKT predict them in)."""
  L = logs.items.shape[1]
  real = np.arange(L)[None] < logs.length[:, None]
  ex = real & (logs.items >= logs.n_videos)
  earlier = np.cumsum(ex, 1) - ex
  return np.argwhere(ex & (earlier >= 1))


def dropout_students(logs: Logs, obs: int) -> np.ndarray:
  return np.nonzero(logs.length > obs)[0]


def rec_inputs(items, responses, t, mask_id, pad_id) -> dict:
  pos = np.arange(items.shape[1])[None]
  keep, at = pos < t[:, None], pos == t[:, None]
  return dict(items=np.where(keep, items, np.where(at, mask_id, pad_id)).astype(np.int32),
              responses=np.where(keep, responses, np.where(at, MASK_RESPONSE, 0)).astype(np.int32),
              mask=(pos <= t[:, None]).astype(np.int32), t=t.astype(np.int32))


def kt_inputs(items, responses, t, pad_id) -> dict:
  pos = np.arange(items.shape[1])[None]
  keep, at = pos <= t[:, None], pos == t[:, None]
  return dict(items=np.where(keep, items, pad_id).astype(np.int32),
              responses=np.where(pos < t[:, None], responses,
                                 np.where(at, MASK_RESPONSE, 0)).astype(np.int32),
              mask=keep.astype(np.int32), t=t.astype(np.int32))


def window_inputs(items, responses, obs: int, pad_id) -> dict:
  pos = np.arange(items.shape[1])[None]
  keep = (pos < obs) & (items >= 0)
  return dict(items=np.where(keep, items, pad_id).astype(np.int32),
              responses=np.where(keep, responses, 0).astype(np.int32), mask=keep.astype(np.int32))


class TaskExamples:
  """Random training batches of one task, seeded by (seed, step): `get_batch(step)`."""

  def __init__(self, logs: Logs, targets: np.ndarray, kind: str, batch: int, seed: int,
               mask_id: int, pad_id: int, labels: np.ndarray | None = None, obs: int = 0):
    self.logs, self.targets, self.kind, self.batch, self.seed = logs, targets, kind, batch, seed
    self.mask_id, self.pad_id, self.labels, self.obs = mask_id, pad_id, labels, obs

  def __call__(self, step: int) -> dict:
    rng = np.random.default_rng([self.seed, step])
    pick = self.targets[rng.integers(0, len(self.targets), self.batch)]
    return self.make(pick)

  def make(self, pick: np.ndarray) -> dict:
    lg = self.logs
    if self.kind == "dropout":
      b = window_inputs(lg.items[pick], lg.responses[pick], self.obs, self.pad_id)
      return b | dict(label=self.labels[pick].astype(np.float32))
    s, t = pick[:, 0], pick[:, 1]
    items, resp = lg.items[s], lg.responses[s]
    if self.kind == "rec":
      return rec_inputs(items, resp, t, self.mask_id, self.pad_id) | dict(
          target=items[np.arange(len(s)), t].astype(np.int32))
    return kt_inputs(items, resp, t, self.pad_id) | dict(
        label=(resp[np.arange(len(s)), t] == RIGHT).astype(np.float32))


def _at(h, t):
  return jnp.take_along_axis(h, t[:, None, None], 1)[:, 0]


def rec_scores(model: BehaviourModel, batch: dict, key=None):
  h = model(batch["items"], batch["responses"], batch["mask"], dropout_key=key)
  return model.item_logits(_at(h, batch["t"]))[:, :model.n_videos]


def rec_loss(model: BehaviourModel, batch: dict, key):
  loss, _ = masked_ce(rec_scores(model, batch, key), batch["target"])
  return loss, {}


def kt_scores(model: BehaviourModel, batch: dict, key=None):
  h = model(batch["items"], batch["responses"], batch["mask"], dropout_key=key)
  return model.correct_logit(_at(h, batch["t"]))


def bce(logit, label):
  return jnp.mean(jax.nn.softplus(logit) - label * logit)


def kt_loss(model: BehaviourModel, batch: dict, key):
  return bce(kt_scores(model, batch, key), batch["label"]), {}


class DropoutClassifier(nnx.Module):
  """The behaviour encoder, mean-pooled over the observed tokens, and a linear head."""

  def __init__(self, backbone: BehaviourModel, *, rngs: nnx.Rngs):
    self.backbone = backbone
    E = backbone.cfg.hidden
    self.w = param(rngs.params(), nnx.initializers.normal(0.02), (E,), (None,), decay=False)
    self.b = param(None, lambda k, s, d: jnp.zeros(s, d), (), (), decay=False)

  def __call__(self, batch: dict, key=None):
    h = self.backbone(batch["items"], batch["responses"], batch["mask"], dropout_key=key)
    m = batch["mask"].astype(h.dtype)[..., None]
    pooled = (h * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
    return pooled @ self.w.get_value() + self.b.get_value()


def dropout_scores(model: DropoutClassifier, batch: dict, key=None):
  return model(batch, key)


def dropout_loss(model: DropoutClassifier, batch: dict, key):
  return bce(model(batch, key), batch["label"]), {}


def hidden_states(model: BehaviourModel, batch: dict):
  return model(batch["items"], batch["responses"], batch["mask"])


def mean_video_states(model: BehaviourModel, logs: Logs, size: int) -> np.ndarray:
  """[V, E]: each video's hidden state averaged over every token where it is watched (full,
  unmasked sequences); zeros for videos never watched."""
  pad = model.encoder.cfg.vocab_size - 1
  L = logs.items.shape[1]
  real = np.arange(L)[None] < logs.length[:, None]
  batch = dict(items=np.where(real, logs.items, pad).astype(np.int32),
               responses=np.where(real, logs.responses, 0).astype(np.int32),
               mask=real.astype(np.int32))

  h = apply_batched(model, hidden_states, batch, size)            # [N, L, E]
  V = model.n_videos
  is_v = real & (logs.items >= 0) & (logs.items < V)
  sums = np.zeros((V, h.shape[-1]))
  np.add.at(sums, logs.items[is_v], h[is_v])
  counts = np.bincount(logs.items[is_v], minlength=V)[:, None]
  return sums / np.maximum(counts, 1)
