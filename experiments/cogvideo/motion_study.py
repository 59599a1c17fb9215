"""Can the video model carry an object from frame to frame? Trains a scratch dual-channel model
on stage-1 clips at 8 fps of the world with the object speeds given (pixels per tick; 0,0: still
objects) and prints the teacher-forced loss of each frame as JSON, every `--every` steps.

  python experiments/cogvideo/motion_study.py --workdir runs/cogvideo --speeds 1,2
  python experiments/cogvideo/motion_study.py --workdir runs/cogvideo --speeds 0,0

The workdir is a cogvideo/t2v run (its tokenizer `vq.npz` and config are used). Frame 0 has only
the caption; frames 1-4 can read the earlier frames, so their loss shows how much of the motion
the model has learned to predict."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
import optax
from flax import nnx

from jaxpapers.cogvideo import experiments as E
from jaxpapers.cogvideo import vqvae, world
from jaxpapers.cogvideo.model import CogVideo
from jaxpapers.cogvideo.sequences import Batches, batch_logits, code_nll
from jaxpapers.core.module_file import load_module
from jaxpapers.core.workdir import read_json


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--speeds", default="1,2", help="pixels per tick of 'slowly' and 'quickly'")
  ap.add_argument("--steps", type=int, default=250)
  ap.add_argument("--every", type=int, default=50)
  ap.add_argument("--lr", type=float, default=3e-3)
  a = ap.parse_args()
  world.SPEED_PX = tuple(int(x) for x in a.speeds.split(","))   # the world reads it when drawing
  wd = Path(a.workdir)
  c = ml_collections.ConfigDict(read_json(wd / "config.json"))
  vq = load_module(wd / "vq.npz", E._vq_model(c))
  enc = nnx.jit(vqvae.encode)
  cfg = E.model_config(c, vq.codebook_size).video(False)
  graphdef, params = nnx.split(CogVideo(cfg, rngs=nnx.Rngs(params=c.seed)), nnx.Param)
  batches = Batches(cfg=cfg, encode=lambda f: enc(vq, f), kind="video", batch=c.video_train.batch,
                    seed=c.seed, stage1_prob=1.0, stage1_fps=(8,), first_frame_loss=True,
                    caption_dropout=0.0, two_object_prob=0.0)
  tx = optax.adam(a.lr)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, b):
    def loss(p):
      nll = code_nll(batch_logits(nnx.merge(graphdef, p), b), b["targets"])
      return (nll * b["weights"]).sum() / b["weights"].sum(), nll
    (l, nll), g = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, updates), opt, nll

  t0 = time.perf_counter()
  for i in range(a.steps):
    b = batches(i)
    params, opt, nll = step(params, opt, b)
    if (i + 1) % a.every == 0:
      t, w = np.roll(b["time"], -1, axis=1), b["weights"]
      per = [float((np.asarray(nll) * w * (t == k)).sum() / (w * (t == k)).sum()) for k in range(5)]
      print(json.dumps({"speeds_px_per_tick": world.SPEED_PX, "step": i + 1,
                        "train_loss_by_frame": [round(x, 4) for x in per],
                        "seconds": round(time.perf_counter() - t0)}), flush=True)


if __name__ == "__main__":
  main()
