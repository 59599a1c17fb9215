"""Answering queries with a trained kgTransformer: entity scores at the target node, unions by
the official rank rule, and reasoning paths (the predicted entities at the variable nodes)."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxpapers.kgt import graph as G
from jaxpapers.kgt import queries as Q
from jaxpapers.kgt import sampling as S
from jaxpapers.kgt.model import KGTransformer
from jaxpapers.kgt.pipeline import query_budget


def on_one_device(state):
  """Parameters as uncommitted arrays on the default device: trained (mesh-sharded), restored and
  loaded parameters then reach a scoring function with one signature, so it compiles once."""
  return jax.device_put(jax.device_get(state))


def rank_positions(scores: np.ndarray) -> np.ndarray:
  """Each entity's position in ascending order of score (the number of entities scoring strictly
  lower, so the best gets E - 1 and tied entities share a position)."""
  srt = np.sort(scores, axis=-1)
  return np.stack([np.searchsorted(s, row, side="left") for s, row in zip(srt, scores)])


def union_scores(branch_scores: list[np.ndarray]) -> np.ndarray:
  """The official rank rule for 2u/up: each DNF branch's scores become rank positions and an
  entity's score is its best position over the branches."""
  return np.max(np.stack([rank_positions(s) for s in branch_scores]), axis=0).astype(np.float32)


@dataclasses.dataclass
class Explanation:
  query: tuple
  answers: list[tuple[int, float]]            # top entities at the target, with probabilities
  variables: list[list[tuple[int, float]]]    # per variable node (depth-first), top entities
  branch: int = 0


class Predictor:
  """Scores batches of queries with one compiled function (static padded budget)."""

  def __init__(self, model: KGTransformer, chunk: int = 256):
    c = model.config
    self.vocab = G.Vocab(c.num_entities, c.num_relations)
    self.graphdef, self.params = nnx.split(model)
    self.chunk = chunk
    self.budget = query_budget(chunk)
    graphdef = self.graphdef

    @jax.jit
    def probs(params, b):
      m = nnx.merge(graphdef, params)
      h = m.encode(b["tokens"], b["types"], b["senders"], b["receivers"])
      return jax.nn.softmax(m.entity_logits(h[b["nodes"]]), -1)
    self._probs = probs

  def use(self, model: KGTransformer) -> None:
    """Score with `model`'s parameters from now on (same architecture: nothing recompiles)."""
    self.params = on_one_device(nnx.state(model))

  def node_probs(self, layouts: list[G.QueryLayout], nodes_of) -> list[np.ndarray]:
    """Softmax over entities at the nodes `nodes_of(layout)` of each layout (<= budget/chunk)."""
    out = []
    for i in range(0, len(layouts), self.chunk):
      part = layouts[i:i + self.chunk]
      want = [nodes_of(l) for l in part]
      budget = S.Budget(self.budget.graphs, self.budget.nodes, self.budget.edges,
                        max(self.chunk, sum(len(w) for w in want)))
      b = S.assemble([l.graph for l in part], want, [[set()] * len(w) for w in want],
                     self.vocab.num_entities, budget)
      p = np.asarray(self._probs(self.params, {k: jnp.asarray(v) for k, v in b.items() if k not in ("labels", "weight")}))
      k = 0
      for w in want:
        out.append(p[k:k + len(w)])
        k += len(w)
    return out

  def scores(self, qtype: str, queries: list) -> np.ndarray:
    """[n, E] scores of the target of each query (union queries: rank rule over branches)."""
    branches = [Q.branches(q) for q in queries]
    nb = len(branches[0])
    layouts = [G.query_graph(b, self.vocab) for bs in branches for b in bs]
    probs = [p[0] for p in self.node_probs(layouts, lambda l: [l.target])]
    per = np.stack(probs).reshape(len(queries), nb, -1)
    if qtype in ("2u", "up"):
      return union_scores([per[:, j] for j in range(nb)])
    return per[:, 0]

  def explain(self, q, top: int = 3) -> list[Explanation]:
    """For each conjunctive branch: the top entities at the target and at every variable node
    (the reasoning path), from the same prediction head (§5.4)."""
    out = []
    for bi, b in enumerate(Q.branches(q)):
      layout = G.query_graph(b, self.vocab)
      p = self.node_probs([layout], lambda l: [l.target] + l.variables)[0]
      best = lambda row: [(int(e), float(row[e])) for e in np.argsort(-row)[:top]]
      out.append(Explanation(b, best(p[0]), [best(r) for r in p[1:]], bi))
    return out
