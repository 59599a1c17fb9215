"""A DPR-style dual encoder (Karpukhin et al. 2020) on BERT towers, and its in-batch loss.

The paper (arXiv 2207.07087 §3; release PT-Retrieval/dpr) tunes DPR with P-tuning v2: separate
question and passage encoders, each a frozen BERT with its own deep prompts (prefix keys and
values at every layer), [CLS] representations, dot-product scores, and for each question the
negative log-likelihood of its positive passage among every passage of the batch (the B
positives and the B hard negatives, one BM25 negative per question).

Ours: `towers` 'separate' (the paper's) or 'shared'; `pool` 'cls' (the paper's) or 'mean' (how
all-MiniLM-L6-v2 was trained); `score` 'dot' (the paper's) or 'cos' (MiniLM's), cosine scores
multiplied by `scale` (sentence-transformers' 20) so that a softmax over them is not flat.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxpapers.nn.bert import Bert, mean_pool

TOWERS, POOLS, SCORES = ("separate", "shared"), ("cls", "mean"), ("dot", "cos")


class DualEncoder(nnx.Module):
  def __init__(self, query: Bert, doc: Bert | None, *, pool: str, score: str, scale: float):
    """`doc` None: one tower for queries and documents (shared)."""
    if pool not in POOLS or score not in SCORES:
      raise ValueError(f"pool must be one of {POOLS} and score one of {SCORES}, got {pool!r}, "
                       f"{score!r}")
    self.query = query
    self.doc = doc
    self.pool, self.score, self.scale = pool, score, float(scale if score == "cos" else 1.0)

  def tower(self, side: str) -> Bert:
    return self.query if side == "query" or self.doc is None else self.doc

  def embed(self, side: str, ids, mask, dropout_key=None):
    """[B, T] token ids and mask -> [B, E] representations (unit length for cosine scores)."""
    h = self.tower(side)(ids, mask, dropout_key=dropout_key)
    if self.pool == "cls":
      e = h[:, 0]
      if self.score == "cos":
        e = e / jnp.maximum(jnp.linalg.norm(e, axis=-1, keepdims=True), 1e-12)
      return e
    return mean_pool(h, mask, normalize=self.score == "cos")

  def scores(self, q, d):
    """[Q, E] x [D, E] -> [Q, D]: the retrieval scores (scale * cosine, or dot products)."""
    return self.scale * (q @ d.T)


def loss_fn(model: DualEncoder, batch: dict, dropout_key) -> tuple[jax.Array, dict]:
  """DPR's loss: question i's positive is passage i among the B positives then the B hard
  negatives of the batch; mean negative log-likelihood; `accuracy`: the positive ranked first."""
  kq, kd = (None, None) if dropout_key is None else jax.random.split(dropout_key)
  q = model.embed("query", batch["q_ids"], batch["q_mask"], kq)
  docs = {k: jnp.concatenate([batch[f"p_{k}"], batch[f"n_{k}"]]) for k in ("ids", "mask")}
  d = model.embed("doc", docs["ids"], docs["mask"], kd)
  logits = model.scores(q, d)
  target = jnp.arange(q.shape[0])
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, target).mean()
  return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == target)}
