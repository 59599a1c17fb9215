"""Embedded graph data: WordNet 3.0 synsets as a node-classification graph (lexname labels)."""
from __future__ import annotations

import io
from importlib import resources

import numpy as np


def load_wordnet_lexname(feature_dim: int = 64, seed: int = 0, split: tuple[float, float] = (0.6, 0.2),
                         max_nodes: int | None = None) -> dict[str, np.ndarray]:
  """WordNet's 117,659 synsets; label = lexicographer file (45 classes); 183,789 undirected
  relation edges. Node features: the mean of fixed random unit word vectors (dimension
  `feature_dim`, from `seed`) over the gloss's words (4,095-word vocabulary): a random projection
  of the bag of words, so the features are fixed inputs like ogbn-arxiv's averaged word vectors.

  Returns x [N, feature_dim] float32, y [N] int32, senders/receivers [2E] int32 (both directions),
  train/val/test boolean masks (a random `split` of the nodes, rest = test), class names.
  `max_nodes`: keep the subgraph induced by the first max_nodes synsets (WordNet's file order:
  nouns first, by offset) for a smaller problem; the 45 class ids are kept."""
  raw = resources.files("jaxpapers.data").joinpath("assets", "wordnet_lexname.npz").read_bytes()
  d = np.load(io.BytesIO(raw))
  rng = np.random.default_rng(seed)
  indptr, tokens = d["gloss_indptr"], d["gloss_tokens"].astype(np.int64)
  n = len(d["labels"]) if max_nodes is None else min(int(max_nodes), len(d["labels"]))
  if n < 2:
    raise ValueError(f"max_nodes must be at least 2, got {max_nodes}")
  indptr = indptr[:n + 1]
  tokens = tokens[:indptr[-1]]
  vecs = rng.standard_normal((int(tokens.max()) + 1, feature_dim)).astype(np.float32)
  vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
  counts = np.diff(indptr)
  sums = np.zeros((n, feature_dim), np.float32)
  np.add.at(sums, np.repeat(np.arange(n), counts), vecs[tokens])
  x = sums / np.maximum(counts, 1)[:, None] * np.sqrt(feature_dim)
  e = d["edges"]
  e = e[(e[:, 0] < n) & (e[:, 1] < n)]
  order = rng.permutation(n)
  a, b = int(split[0] * n), int((split[0] + split[1]) * n)
  mask = lambda idx: np.isin(np.arange(n), idx)
  return {"x": x.astype(np.float32), "y": d["labels"][:n].astype(np.int32),
          "senders": np.concatenate([e[:, 0], e[:, 1]]).astype(np.int32),
          "receivers": np.concatenate([e[:, 1], e[:, 0]]).astype(np.int32),
          "train": mask(order[:a]), "val": mask(order[a:b]), "test": mask(order[b:]),
          "classes": [str(c) for c in d["lexnames"]]}
