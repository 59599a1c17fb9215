"""GLM pretraining on the embedded Austen corpus (GLM-130B, arXiv 2210.02414, §2–§3).

Presets: default (4 layers of width 256 on 8.6M tokens, 54 minutes on 2 CPU cores when measured,
before the layers were unrolled and the loss became optax's, which together cut its gradient's
time by 14%: long enough to write recognisable English), `quick` (at most 5 CPU minutes on 2
cores), `tiny` (seconds; for tests)."""
import ml_collections

PRESETS = (None, "default", "quick", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = "glm/pretrain"
  c.seed = 0
  c.data = dict(corpus="austen", val_fraction=0.05, vocab_size=4096)
  c.model = dict(num_layers=4, d_model=256, num_heads=8, ffn_dim=0, dropout=0.1,
                 emb_grad_shrink=0.1,               # §3 embedding gradient shrink
                 positions="1d",                    # §2.1 GLM-130B 1-D positions; "2d" = GLM
                 rope_base=10000.0, remat=False, embed_init_std=0.02,
                 layer_chunk=0)                     # > 0: micro-batched layers (less memory)
  c.objective = dict(seq_len=128, mask_ratio=0.15, span_lambda=3.0,  # §2.1 [MASK] spans
                     gmask_prob=0.7)                # §2.1: 30% [MASK], 70% [gMASK]
  c.mesh = dict(shape=(-1, 1), axes=("data", "model"))
  # 2,100 steps x 32 x 128 tokens = 8.6M (about 9 passes over the training text), 1.3-1.4 s per
  # step on 2 cores (experiments/bench/glm_step.py at this shape, no remat) with scanned layers;
  # unrolled layers and optax's loss since (GLMConfig.remat): a gradient 1.23 s instead of 1.43
  c.train = dict(steps=2100, batch=32, lr=1e-3, warmup=0.03, end_lr_ratio=0.1,
                 weight_decay=0.1, b1=0.9, b2=0.95, eps=1e-8, clip=1.0, grad_accum=1,
                 log_every=10, eval_every=500, ckpt_every=500, keep=3,
                 on_nonfinite="skip", max_consecutive_skips=5,  # then the run stops
                 inject_nan_step=-1, tensorboard=True)
  c.eval = dict(batch=32, ppl_samples=256, blank_samples=128, last_word_samples=256,
                peak_sizes=(512, 1024, 2048),   # mfu_cpu: against the best n x n x n matmul
                peak_rounds=5)                  # FLOP/s over these sizes and rounds
  c.generate = dict(max_new_tokens=40, strategy="greedy", top_k=40, top_p=0.9, temperature=0.8,
                    prompts=("It is a truth universally acknowledged, that",
                             "Emma was very [MASK] to see Mr. Knightley."))
  if arg == "quick":
    c.data.update(vocab_size=1024)
    c.model.update(num_layers=2, d_model=256, num_heads=8, dropout=0.0, remat=True)
    c.objective.update(seq_len=64)
    c.train.update(steps=600, batch=32, lr=2e-3, warmup=0.05, eval_every=0, ckpt_every=300)
    c.eval.update(ppl_samples=96, blank_samples=64, last_word_samples=128)
  elif arg == "tiny":
    c.data.update(vocab_size=512)
    c.model.update(num_layers=2, d_model=64, num_heads=4, dropout=0.0, remat=True)
    c.objective.update(seq_len=32)
    c.train.update(steps=6, batch=8, lr=3e-3, warmup=1, log_every=1, eval_every=3, ckpt_every=2,
                   tensorboard=False)
    c.eval.update(batch=8, ppl_samples=8, blank_samples=8, last_word_samples=8,
                  peak_sizes=(256,), peak_rounds=2)   # 2048 costs seconds, a tiny run's budget
    c.generate.update(max_new_tokens=4)
  return c
