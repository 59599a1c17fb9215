"""MAE-GEBD's ladder (arXiv 2206.08610, Table 1) on the generated GEBD benchmark, scored by the
Kinetics-GEBD protocol (jaxpapers/gebd): baseline, soft labels, pseudo labels, segmentation
alignment, a video-MAE model, the ensemble.

`benchmark` is every parameter of the generator (jaxpapers/gebd/benchmark.py); `base_model` and
`mae` the two architectures (jaxpapers/gebd/models.py); `thresholds` the peak thresholds the
validation set chooses from.

Presets: default (3 seeds), `quick` (1 seed, fewer steps; <= 10 min on 2 CPU cores), `tiny` (tests). `--config.mae_scratch=True` adds the MAE architecture fine-tuned
without pre-training.
"""
import dataclasses

import ml_collections

from jaxpapers.gebd.benchmark import BenchmarkConfig
from jaxpapers.gebd.models import BaseConfig, MAEConfig

PRESETS = (None, "default", "quick", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = "gebd/ladder"
  c.seed = 0
  c.seeds = 3                   # seed, seed+1, ...: videos, raters, every model
  c.benchmark = dataclasses.asdict(BenchmarkConfig())
  c.base_model = dataclasses.asdict(BaseConfig())
  c.base = dict(steps=800, batch=16, lr=1e-3, eval_every=200, glue_prob=0.3)
  c.pseudo_share = 0.5          # share of a pseudo step's batches drawn from the pseudo-labelled pool
  c.mae = dataclasses.asdict(MAEConfig())
  c.mae_pretrain = dict(steps=800, batch=16, lr=1e-3)
  c.mae_finetune = dict(steps=400, batch=16, lr=5e-4, eval_every=200)
  c.mae_scratch = False         # also fine-tune the MAE architecture without pre-training (a row of ours)
  c.thresholds = (0.02, 0.04, 0.06, 0.08) + tuple(round(0.1 + 0.05 * i, 2) for i in range(13))
  c.eval_batch = 64
  c.train = dict(schedule="cosine", warmup=0.05, end_lr_ratio=0.05, weight_decay=0.05, b1=0.9,
                 b2=0.999, eps=1e-8, clip=1.0, grad_accum=1, log_every=50, eval_every=0,
                 ckpt_every=0, keep=1, on_nonfinite="skip", max_consecutive_skips=5,
                 inject_nan_step=-1, tensorboard=False)
  c.mesh = dict(shape=(-1,), axes=("data",))
  c.progress = True
  if arg == "quick":
    c.seeds = 1
    c.base.update(steps=500, eval_every=250)
    c.mae_pretrain.update(steps=500)
    c.mae_finetune.update(steps=300, eval_every=150)
  elif arg == "tiny":
    c.seeds = 1
    c.benchmark.update(train=24, val=16, test=16, unlabelled=16)
    c.base_model.update(conv=(8, 8, 16), hidden=16, layers=1, heads=2, mlp=32)
    c.mae.update(hidden=16, layers=1, heads=2, mlp=32, dec_hidden=16, dec_layers=1, dec_heads=2)
    c.base.update(steps=4, batch=8, eval_every=4)
    c.mae_pretrain.update(steps=3, batch=8)
    c.mae_finetune.update(steps=4, batch=8, eval_every=4)
    c.mae_scratch = False
    c.thresholds = (0.3, 0.5)
    c.eval_batch = 16
  return c
