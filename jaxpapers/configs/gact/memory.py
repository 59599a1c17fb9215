"""GACT levels on a GLM layer stack (arXiv 2206.11357): memory, max batch, loss, step time.

Families: `transformer` (a scanned GLM stack, compressed-recompute mode), `cnn` (a ResNet on
Fashion-MNIST, GACT's residual mode) and `gnn` (a GCN on WordNet lexnames, full graph; its layers
scanned as one compressed stack, or with `gnn.layout="blocks"` in residual mode).
The GLM's layers and head run over in-place micro-batches of 8 sequences at every level
(`layer_chunk`, `head_chunk`); transformer memory is measured at batch 1024 and 2048 (compile
only). The GLM stack has 24 layers, the depth of BERT-large in GACT's §6.
Presets: default (24 layers of width 256, 300 steps, every level; ResNet 300 steps; GCN on all
117,659 synsets, 200 steps), `quick` (24 layers of width 128, 200 steps at batch 16; ResNet 100
steps at batch 64; GCN on the first 40,000 synsets, 100 steps; levels L0, L1, L2, L2.2, remat,
plain), `tiny` (a smoke run)."""
import ml_collections

PRESETS = (None, "default", "quick", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = "gact/memory"
  c.seed = 0
  c.families = ("transformer", "cnn", "gnn")
  c.data = dict(corpus="austen", vocab_size=1024)
  # layer_chunk / head_chunk: every level (L0 included) runs each layer and the tied head over
  # in-place micro-batches of this many sequences, recomputed in the backward (GLM `layer_chunk`,
  # `head_loss`): the framework's most memory-frugal uncompressed layout, so L0 keeps only the
  # layer inputs, one [B, T, E] buffer and one micro-batch's working set, and those layer inputs
  # are what GACT compresses
  c.model = dict(num_layers=24, d_model=256, num_heads=8, layer_chunk=8)
  c.head_chunk = 8
  c.seq_len = 64
  # remat: GLM's own scan under jax.checkpoint (micro-batched); plain: no remat, no micro-batches
  c.levels = ("L0", "L1", "L1.1", "L1.2", "L2", "L2.1", "L2.2", "remat", "plain")
  c.mode = "recompute"          # each layer saves its compressed input (GACT + checkpointing)
  c.adapt_interval = 100        # steps between re-estimates of the adaptive allocation
  c.probe_batch = 8             # sub-batch of the sensitivity estimate
  # activation memory = temp bytes at memory_batch - at batch 1 (and, marginal, at 2 x memory_batch
  # - at memory_batch); micro-batched, the activations of batch 128 fit in the temporaries AdamW
  # needs at batch 1 anyway, so measure at 1024
  c.memory_batch = 1024
  c.budget_batch = 1024         # memory budget = L0's train step at this batch
  c.max_batch_limit = 32768
  c.eval_samples = 64
  # lr 1e-3: on the quick 24-layer stack (200 steps, batch 16) the uncompressed model leaves the
  # unigram plateau (held-out loss 5.94) only at lr <= 1.4e-3: 5e-4 5.76, 7e-4 5.70, 1e-3 5.42,
  # 1.4e-3 5.49, 2e-3 5.88, 5e-3 5.94, 1e-2 5.94 (a sweep of this session; see the README)
  c.train = dict(steps=300, batch=32, lr=1e-3, warmup=0.05, end_lr_ratio=0.1, weight_decay=0.1,
                 b1=0.9, b2=0.95, eps=1e-8, clip=1.0)
  c.cnn = dict(widths=(16, 32, 64), blocks_per_stage=2, memory_batch=256, budget_batch=256,
               max_batch_limit=8192, probe_batch=64, adapt_interval=100,
               train=dict(steps=300, batch=64, lr=3e-3, warmup=0.05, end_lr_ratio=0.05,
                          weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-8, clip=1.0))
  # gnn layout: "stack" (identical GCN layers scanned; L0 = scan + jax.checkpoint, compressed-
  # recompute levels) or "blocks" (layers in a Python loop, L0 plain, GACT's residual mode)
  c.gnn = dict(layout="stack", feature_dim=64, hidden=64, num_layers=3, max_nodes=None, memory_batch=117659,
               budget_batch=117659, max_batch_limit=4_000_000, adapt_interval=100,
               train=dict(steps=200, batch=1, lr=1e-2, warmup=0.05, end_lr_ratio=0.1,
                          weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8, clip=1.0))
  if arg == "quick":
    c.levels = ("L0", "L1", "L2", "L2.2", "remat", "plain")
    c.model.update(num_layers=24, d_model=128, num_heads=4)
    c.train.update(steps=200, batch=16)
    c.adapt_interval = 50
    c.cnn.update(probe_batch=16, adapt_interval=100)
    c.cnn.train.update(steps=100)
    c.gnn.update(max_nodes=40000, memory_batch=40000, budget_batch=40000, adapt_interval=100)
    c.gnn.train.update(steps=100)
  elif arg == "tiny":
    c.data.update(vocab_size=512)
    c.model.update(num_layers=3, d_model=64, num_heads=4, layer_chunk=4)
    c.head_chunk = 4
    c.seq_len = 32
    c.levels = ("L0", "L1", "L2.2", "remat", "plain")
    c.train.update(steps=4, batch=8)
    c.adapt_interval = 2
    c.probe_batch = 4
    c.budget_batch = 8
    c.memory_batch = 8
    c.max_batch_limit = 64
    c.eval_samples = 8
    c.cnn.update(widths=(8, 16), blocks_per_stage=1, memory_batch=16, budget_batch=16,
                 max_batch_limit=64, probe_batch=8, adapt_interval=2)
    c.cnn.train.update(steps=4, batch=16)
    c.gnn.update(hidden=16, num_layers=2, max_nodes=2000, memory_batch=2000, budget_batch=2000,
                 max_batch_limit=20000, adapt_interval=2)
    c.gnn.train.update(steps=4)
  return c
