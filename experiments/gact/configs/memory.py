"""GACT levels on a GLM layer stack (arXiv 2206.11357): memory, max batch, loss, step time.

Presets: default (16 layers at d_model 256, 300 steps), `quick` (8 layers, 80 steps at batch 16;
7 min measured on 2 cores),
`tiny` (tests)."""
import ml_collections

PRESETS = (None, "default", "quick", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = "gact/memory"
  c.seed = 0
  c.family = "transformer"
  c.data = dict(corpus="austen", vocab_size=1024)
  c.model = dict(num_layers=16, d_model=256, num_heads=8)
  c.seq_len = 64
  c.levels = ("L0", "L1", "L2", "L2.2", "plain")   # "plain": no remat, no compression
  c.mode = "recompute"          # each layer saves its compressed input (GACT + checkpointing)
  c.adapt_interval = 100        # steps between re-estimates of the adaptive allocation
  c.probe_batch = 8             # sub-batch of the sensitivity estimate
  c.memory_batch = 128          # activation memory = temp bytes at this batch - at batch 1
  c.budget_batch = 128          # memory budget = L0's train step at this batch
  c.max_batch_limit = 4096
  c.eval_samples = 64
  c.train = dict(steps=300, batch=32, lr=2e-3, warmup=0.05, end_lr_ratio=0.1, weight_decay=0.1,
                 b1=0.9, b2=0.95, eps=1e-8, clip=1.0)
  if arg == "quick":
    c.model.update(num_layers=8)
    c.train.update(steps=80, batch=16)
    c.adapt_interval = 40
  elif arg == "tiny":
    c.data.update(vocab_size=512)
    c.model.update(num_layers=3, d_model=64, num_heads=4)
    c.seq_len = 32
    c.levels = ("L0", "L1", "L2.2", "plain")
    c.train.update(steps=4, batch=8)
    c.adapt_interval = 2
    c.probe_batch = 4
    c.budget_batch = 8
    c.memory_batch = 8
    c.max_batch_limit = 64
    c.eval_samples = 8
  return c
