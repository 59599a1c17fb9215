"""Training and applying VPT's two learners: the IDM (trained on contractor data, then labelling
the unlabelled video) and the BC policy (trained on whichever labels it is given)."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from jaxpapers.core.train import train
from jaxpapers.vpt.data import Episodes, WindowBatches, check_video, label_windows
from jaxpapers.vpt.env import ACTION_NAMES, NOOP, random_act
from jaxpapers.vpt.models import InverseDynamicsModel, NetConfig, Policy

BATCH_AXES = {"frames": ("batch",), "labels": ("batch",), "weights": ("batch",)}


def action_loss(model, batch, _key):
  """Cross-entropy of the action at every weighted window position (VPT trains both the IDM and
  the policy by maximum likelihood of the actions, §2.1-2.2)."""
  logits = model(batch["frames"])
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
  w = batch["weights"]
  n = jnp.maximum(w.sum(), 1.0)
  acc = ((logits.argmax(-1) == batch["labels"]) * w).sum() / n
  return (ce * w).sum() / n, {"accuracy": acc, "tokens": w.sum()}


@dataclasses.dataclass
class Trained:
  model: nnx.Module
  seconds: float
  final_loss: float
  step_time: float


def fit(kind: str, net: NetConfig, train_cfg: ml_collections.ConfigDict, episodes: Episodes,
        workdir: Path, mesh, seed: int, drop_null: bool = False, eval_fn=None) -> Trained:
  """Trains an IDM (`kind="idm"`) or a policy on `episodes` (resuming from workdir's checkpoint);
  `drop_null`: the policy's no-op targets left out (see data.policy_targets); `eval_fn(model,
  step)`: called every train_cfg.eval_every steps (see core.train.train)."""
  cls = InverseDynamicsModel if kind == "idm" else Policy
  model = cls(net, rngs=nnx.Rngs(params=seed))
  cfg = ml_collections.ConfigDict({"seed": seed, "train": train_cfg})
  batches = WindowBatches(episodes, net.window, train_cfg.batch, kind, seed, drop_null,
                          burn_in=net.burn_in if kind == "policy" else 0)
  t0 = time.perf_counter()
  out = train(cfg=cfg, workdir=workdir, model=model, loss_fn=action_loss, get_batch=batches,
              mesh=mesh, batch_logical=BATCH_AXES, eval_fn=eval_fn, progress=True)
  losses = [h["loss"] for h in out.history[-10:]] or [float("nan")]
  return Trained(out.model(), time.perf_counter() - t0, float(np.mean(losses)),
                 float(np.median(out.step_times)) if out.step_times else float("nan"))


def pseudo_label(idm: InverseDynamicsModel, frames: np.ndarray, chunk_windows: int = 256) -> np.ndarray:
  """IDM labels of every action of videos frames [N, L, H, W, 3] -> [N, L-1] (VPT §2.1: the IDM
  labels the unlabelled video; each action is read from the overlapping window where it is most
  central, see data.label_windows)."""
  c = idm.c
  check_video(frames, c.frame_shape, min_frames=c.window, name="video to label")
  if frames.ndim == 4:
    return pseudo_label(idm, frames[None], chunk_windows)[0]
  n, length = frames.shape[:2]
  starts, source = label_windows(length, c.window)
  offset = np.arange(length - 1) - starts[source]
  graphdef, params = nnx.split(idm)
  forward = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x).argmax(-1))
  per_ep = len(starts)
  eps_per_chunk = max(1, chunk_windows // per_ep)
  out = np.zeros((n, length - 1), np.int32)
  idx = starts[:, None] + np.arange(c.window)[None, :]              # [S, W]
  for lo in range(0, n, eps_per_chunk):
    hi = min(n, lo + eps_per_chunk)
    wins = frames[lo:hi][:, idx].reshape((-1, c.window) + frames.shape[2:])
    pad = eps_per_chunk * per_ep - wins.shape[0]                      # one compiled shape
    if pad:
      wins = np.concatenate([wins, np.zeros((pad,) + wins.shape[1:], wins.dtype)])
    pred = np.asarray(forward(params, wins))[: (hi - lo) * per_ep].reshape(hi - lo, per_ep, c.window)
    out[lo:hi] = pred[:, source, offset]
  return out


def idm_accuracy(pred: np.ndarray, episodes: Episodes) -> dict:
  """Held-out IDM accuracy: on every valid step, on steps whose true action is not a no-op (the
  issue's headline; VPT reports keypress accuracy), per action, and the confusion matrix
  [true, predicted]."""
  y, v = episodes.actions, episodes.valid
  a = len(ACTION_NAMES)
  conf = np.zeros((a, a), np.int64)
  np.add.at(conf, (y[v], pred[v]), 1)
  nn = v & (y != NOOP)
  per_action = {ACTION_NAMES[i]: float(conf[i, i] / conf[i].sum()) for i in range(a) if conf[i].sum()}
  return {"accuracy": float((pred == y)[v].mean()), "accuracy_non_noop": float((pred == y)[nn].mean()),
          "per_action": per_action, "support": {ACTION_NAMES[i]: int(conf[i].sum()) for i in range(a)},
          "confusion": conf.tolist()}


def make_policy_act(policy: Policy, sample: bool = True):
  """An env.ActFn running `policy` frame by frame with its memory (Policy.step); the carry is
  (params, cache, uniform). Parameters travel in the carry so that one compiled rollout serves
  every policy of the same architecture; with `uniform` true the action is env.random_act's
  (the same key: the random baseline's actions), so the random policy needs no rollout of its
  own (a Craftax rollout compiles in 15-20 s)."""
  graphdef, _ = nnx.split(policy)

  def act(carry, frame, state, key):
    params, cache, uniform = carry
    logits, cache = nnx.merge(graphdef, params).step(frame, cache)
    a = jax.random.categorical(key, logits) if sample else logits.argmax(-1)
    a = jnp.where(uniform, random_act(None, frame, state, key)[0], a)
    return a.astype(jnp.int32), (params, cache, uniform)

  return act


def initial_policy_carry(policy: Policy, num_envs: int, uniform: bool = False):
  """The carry of `make_policy_act`'s rollout; uniform: act as the uniform random policy."""
  return nnx.split(policy)[1], policy.initial_cache(num_envs), jnp.asarray(uniform)
