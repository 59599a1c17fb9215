"""Exact dense retrieval: batched encoding (fixed-size chunks, the last padded, a progress bar),
exact top-k over all document embeddings with `jax.lax.top_k`, and the index saved with the run."""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from jaxpapers.core.workdir import atomic_write_text
from jaxpapers.nn.minilm import Encoded


class Encoder:
  """Jitted `model.embed(side, ...)` over an `Encoded` in chunks of `batch` rows."""

  def __init__(self, batch: int, progress: bool = True):
    self.batch, self.progress = batch, progress
    self._embed = nnx.jit(lambda m, ids, mask, side: m.embed(side, ids, mask),
                          static_argnames="side")

  def __call__(self, model, side: str, enc: Encoded, desc: str = "") -> np.ndarray:
    n, out = len(enc.ids), []
    for s in tqdm(range(0, n, self.batch), desc=desc or f"encode {side}s", unit="chunk",
                  disable=not self.progress, leave=False):
      idx = np.minimum(np.arange(s, s + self.batch), n - 1)
      e = self._embed(model, jnp.asarray(enc.ids[idx]), jnp.asarray(enc.mask[idx]), side=side)
      out.append(np.asarray(e)[:min(self.batch, n - s)])
    return np.concatenate(out)


@jax.jit(static_argnames="k")
def _top_k(q, d, scale, k: int):
  return jax.lax.top_k(scale * (q @ d.T), k)


def search(q: np.ndarray, d: np.ndarray, scale: float, k: int, chunk: int = 256):
  """Exact top-k documents of each query by scale * q.d: (scores [Q, k], indices [Q, k]), best
  first (k is capped at the corpus size)."""
  k = min(k, len(d))
  dj = jnp.asarray(d)
  scores, idx = [], []
  for s in range(0, len(q), chunk):
    v, i = _top_k(jnp.asarray(q[s:s + chunk]), dj, jnp.float32(scale), k)
    scores.append(np.asarray(v))
    idx.append(np.asarray(i))
  return np.concatenate(scores), np.concatenate(idx)


def save_index(path: str | Path, doc_ids: list[str], embeddings: np.ndarray) -> None:
  """The corpus index (document ids and float16 embeddings) as one .npz file."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp.npz")
  np.savez_compressed(tmp, doc_ids=np.array(doc_ids), embeddings=embeddings.astype(np.float16))
  tmp.replace(path)


def load_index(path: str | Path) -> tuple[list[str], np.ndarray]:
  with np.load(path) as f:
    return [str(x) for x in f["doc_ids"]], f["embeddings"].astype(np.float32)


def write_trec_run(path: str | Path, query_ids, doc_ids, scores, idx, tag: str) -> None:
  """The ranking in TREC run format (qid Q0 docid rank score tag), for trec_eval / pytrec_eval."""
  lines = [f"{q} Q0 {doc_ids[j]} {r + 1} {s:.9g} {tag}"
           for q, row_s, row_i in zip(query_ids, scores, idx) for r, (s, j) in
           enumerate(zip(row_s, row_i))]
  atomic_write_text(path, "\n".join(lines) + "\n")
