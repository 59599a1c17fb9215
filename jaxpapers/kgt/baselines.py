"""Embedding baselines for complex logical queries, as re-implemented in the BetaE codebase
(Ren & Leskovec 2020) and compared against in kgTransformer (Liu et al. 2022, Table 2):

* GQE (Hamilton et al. 2018): a query is a point; projection is translation, intersection a
  DeepSets-style attention over the branches, distance L1.
* Query2Box (Ren et al., ICLR 2020): a query is a box (center, non-negative half-width offset);
  projection translates the center and grows the offset (§3.2), intersection takes an
  attention-weighted center and a shrunk offset (§3.3), and the entity-to-box distance weighs the
  inside part by α (§3.4, eq. 3).
* BetaE (Ren & Leskovec, NeurIPS 2020): entities and queries are products of Beta distributions;
  projection is an MLP on [query; relation] (§3.2), intersection an attention-weighted average of
  the branches' (α, β) (§3.2, eq. 3), the distance the L1 norm of the per-dimension KL divergence
  KL(entity ‖ query) (§3.3, eq. 4). Negation (§3.2) is not among the nine types.

All three take a static query type (one of `queries.TYPES`) and int arrays `anchors` [B, n_anchors],
`relations` [B, n_relations] in the depth-first order of `queries.flatten`, and build the query
embedding by walking `queries.STRUCTURES[qtype]` (one compiled function per type). Unions use
the DNF (Query2Box §3.4, BetaE): one embedding per conjunctive branch (the branches of
`queries.branches`), and an entity's distance is the minimum over the branches."""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
from flax import nnx

from jaxpapers.core.errors import ConfigError, DataError
from jaxpapers.kgt import queries
from jaxpapers.nn.param import param

EPSILON = 2.0    # BetaE's embedding_range = (gamma + epsilon) / dim


def _uniform(lo: float, hi: float):
  def init(key, shape, dtype):
    return jax.random.uniform(key, shape, dtype, lo, hi)
  return init


class _Linear(nnx.Module):
  """torch.nn.Linear(n_in, n_out) as BetaE initialises it: Xavier-uniform kernel, PyTorch's
  default bias U(±1/√n_in); `axes` are the kernel's logical axes."""

  def __init__(self, n_in: int, n_out: int, *, axes=(None, None), rngs: nnx.Rngs):
    self.kernel = param(rngs.params(), nnx.initializers.xavier_uniform(), (n_in, n_out), axes)
    self.bias = param(rngs.params(), _uniform(-n_in ** -0.5, n_in ** -0.5), (n_out,), (None,), decay=False)

  def __call__(self, x):
    return x @ self.kernel[...] + self.bias[...]


class CenterIntersection(nnx.Module):
  """Attention over n branches (BetaE's CenterIntersection; GQE's intersection, Query2Box §3.3's
  center): a = softmax_branches(MLP(x_i)) per dimension, result Σ_i a_i ⊙ x_i."""

  def __init__(self, dim: int, *, rngs: nnx.Rngs):
    self.layer1 = _Linear(dim, dim, axes=("embed", None), rngs=rngs)
    self.layer2 = _Linear(dim, dim, axes=("embed", None), rngs=rngs)

  def __call__(self, xs: jax.Array) -> jax.Array:     # [n, B, d] -> [B, d]
    att = jax.nn.softmax(self.layer2(jax.nn.relu(self.layer1(xs))), axis=0)
    return jnp.sum(att * xs, axis=0)


class BoxOffsetIntersection(nnx.Module):
  """Query2Box §3.3's offset: Min_i(off_i) ⊙ σ(DeepSets(off_1..off_n)), DeepSets = MLP, mean over
  the branches, MLP (BetaE's BoxOffsetIntersection)."""

  def __init__(self, dim: int, *, rngs: nnx.Rngs):
    self.layer1 = _Linear(dim, dim, axes=("embed", None), rngs=rngs)
    self.layer2 = _Linear(dim, dim, axes=("embed", None), rngs=rngs)

  def __call__(self, offs: jax.Array) -> jax.Array:   # [n, B, d] -> [B, d]
    gate = jax.nn.sigmoid(self.layer2(jnp.mean(jax.nn.relu(self.layer1(offs)), axis=0)))
    return jnp.min(offs, axis=0) * gate


def _is_path(s) -> bool:
  return len(s) == 2 and isinstance(s[1], tuple) and len(s[1]) > 0 and all(x == "r" for x in s[1])


