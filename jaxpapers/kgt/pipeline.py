"""Batches for the three kgTransformer stages, each a pure function of the step (so a resumed
run sees the same data): stage 1 masked subgraphs, stage 2 sampled query shapes, fine-tuning
on the training queries. Every batch has one static shape (`sampling.Budget`)."""
from __future__ import annotations

import math

import numpy as np

from jaxpapers.kgt import graph as G
from jaxpapers.kgt import queries as Q
from jaxpapers.kgt import sampling as S

MAX_SUBGRAPH_NODES = 16
MAX_SUBGRAPH_EDGES = 50


def subgraph_budget(batch: int) -> S.Budget:
  """Largest stage-1 batch: 16 entities and 50 triples per subgraph, 40% of entities predicted."""
  nodes = MAX_SUBGRAPH_NODES + 2 * MAX_SUBGRAPH_EDGES
  edges = nodes + 6 * MAX_SUBGRAPH_EDGES
  return S.Budget(batch, batch * nodes, batch * edges, batch * math.ceil(0.4 * MAX_SUBGRAPH_NODES))


def query_budget(batch: int) -> S.Budget:
  """Largest batch of conjunctive query graphs (any of the nine types, unions per branch)."""
  v = G.Vocab(1, 2)
  sizes = [G.query_graph(b, v).graph for t in Q.TYPES
           for b in Q.branches(Q.unflatten(t, [0] * 3, [0] * 3))]
  return S.Budget(batch, batch * max(len(g.tokens) for g in sizes),
                  batch * max(len(g.senders) for g in sizes), batch)


class SubgraphBatches:
  """Stage 1 (§4.1, dense initialisation): one seed triple per subgraph, the training triples
  visited once per epoch in a seeded order; meta-tree or LADIES sampling (`ladies_share`), then
  20-40% of the entities masked (80/10/10 per subgraph) and predicted."""

  def __init__(self, g: S.TrainGraph, vocab: G.Vocab, batch: int, seed: int, ladies_share: float = 0.5,
               mask_ratio=(0.2, 0.4)):
    self.g, self.vocab, self.batch, self.seed = g, vocab, batch, seed
    self.ladies_share, self.mask_ratio = ladies_share, tuple(mask_ratio)
    self.budget = subgraph_budget(batch)

  def seeds(self, step: int) -> list[tuple[int, int, int]]:
    n = len(self.g.triples)
    out = []
    for i in range(step * self.batch, (step + 1) * self.batch):
      epoch, pos = divmod(i, n)
      perm = np.random.default_rng([self.seed, 1, epoch]).permutation(n)
      out.append(tuple(int(x) for x in self.g.triples[perm[pos]]))
    return out

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([self.seed, 2, step])
    graphs, predict, labels = [], [], []
    for seed in self.seeds(step):
      sampler = S.ladies if rng.random() < self.ladies_share else S.meta_tree
      ents, triples = sampler(self.g, seed, rng)
      tokens, chosen = S.mask_entities(ents, rng, self.vocab.num_entities, self.vocab.mask, self.mask_ratio)
      graphs.append(G.transform(tokens, triples, self.vocab))
      predict.append(chosen)
      labels.append([{ents[i]} for i in chosen])
    return S.assemble(graphs, predict, labels, self.vocab.num_entities, self.budget)


class ShapeBatches:
  """Stage 2 (§4.1, sparse refinement): chain- and star-shaped samples of the training graph,
  1p:2p:3p:2i:3i = 4:4:2:1:1, sampled backwards from a random target; the variables and the
  target are [MASK]ed and only the target is predicted, its label the sampled entity (as the
  official code)."""

  def __init__(self, adj: dict, vocab: G.Vocab, batch: int, seed: int, ratios: dict[str, float]):
    self.vocab, self.batch, self.seed = vocab, batch, seed
    self.incoming: dict[int, list] = {}
    for (h, r), tails in sorted(adj.items()):
      for t in sorted(tails):
        self.incoming.setdefault(t, []).append((h, r))
    self.targets = np.array(sorted(self.incoming))
    total = sum(ratios.values())
    self.types = list(ratios)
    self.p = np.array([ratios[t] / total for t in self.types])
    self.budget = query_budget(batch)

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([self.seed, 3, step])
    graphs, predict, labels = [], [], []
    while len(graphs) < self.batch:
      qtype = self.types[rng.choice(len(self.types), p=self.p)]
      target = int(self.targets[rng.integers(len(self.targets))])
      q = Q.sample_structure(Q.STRUCTURES[qtype], target, self.incoming, rng)
      if q is None or Q.degenerate(q):
        continue
      layout = G.query_graph(q, self.vocab)
      graphs.append(layout.graph)
      predict.append([layout.target])
      labels.append([{target}])
    return S.assemble(graphs, predict, labels, self.vocab.num_entities, self.budget)


class QueryBatches:
  """Fine-tuning (§4.2): the training queries of the given types together (multi-task), visited
  once per epoch in a seeded order; each target labelled with all its answers."""

  def __init__(self, split: Q.QuerySplit, types, vocab: G.Vocab, batch: int, seed: int):
    self.vocab, self.batch, self.seed = vocab, batch, seed
    self.queries = [q for t in types for q in split.queries.get(t, [])]
    if not self.queries:
      raise ValueError(f"no training queries of types {tuple(types)}")
    self.answers = [split.answers[q] for q in self.queries]
    self.layouts = [G.query_graph(q, vocab) for q in self.queries]
    self.budget = query_budget(batch)
    self._orders: dict[int, np.ndarray] = {}

  def _order(self, epoch: int) -> np.ndarray:
    if epoch not in self._orders:
      self._orders = {epoch: np.random.default_rng([self.seed, 4, epoch]).permutation(len(self.queries))}
    return self._orders[epoch]

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    n = len(self.queries)
    idx = []
    for i in range(step * self.batch, (step + 1) * self.batch):
      epoch, pos = divmod(i, n)
      idx.append(int(self._order(epoch)[pos]))
    lays = [self.layouts[i] for i in idx]
    return S.assemble([l.graph for l in lays], [[l.target] for l in lays],
                      [[self.answers[i]] for i in idx], self.vocab.num_entities, self.budget)
