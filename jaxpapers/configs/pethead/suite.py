"""EH-FT (arXiv 2210.16771): PET + head on a frozen backbone, then full fine-tuning from that
head, against FT, LP-FT and PET alone, on the pretrained all-MiniLM-L6-v2 encoder and six
classification tasks that ship with the project (see jaxpapers/pethead/tasks.py).

Optimiser and schedule as the released code (finetune.sh / run_multiseed.py): AdamW b=(0.9, 0.98),
eps 1e-6, weight decay 0.01 (none on biases and norms), gradient clipping 0.1, linear warmup over
10% of the steps from 0.05 x lr and linear decay to 0.1 x lr, batch 32 there (16 here), dropout
0.1; learning rates: head-only 1e-3, LoRA and BitFit 5e-4, prefix 5e-3; full fine-tuning 1e-5 for
RoBERTa-large there, chosen here per task on the dev split of a tuning seed from `full_lr_grid`
(FT) and used for the full stage of every method. Stage 1 is 10% of 20-400 epochs there, 20% of 5
epochs (one epoch) here. LoRA r=8, alpha=16 on Q, K, V, O; prefix length 17.

Presets: default (six tasks, three seeds; the two long-text tasks, drugs and manpage, cost most:
about 2.5 h on 2 CPU cores), `quick` (<= 10 min: two tasks, one seed, no learning-rate search),
`tiny` (a random 2-layer encoder, for tests). `--config.tasks` also takes JSONL files ({"text", ["text_pair"], "label"}).
"""
import ml_collections

PRESETS = (None, "default", "quick", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = "pethead/suite"
  c.seed = 0
  c.seeds = 3                        # seeds seed, seed+1, ...: split, head, PET init, batches
  c.tasks = ("drugs", "polarity", "lexname", "wic", "gloss_match", "manpage")
  c.methods = ("ft", "lpft", "pet_lora", "ehft_lora", "ehft_bitfit", "ehft_prefix")
  c.data = dict(n_train=320, n_dev=96, n_test=192, default_max_len=64,
                max_len=dict(drugs=128, polarity=48, lexname=32, wic=32, gloss_match=40,
                             manpage=64),
                labels=dict())       # file task name -> its label set (optional)
  c.model = dict(encoder="minilm", pool="cls", dropout=0.1, lora_rank=8, lora_alpha=16.0,
                 prefix_len=17)
  c.stage1_fraction = 0.2           # the release: 0.1 of 20-400 epochs; here 1 of 5 epochs
  c.lr = dict(full=5e-5, head=1e-3, lora=5e-4, bitfit=5e-4, prefix=5e-3)
  c.full_lr_grid = (3e-5, 1e-4)
  c.train = dict(epochs=5, batch=16, schedule="linear", warmup=0.1, warmup_start_ratio=0.05,
                 end_lr_ratio=0.1,
                 weight_decay=0.01, b1=0.9, b2=0.98, eps=1e-6, clip=0.1, grad_accum=1,
                 log_every=10, eval_every=0, ckpt_every=0, keep=1, on_nonfinite="skip",
                 max_consecutive_skips=5, inject_nan_step=-1, tensorboard=False)
  c.eval = dict(batch=64, per_stage=4)
  c.mesh = dict(shape=(-1,), axes=("data",))
  if arg == "quick":
    c.tasks = ("polarity", "wic")
    c.seeds = 1
    c.full_lr_grid = ()
  elif arg == "tiny":
    c.tasks = ("polarity", "wic")
    c.seeds = 2
    c.model.encoder = "tiny"
    c.full_lr_grid = (1e-4, 3e-4)
    c.data.update(n_train=32, n_dev=16, n_test=16)
    c.data.max_len.update(polarity=16, wic=16)
    c.model.update(lora_rank=2, prefix_len=3)
    c.train.update(epochs=2, batch=8, log_every=1)
    c.eval.update(batch=16, per_stage=2)
  return c