class _QueryModel(nnx.Module):
  """The walk over a query structure, the distances and scores; subclasses give the operators."""
  num_entities: int
  gamma: float

  def _anchor(self, ids):
    raise NotImplementedError

  def _project(self, q, rel_ids):
    raise NotImplementedError

  def _intersect(self, qs: list):
    raise NotImplementedError

  def _distance(self, q, v):
    """q: one branch's embedding ([B, d] leaves); v: [B, M, d] or [1, N, d] entity points."""
    raise NotImplementedError

  def embed(self, qtype: str, anchors: jax.Array, relations: jax.Array) -> list:
    """The query's DNF branch embeddings (one for a conjunctive type, two for 2u and up)."""
    if qtype not in queries.STRUCTURES:
      raise ConfigError(f"unknown query type {qtype!r}; the nine types are {queries.TYPES}")
    na, nr = queries.num_anchors(qtype), queries.num_relations(qtype)
    if anchors.ndim != 2 or anchors.shape[1] != na or relations.ndim != 2 or relations.shape[1] != nr \
        or anchors.shape[0] != relations.shape[0]:
      raise DataError(f"{qtype}: expected anchors [B, {na}] and relations [B, {nr}], got "
                      f"{tuple(anchors.shape)} and {tuple(relations.shape)}")
    ai, ri = iter(range(na)), iter(range(nr))

    def build(s) -> list:
      if s == "e":
        return [self._anchor(anchors[:, next(ai)])]
      if _is_path(s):
        qs = build(s[0])
        for _ in s[1]:
          r = relations[:, next(ri)]
          qs = [self._project(q, r) for q in qs]
        return qs
      if s[-1] == ("u",):
        return [q for b in s[:-1] for q in build(b)]
      return [self._intersect(list(c)) for c in itertools.product(*(build(b) for b in s))]
    return build(queries.STRUCTURES[qtype])

  def _entity_rows(self) -> jax.Array:
    """The per-entity table `_distance` reads its candidates' rows from: the embeddings, or
    what a model derives from them once per entity."""
    return self.entity[...]

  def distances(self, qtype: str, anchors: jax.Array, relations: jax.Array,
                candidates: jax.Array | None = None) -> jax.Array:
    """Distance from the query to `candidates` [B, M] entity ids ([B, M]), or to every entity
    ([B, num_entities]) when None; the minimum over a union's branches."""
    ent = self._entity_rows()
    v = ent[None] if candidates is None else jnp.take(ent, candidates, axis=0)
    ds = [self._distance(q, v) for q in self.embed(qtype, anchors, relations)]
    return ds[0] if len(ds) == 1 else jnp.min(jnp.stack(ds), axis=0)

  def scores(self, qtype: str, anchors: jax.Array, relations: jax.Array) -> jax.Array:
    """γ − distance to every entity, [B, num_entities] float32 (higher is better; a union's
    score is the max over its branches)."""
    return (self.gamma - self.distances(qtype, anchors, relations)).astype(jnp.float32)


class GQE(_QueryModel):
  """GQE (Hamilton et al. 2018) as in the BetaE codebase: points; projection q + r; intersection
  by attention (CenterIntersection); distance ‖q − v‖₁; score γ − distance."""

  def __init__(self, num_entities: int, num_relations: int, dim: int, *, gamma: float,
               rngs: nnx.Rngs):
    self.num_entities, self.gamma = num_entities, float(gamma)
    rng = (self.gamma + EPSILON) / dim
    self.entity = param(rngs.params(), _uniform(-rng, rng), (num_entities, dim), ("vocab", "embed"),
                        decay=False)
    self.relation = param(rngs.params(), _uniform(-rng, rng), (num_relations, dim), (None, "embed"),
                          decay=False)
    self.center_net = CenterIntersection(dim, rngs=rngs)

  def _anchor(self, ids):
    return jnp.take(self.entity[...], ids, axis=0)

  def _project(self, q, rel_ids):
    return q + jnp.take(self.relation[...], rel_ids, axis=0)

  def _intersect(self, qs):
    return self.center_net(jnp.stack(qs))

  def _distance(self, q, v):
    return jnp.sum(jnp.abs(v - q[:, None, :]), axis=-1)


