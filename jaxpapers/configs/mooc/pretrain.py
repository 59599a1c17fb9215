"""Pre-training for adaptive learning in MOOCs (arXiv 2208.04708): one masked-behaviour model on
simulated MOOC logs, fine-tuned for recommendation, knowledge tracing and dropout prediction and
probed for resource evaluation, against the same model from scratch and each task's baselines
(jaxpapers/mooc).

`world` and `students` are every parameter of the simulator (jaxpapers/mooc/world.py,
simulator.py). `--config.kt_file=PATH --config.kt_format=dkt|assistments` adds the knowledge-
tracing comparison (ours pre-trained / scratch, DKT, SAKT) on a file's students.

Presets: default (3 seeds x 8,000 students), `quick` (2 seeds x 3,000 students, <= 10 min on 2
CPU cores), `tiny` (tests).
"""
import dataclasses

import ml_collections

from jaxpapers.mooc.simulator import StudentConfig
from jaxpapers.mooc.world import WorldConfig

PRESETS = (None, "default", "quick", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = "mooc/pretrain"
  c.seed = 0
  c.seeds = 3                   # seed, seed+1, ...: world, students, splits, every model
  c.n_students = 8000
  c.split = dict(val=0.1, test=0.2)
  c.world = dataclasses.asdict(WorldConfig())
  c.students = dataclasses.asdict(StudentConfig())
  c.model = dict(hidden=64, layers=2, heads=4, mlp=128, max_len=64, dropout=0.1, text=True,
                 concept=True, meta=True)
  c.pretrain = dict(steps=2000, batch=64, lr=1e-3, mask_prob=0.15, response_prob=0.15)
  c.finetune = dict(steps=800, batch=32, lr=1e-3, eval_every=200)
  c.train = dict(schedule="cosine", warmup=0.1, end_lr_ratio=0.1, weight_decay=0.01, b1=0.9,
                 b2=0.999, eps=1e-8, clip=1.0, grad_accum=1, log_every=50, eval_every=0,
                 ckpt_every=0, keep=1, on_nonfinite="skip", max_consecutive_skips=5,
                 inject_nan_step=-1, tensorboard=False)
  c.dropout_obs = 16            # tokens observed before predicting dropout
  c.eval_batch = 256
  c.baselines = dict(lr_l2=(1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0),
                     ridge_lambda=(1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5))
  c.kt_file = ""
  c.kt_format = "dkt"
  c.mesh = dict(shape=(-1,), axes=("data",))
  c.progress = True
  if arg == "quick":
    c.seeds = 2
    c.n_students = 3000
    c.pretrain.steps = 500
    c.finetune.update(steps=200, eval_every=100)
  elif arg == "tiny":
    c.seeds = 1
    c.n_students = 400
    c.world.update(n_courses=4, concepts_per_course=6)
    c.model.update(hidden=16, layers=1, heads=2, mlp=32, text=False)
    c.pretrain.update(steps=6, batch=16)
    c.finetune.update(steps=4, batch=16, eval_every=4)
    c.eval_batch = 64
    c.baselines.update(lr_l2=(1e-2,), ridge_lambda=(1.0, 10.0))
  return c
