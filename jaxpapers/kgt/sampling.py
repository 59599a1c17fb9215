"""Pre-training data (kgTransformer §4.1): subgraphs sampled from the training graph, with a
share of their entities masked BERT-style, and budgets that keep every batch one static shape."""
from __future__ import annotations

import dataclasses

import numpy as np

from jaxpapers.kgt import graph as G


@dataclasses.dataclass
class TrainGraph:
  """The training graph for sampling: out-edges per entity (inverse edges included) and, per
  unordered entity pair, the forward triples between them (for induced edges)."""
  rel: list[np.ndarray]
  tail: list[np.ndarray]
  pairs: dict[tuple[int, int], list[tuple[int, int, int]]]
  triples: np.ndarray                  # [n, 3] forward training triples (the seeds)

  @classmethod
  def of(cls, triples: np.ndarray, num_entities: int) -> "TrainGraph":
    t = np.asarray(triples, np.int64)
    both = np.concatenate([t, np.stack([t[:, 2], t[:, 1] ^ 1, t[:, 0]], 1)])
    order = np.lexsort((both[:, 2], both[:, 1], both[:, 0]))
    e = both[order]
    starts = np.searchsorted(e[:, 0], np.arange(num_entities + 1))
    pairs: dict = {}
    for h, r, tl in t.tolist():
      pairs.setdefault((min(h, tl), max(h, tl)), []).append((h, r, tl))
    return cls([e[starts[i]:starts[i + 1], 1] for i in range(num_entities)],
               [e[starts[i]:starts[i + 1], 2] for i in range(num_entities)], pairs, t)

  def degree(self, u: int) -> int:
    return len(self.tail[u])

  def induced(self, ents: list[int], keep: float, rng, fixed: list[tuple], max_edges: int) -> list[tuple]:
    """`fixed` (local triples) plus each other training triple among `ents`, kept with
    probability `keep`, at most `max_edges` in all; local indices."""
    index = {e: i for i, e in enumerate(ents)}
    out, seen = list(fixed), set(fixed)
    for a in range(len(ents)):
      for b in range(a + 1, len(ents)):
        u, w = sorted((ents[a], ents[b]))
        for h, r, t in self.pairs.get((u, w), ()):
          tr = (index[h], r, index[t])
          if tr not in seen and rng.random() < keep:
            seen.add(tr)
            out.append(tr)
    if len(out) > max_edges:
      extra = rng.permutation(len(out) - len(fixed))[:max_edges - len(fixed)]
      out = out[:len(fixed)] + [out[len(fixed) + i] for i in sorted(extra)]
    return out


def meta_tree(g: TrainGraph, seed: tuple[int, int, int], rng: np.random.Generator, steps=(5, 15),
              max_nodes: int = 16, keep: float = 0.8, max_edges: int = 50):
  """The official meta-tree sampler (kgTransformer §4.1, dense initialisation): from a seed
  triple, 5-15 growth steps each attach a random neighbour of a random tree node by a random edge
  (an edge that would close a cycle is skipped), at most `max_nodes` entities; then the other
  training edges among the tree's entities are added with probability `keep`. Returns
  (entities, local triples)."""
  h, r, t = seed
  ents, index = [h, t], {h: 0, t: 1}
  tree = [(0, r, 1)]
  for _ in range(int(rng.integers(steps[0], steps[1] + 1))):
    if len(ents) >= max_nodes:
      break
    u = ents[int(rng.integers(len(ents)))]
    j = int(rng.integers(g.degree(u)))
    rel, w = int(g.rel[u][j]), int(g.tail[u][j])
    if w in index:
      continue
    index[w] = len(ents)
    ents.append(w)
    # store the triple in its forward direction (even relation id), as the KG holds it
    tree.append((index[u], rel, index[w]) if rel % 2 == 0 else (index[w], rel ^ 1, index[u]))
  return ents, g.induced(ents, keep, rng, tree, max_edges)