class Query2Box(_QueryModel):
  """Query2Box (Ren et al. 2020): a box is (center, offset ≥ 0), {v : center − offset ≤ v ≤
  center + offset}. Anchors are zero-size boxes; projection adds r's center and ReLU(r's offset)
  (§3.2); intersection as in §3.3 (see the two modules); distance (§3.4, eq. 3)
  dist_outside + α·dist_inside with dist_outside = ‖max(v − q_max, 0) + max(q_min − v, 0)‖₁,
  dist_inside = ‖center − min(q_max, max(q_min, v))‖₁; score γ − distance."""

  def __init__(self, num_entities: int, num_relations: int, dim: int, *, gamma: float,
               alpha: float = 0.02, rngs: nnx.Rngs):
    self.num_entities, self.gamma, self.alpha = num_entities, float(gamma), float(alpha)
    rng = (self.gamma + EPSILON) / dim
    self.entity = param(rngs.params(), _uniform(-rng, rng), (num_entities, dim), ("vocab", "embed"),
                        decay=False)
    self.relation = param(rngs.params(), _uniform(-rng, rng), (num_relations, dim), (None, "embed"),
                          decay=False)
    # BetaE's code draws the offsets from U(0, range); ReLU keeps them non-negative in any case.
    self.offset = param(rngs.params(), _uniform(0.0, rng), (num_relations, dim), (None, "embed"),
                        decay=False)
    self.center_net = CenterIntersection(dim, rngs=rngs)
    self.offset_net = BoxOffsetIntersection(dim, rngs=rngs)

  def _anchor(self, ids):
    c = jnp.take(self.entity[...], ids, axis=0)
    return c, jnp.zeros_like(c)

  def _project(self, q, rel_ids):
    c, o = q
    return (c + jnp.take(self.relation[...], rel_ids, axis=0),
            o + jax.nn.relu(jnp.take(self.offset[...], rel_ids, axis=0)))

  def _intersect(self, qs):
    return (self.center_net(jnp.stack([c for c, _ in qs])),
            self.offset_net(jnp.stack([o for _, o in qs])))

  def _distance(self, q, v):
    c, o = q[0][:, None, :], q[1][:, None, :]
    q_max, q_min = c + o, c - o
    outside = jnp.sum(jnp.maximum(v - q_max, 0) + jnp.maximum(q_min - v, 0), axis=-1)
    inside = jnp.sum(jnp.abs(c - jnp.minimum(q_max, jnp.maximum(q_min, v))), axis=-1)
    return outside + self.alpha * inside


def beta_positive(x: jax.Array) -> jax.Array:
  """BetaE's Regularizer(base_add=1, min=0.05, max=1e9): parameters of a Beta distribution."""
  return jnp.clip(x + 1.0, 0.05, 1e9)


class BetaProjection(nnx.Module):
  """BetaE §3.2's projection: [α; β; r] -> `layers` ReLU layers of width `hidden` -> a linear
  layer to [α'; β'], made positive by `beta_positive` (BetaE's code: layer1, layer2.., layer0)."""

  def __init__(self, dim: int, hidden: int, layers: int, *, rngs: nnx.Rngs):
    widths = [3 * dim] + [hidden] * layers
    self.hidden = nnx.List([_Linear(i, o, rngs=rngs) for i, o in zip(widths[:-1], widths[1:])])
    self.out = _Linear(hidden, 2 * dim, rngs=rngs)

  def __call__(self, q, r):
    x = jnp.concatenate([q, r], axis=-1)
    for layer in self.hidden:
      x = jax.nn.relu(layer(x))
    return beta_positive(self.out(x))


class BetaIntersection(nnx.Module):
  """BetaE §3.2's intersection: attention weights softmax_branches(MLP([α_i; β_i])) per
  dimension, α = Σ_i w_i α_i and β = Σ_i w_i β_i."""

  def __init__(self, dim: int, *, rngs: nnx.Rngs):
    self.layer1 = _Linear(2 * dim, 2 * dim, rngs=rngs)
    self.layer2 = _Linear(2 * dim, dim, rngs=rngs)

  def __call__(self, xs: jax.Array) -> jax.Array:     # [n, B, 2d] -> [B, 2d]
    d = xs.shape[-1] // 2
    att = jax.nn.softmax(self.layer2(jax.nn.relu(self.layer1(xs))), axis=0)
    return jnp.concatenate([jnp.sum(att * xs[..., :d], axis=0), jnp.sum(att * xs[..., d:], axis=0)], -1)


