"""Triple transformation (kgTransformer §3.1): every KG edge (h, r, t) of a query graph or a
sampled subgraph becomes a relation node for r and one for its inverse r^-1, so a relation is a
token the Transformer attends over. Graphs are `jraph.GraphsTuple`s padded to static budgets.

Attention (receiver attends sender; the 1-hop neighbourhood of the transformed graph):
  every node attends itself; a relation node attends its head; a tail attends every relation
  node pointing into it. With the inverse nodes, information flows both ways along each edge.

Token ids: entities 0..E-1, relations E..E+R-1 (inverses included), [MASK] = E+R. Node types,
as the official code: ENTITY, MASK (a masked entity: variable, target or a masked subgraph
node) and RELATION; the type embedding is added to the token embedding."""
from __future__ import annotations

import dataclasses

import jraph
import numpy as np

from jaxpapers.kgt import queries as Q
from jaxpapers.kgt.kg import inverse

ENTITY, MASK, RELATION = 0, 1, 2
NUM_TYPES = 3


@dataclasses.dataclass
class Vocab:
  num_entities: int
  num_relations: int

  @property
  def mask(self) -> int:
    return self.num_entities + self.num_relations

  @property
  def size(self) -> int:
    return self.num_entities + self.num_relations + 1

  def relation(self, r: int) -> int:
    return self.num_entities + r


@dataclasses.dataclass
class Graph:
  """One transformed graph (numpy). `entity_nodes[i]` is the node of local entity i."""
  tokens: np.ndarray       # [n] int32
  types: np.ndarray        # [n] int32
  senders: np.ndarray      # [m] int32
  receivers: np.ndarray    # [m] int32
  entity_nodes: np.ndarray  # [k] node index of each local entity


def transform(entity_tokens, triples, vocab: Vocab) -> Graph:
  """entity_tokens: [k] token of each local entity (an entity id or vocab.mask); triples:
  (i, r, j) over local entity indices. Node order: entities, then per triple (r, r^-1)."""
  k = len(entity_tokens)
  tokens = list(entity_tokens)
  types = [MASK if t == vocab.mask else ENTITY for t in tokens]
  send, recv = list(range(k)), list(range(k))         # self loops
  for i, r, j in triples:
    for head, rel, tail in ((i, r, j), (j, inverse(r), i)):
      node = len(tokens)
      tokens.append(vocab.relation(rel))
      types.append(RELATION)
      send += [node, head, node]                        # self; relation <- head; tail <- relation
      recv += [node, node, tail]
  return Graph(np.asarray(tokens, np.int32), np.asarray(types, np.int32),
               np.asarray(send, np.int32), np.asarray(recv, np.int32), np.arange(k, dtype=np.int32))


@dataclasses.dataclass
class QueryLayout:
  """Where a query's entities sit: anchors (known), variables and the target ([MASK])."""
  graph: Graph
  target: int              # node index of the answer
  variables: list[int]     # node indices of intermediate variables, depth-first order


def query_graph(q, vocab: Vocab) -> QueryLayout:
  """The query graph of a conjunctive query (kgTransformer §3.1, Figure 2): anchors carry their
  entity token, variables and the target carry [MASK]. Unions are split by `queries.branches`."""
  if Q.type_of(q) in ("2u", "up"):
    raise ValueError("union queries are scored per DNF branch (queries.branches)")
  tokens, triples = [], []

  def new(token):
    tokens.append(token)
    return len(tokens) - 1

  def build(x, out: int | None) -> int:
    """Builds x; its answer node is `out` (created when None). Returns the answer node."""
    if isinstance(x, int):
      return new(x)
    if Q.is_path(x):
      node = build(x[0], None)
      for n, r in enumerate(x[1]):
        last = n == len(x[1]) - 1
        nxt = out if (last and out is not None) else new(vocab.mask)
        triples.append((node, r, nxt))
        node = nxt
      return node
    node = out if out is not None else new(vocab.mask)
    for b in x:
      build(b, node)
    return node

  target = build(q, None)
  variables = [i for i, t in enumerate(tokens) if t == vocab.mask and i != target]
  g = transform(tokens, triples, vocab)
  return QueryLayout(g, target, variables)


def batch(graphs: list[Graph], n_node: int, n_edge: int, n_graph: int) -> jraph.GraphsTuple:
  """Batches graphs and pads them to static budgets (`jraph.pad_with_graphs`) so one compiled
  step serves every batch; padding lives in its own graph and never touches real nodes."""
  gts = [jraph.GraphsTuple(nodes={"tokens": g.tokens, "types": g.types}, edges=None,
                           senders=g.senders, receivers=g.receivers,
                           n_node=np.asarray([len(g.tokens)], np.int32),
                           n_edge=np.asarray([len(g.senders)], np.int32), globals=None)
         for g in graphs]
  b = jraph.batch_np(gts)
  if int(b.n_node.sum()) >= n_node or int(b.n_edge.sum()) > n_edge or len(graphs) >= n_graph:
    raise ValueError(f"batch of {len(graphs)} graphs with {int(b.n_node.sum())} nodes and "
                     f"{int(b.n_edge.sum())} edges exceeds the budget ({n_graph - 1} graphs, "
                     f"{n_node - 1} nodes, {n_edge} edges)")
  return jraph.pad_with_graphs(b, n_node, n_edge, n_graph)


def offsets(graphs: list[Graph]) -> np.ndarray:
  """The index of each graph's first node in a batch of these graphs."""
  return np.concatenate([[0], np.cumsum([len(g.tokens) for g in graphs])[:-1]]).astype(np.int32)


def dense_mask(senders, receivers, n: int) -> np.ndarray:
  """[n, n] bool: mask[i, j] is True when node i attends node j."""
  m = np.zeros((n, n), bool)
  m[np.asarray(receivers), np.asarray(senders)] = True
  return m