def ladies(g: TrainGraph, seed: tuple[int, int, int], rng: np.random.Generator, max_new: int = 8,
           keep: float = 0.8, max_edges: int = 50):
  """LADIES-style layer-wise importance sampling (Zou et al. 2019), the official second dense
  sampler: from both ends of a seed triple, n ∈ [1, max_new] entities are added over 1..n layers;
  a layer samples among the neighbours of the previous one without replacement with probability
  ∝ Σ_u Â[u, v]² (Â the row-normalised A + I); then induced edges are kept with probability
  `keep`. One edge by which each entity was reached is always kept (the official code may drop
  it and leave the entity isolated). Returns (entities, local triples)."""
  h, r, t = seed
  ents, index = [h, t], {h: 0, t: 1}
  fixed = [(0, r, 1)]
  n = int(rng.integers(1, max_new + 1))
  layers = int(rng.integers(1, n + 1))
  sizes = [n // layers + (i < n % layers) for i in range(layers)]
  frontier = [h, t]
  for size in sizes:
    prob: dict[int, float] = {}
    via: dict[int, list] = {}
    for u in frontier:
      a2 = 1.0 / (g.degree(u) + 1) ** 2
      for rel, w in zip(g.rel[u].tolist(), g.tail[u].tolist()):
        if w not in index:
          prob[w] = prob.get(w, 0.0) + a2
          via.setdefault(w, []).append((u, rel))
    if not prob:
      break
    cand = np.array(sorted(prob))
    p = np.array([prob[c] for c in cand])
    take = sorted(int(x) for x in rng.choice(cand, size=min(size, len(cand)), replace=False, p=p / p.sum()))
    for w in take:
      index[w] = len(ents)
      ents.append(w)
      u, rel = via[w][int(rng.integers(len(via[w])))]     # one edge that reached w is always kept
      fixed.append((index[u], rel, index[w]) if rel % 2 == 0 else (index[w], rel ^ 1, index[u]))
    frontier = take
  return ents, g.induced(ents, keep, rng, fixed, max_edges)


def mask_entities(ents: list[int], rng: np.random.Generator, num_entities: int, mask_token: int,
                  ratio: tuple[float, float] = (0.2, 0.4)) -> tuple[list[int], list[int]]:
  """Masking of stage 1 (§4.1): a share drawn from `ratio` of the entities (at least one) is
  predicted; the 80/10/10 rule is drawn once per subgraph, as the official code does: with 0.8
  all chosen entities become [MASK], with 0.1 random entities, with 0.1 they stay. Returns
  (input tokens, local indices to predict)."""
  k = len(ents)
  m = min(k, max(1, int(round(rng.uniform(*ratio) * k))))
  chosen = sorted(rng.choice(k, size=m, replace=False).tolist())
  tokens = list(ents)
  u = rng.random()
  for i in chosen:
    if u < 0.8:
      tokens[i] = mask_token
    elif u < 0.9:
      tokens[i] = int(rng.integers(num_entities))
  return tokens, chosen


@dataclasses.dataclass(frozen=True)
class Budget:
  """Static batch shape: graphs, nodes, edges and predictions (+1 padding graph/node)."""
  graphs: int
  nodes: int
  edges: int
  predictions: int


def assemble(graphs: list[G.Graph], predict: list[list[int]], labels: list[list[set[int]]],
             num_entities: int, budget: Budget) -> dict[str, np.ndarray]:
  """One training/eval batch as a dict of arrays: the padded graph (tokens, types, senders,
  receivers), prediction node indices, multi-hot labels and weights (0 on padding rows).
  predict[g] are node indices within graph g; labels[g][i] the answer set of predict[g][i]."""
  b = G.batch(graphs, budget.nodes + 1, budget.edges, budget.graphs + 1)
  off = G.offsets(graphs)
  nodes = np.zeros(budget.predictions, np.int32)
  lab = np.zeros((budget.predictions, num_entities), np.float32)
  weight = np.zeros(budget.predictions, np.float32)
  p = 0
  for g, (idx, sets) in enumerate(zip(predict, labels)):
    for i, s in zip(idx, sets):
      if p >= budget.predictions:
        raise ValueError(f"more than {budget.predictions} predictions in a batch")
      nodes[p] = off[g] + i
      lab[p, sorted(s)] = 1.0
      weight[p] = 1.0
      p += 1
  return {"tokens": b.nodes["tokens"].astype(np.int32), "types": b.nodes["types"].astype(np.int32),
          "senders": b.senders.astype(np.int32), "receivers": b.receivers.astype(np.int32),
          "nodes": nodes, "labels": lab, "weight": weight}