class BetaE(_QueryModel):
  """BetaE (Ren & Leskovec 2020) as in its code (KGReasoning): an entity is 2·dim numbers made
  positive by `beta_positive` into (α, β); relations are dim-wide vectors; projection and
  intersection as `BetaProjection` and `BetaIntersection`; distance Σ_dims KL(entity ‖ query)
  (eq. 4); score γ − distance. Its published runs use γ = 60, hidden 1600 = 4·dim, 2 layers."""

  def __init__(self, num_entities: int, num_relations: int, dim: int, *, gamma: float,
               hidden: int = 0, layers: int = 2, rngs: nnx.Rngs):
    self.num_entities, self.gamma = num_entities, float(gamma)
    rng = (self.gamma + EPSILON) / dim
    self.entity = param(rngs.params(), _uniform(-rng, rng), (num_entities, 2 * dim),
                        ("vocab", "embed"), decay=False)
    self.relation = param(rngs.params(), _uniform(-rng, rng), (num_relations, dim), (None, "embed"),
                          decay=False)
    self.projection_net = BetaProjection(dim, hidden or 4 * dim, layers, rngs=rngs)
    self.center_net = BetaIntersection(dim, rngs=rngs)

  def _anchor(self, ids):
    return beta_positive(jnp.take(self.entity[...], ids, axis=0))

  def _project(self, q, rel_ids):
    return self.projection_net(q, jnp.take(self.relation[...], rel_ids, axis=0))

  def _intersect(self, qs):
    return self.center_net(jnp.stack(qs))

  def _entity_rows(self):
    """KL(Beta(a1, b1) ‖ Beta(a2, b2)) = ln B(a2, b2) + E0 + a2·E1 + b2·E2 with the entity's
    (a1, b1) only in E0 = a1ψ(a1) + b1ψ(b1) − (a1 + b1)ψ(a1 + b1) − ln B(a1, b1),
    E1 = ψ(a1 + b1) − ψ(a1), E2 = ψ(a1 + b1) − ψ(b1): the special functions once per entity
    ([N, 3·dim]), not once per (query, candidate) pair (which made a step ~30x slower)."""
    from jax.scipy.special import betaln, digamma  # noqa: PLC0415
    v = beta_positive(self.entity[...])
    d = v.shape[-1] // 2
    a1, b1 = v[:, :d], v[:, d:]
    ps = digamma(a1 + b1)
    e0 = a1 * digamma(a1) + b1 * digamma(b1) - (a1 + b1) * ps - betaln(a1, b1)
    return jnp.concatenate([e0, ps - digamma(a1), ps - digamma(b1)], axis=-1)

  def _distance(self, q, v):
    """Σ_dims KL(entity ‖ query); v: rows of `_entity_rows` (E0, E1, E2)."""
    from jax.scipy.special import betaln  # noqa: PLC0415
    d = q.shape[-1] // 2
    a2, b2 = q[:, None, :d], q[:, None, d:]
    kl = betaln(a2, b2) + v[..., :d] + a2 * v[..., d:2 * d] + b2 * v[..., 2 * d:]
    return jnp.sum(kl, axis=-1)


def negative_sampling_loss(model: _QueryModel, qtype: str, anchors: jax.Array, relations: jax.Array,
                           positive: jax.Array, negatives: jax.Array,
                           weight: jax.Array | None = None) -> jax.Array:
  """Query2Box eq. 4 / BetaE as KGReasoning's train_step computes it for one batch: the positive term
  −log σ(γ − d(q, v)) and the negative term −(1/k) Σ_i log σ(d(q, v′_i) − γ), each a mean over
  the batch weighted by `weight` (KGReasoning's subsampling weight 1/√(4 + |answers|); uniform
  when None), and the loss their average. positive: [B] entity ids; negatives: [B, k]."""
  cand = jnp.concatenate([positive[:, None], negatives], axis=1)
  d = model.distances(qtype, anchors, relations, cand).astype(jnp.float32)
  pos = -jax.nn.log_sigmoid(model.gamma - d[:, 0])
  neg = -jnp.mean(jax.nn.log_sigmoid(d[:, 1:] - model.gamma), axis=1)
  w = jnp.ones_like(pos) if weight is None else weight.astype(jnp.float32)
  return (jnp.sum(w * pos) + jnp.sum(w * neg)) / (2 * jnp.sum(w))
