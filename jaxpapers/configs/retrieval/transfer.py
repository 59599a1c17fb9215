"""Prompt-tuned dense retrievers (arXiv 2207.07087): P-tuning v2 deep prompts on a frozen
all-MiniLM-L6-v2 dual encoder vs full fine-tuning, BitFit, the encoder as shipped and BM25;
trained on WordNet gloss -> synset pairs of six topics, tested in domain (held-out glosses),
across topics (six other lexnames), and across domains (man pages, Python docs), zero-shot.

Training as the release's DPR scripts (PT-Retrieval/run_scripts): AdamW without weight decay,
eps 1e-8, gradient clipping 2.0, 5% linear warmup then linear decay to 0, one BM25 hard negative
per query, separate query and document towers each with its own prompts, prompt dropout 0.1.
Theirs: BERT-base, batch 128, 40 epochs of NQ and friends, prompt length 64 (lr 1e-2; FT 1e-5).
Ours: MiniLM (22.7M), batch 16, one epoch of 2,400 pairs, prompt length 64; each mode's learning
rate chosen from `lr_grid` on the in-domain dev split of a tuning seed. Pooling and score are
MiniLM's (mean, cosine x 20) rather than DPR's ([CLS], dot): `model.pool`, `model.score`.

Presets: default (two seeds, about 45 min on 2 CPU cores), `quick` (<= 10 min: one seed, fixed
learning rates, smaller corpora), `tiny` (a random 2-layer encoder, for tests).
`--config.data.beir='("/path/to/scifact",)'` adds a data set in BEIR's layout as a test setting.
"""
import ml_collections

PRESETS = (None, "default", "quick", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = "retrieval/transfer"
  c.seed = 0
  c.seeds = 2                       # seeds seed, seed+1: sampled data, prompts, dropout, batches
  c.modes = ("bm25", "zeroshot", "ft", "pt", "bitfit")
  c.data = dict(n_train=2400, n_dev=200, n_test=300, n_corpus=2000, n_xdomain=300,
                n_xdomain_corpus=0, query_len=32,
                doc_len=dict(wordnet=32, manpages=128, pydocs=128, beir=128), beir=())
  c.model = dict(encoder="minilm", towers="separate", pool="mean", score="cos", scale=20.0,
                 prefix_len=64, prefix_dropout=0.1, dropout=0.1)
  c.lr = dict(ft=3e-5, pt=1e-2, bitfit=1e-3)
  c.lr_grid = dict(ft=(3e-5, 1e-4), pt=(1e-2, 3e-2), bitfit=(3e-4, 1e-3))
  c.train = dict(epochs=1, batch=16, schedule="linear", warmup=0.05, warmup_start_ratio=0.0,
                 end_lr_ratio=0.0, weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8, clip=2.0,
                 grad_accum=1, log_every=10, eval_every=0, ckpt_every=0, keep=1,
                 on_nonfinite="skip", max_consecutive_skips=5, inject_nan_step=-1,
                 tensorboard=False)
  c.eval = dict(batch=128, k=100, ece_k=5, ece_bins=10)
  c.mesh = dict(shape=(-1,), axes=("data",))
  if arg == "quick":
    c.seeds = 1
    c.lr_grid = dict(ft=(), pt=(), bitfit=())
    c.data.update(n_train=1600, n_corpus=1000, n_test=200, n_xdomain=200, n_xdomain_corpus=600)
    c.data.doc_len.update(manpages=64, pydocs=96)
  elif arg == "tiny":
    c.model.encoder = "tiny"
    c.model.prefix_len = 4
    c.lr_grid = dict(ft=(1e-4, 1e-3), pt=(), bitfit=())
    c.data.update(n_train=64, n_dev=16, n_test=16, n_corpus=40, n_xdomain=16,
                  n_xdomain_corpus=40, query_len=16)
    c.data.doc_len.update(wordnet=16, manpages=24, pydocs=24, beir=24)
    c.train.update(batch=8, log_every=1)
    c.eval.update(batch=32)
  return c
