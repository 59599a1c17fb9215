"""GQE (Hamilton et al. 2018, BetaE's version), Query2Box (Ren et al. 2020) and BetaE (Ren &
Leskovec 2020): scores for the nine types, DNF unions, hand-computed distances (BetaE's KL against
numerical integration), the negative-sampling loss, permutation invariance of the intersection."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxpapers.core.errors import DataError
from jaxpapers.kgt import queries
from jaxpapers.kgt.baselines import GQE, BetaE, Query2Box, negative_sampling_loss
from jp_testutil import assert_close_scaled

N, R, D, B = 13, 6, 8, 4
MODELS = [GQE, Query2Box, BetaE]


def _model(cls, dim=D, seed=0):
  return cls(N, R, dim, gamma=12.0, rngs=nnx.Rngs(seed))


def _batch(qtype, seed=0, b=B):
  rng = np.random.default_rng(seed)
  a = rng.integers(N, size=(b, queries.num_anchors(qtype)))
  r = rng.integers(R, size=(b, queries.num_relations(qtype)))
  return jnp.asarray(a), jnp.asarray(r)


def _arrays(qs):
  fl = [queries.flatten(q) for q in qs]
  return jnp.asarray([a for a, _ in fl]), jnp.asarray([r for _, r in fl])


@pytest.mark.parametrize("cls", MODELS)
def test_scores_shape_every_type(cls):
  m = _model(cls)
  for t in queries.TYPES:
    s = m.scores(t, *_batch(t))
    assert s.shape == (B, N) and s.dtype == jnp.float32 and bool(jnp.isfinite(s).all()), t


@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize("qtype", ["2u", "up"])
def test_union_is_max_over_dnf_branches(cls, qtype):
  """Query2Box §3.4 / BetaE: a union's score is the max of its branches' scores (1p or 2p)."""
  m = _model(cls)
  a, r = _batch(qtype, seed=1)
  qs = [queries.unflatten(qtype, x, y) for x, y in zip(a.tolist(), r.tolist())]
  per_branch = []
  for i in range(2):
    bq = [queries.branches(q)[i] for q in qs]
    per_branch.append(m.scores(queries.type_of(bq[0]), *_arrays(bq)))
  assert queries.type_of(bq[0]) == ("1p" if qtype == "2u" else "2p")
  np.testing.assert_allclose(m.scores(qtype, a, r), jnp.maximum(*per_branch), rtol=1e-6)


def test_gqe_1p_distance_by_hand():
  """GQE: q = e_a + r, distance ‖q − v‖₁, score γ − distance."""
  m = GQE(3, 2, 2, gamma=5.0, rngs=nnx.Rngs(0))
  m.entity[...] = jnp.array([[0., 1.], [2., -1.], [0.5, 0.5]])
  m.relation[...] = jnp.array([[1., 1.], [-1., 3.]])
  s = m.scores("1p", jnp.array([[0], [2]]), jnp.array([[0], [1]]))
  # q0 = (1, 2): distances 1+1, 1+3, 0.5+1.5; q1 = (-0.5, 3.5): 0.5+2.5, 2.5+4.5, 1+3
  np.testing.assert_allclose(s, 5.0 - np.array([[2., 4., 2.], [3., 7., 4.]]), rtol=1e-6)


def test_q2b_distance_inside_and_outside_by_hand():
  """Query2Box eq. 3: box center (1, 1), offset (0.5, 1) = [0.5, 1.5] × [0, 2]; a point inside
  only pays α·‖center − v‖₁, one outside pays its L1 distance to the box plus α × the center's
  distance to the nearest box point. A negative relation offset is cut to 0 by the ReLU."""
  m = Query2Box(3, 2, 2, gamma=5.0, rngs=nnx.Rngs(0))
  m.entity[...] = jnp.array([[0., 0.], [1.2, 0.5], [3., -1.]])
  m.relation[...] = jnp.array([[1., 1.], [1., 1.]])
  m.offset[...] = jnp.array([[0.5, 1.], [-3., 1.]])
  d = m.distances("1p", jnp.array([[0], [0]]), jnp.array([[0], [1]]))
  inside = 0.02 * (0.2 + 0.5)
  outside = (1.5 + 1.0) + 0.02 * (0.5 + 1.0)          # nearest box point (1.5, 0)
  np.testing.assert_allclose(d[0, 1:], [inside, outside], rtol=1e-5)
  # relation 1: offset (0, 1): box [1, 1] × [0, 2]
  np.testing.assert_allclose(d[1, 1:], [0.2 + 0.02 * 0.5, 2.0 + 1.0 + 0.02 * (0 + 1.0)], rtol=1e-5)
  np.testing.assert_allclose(m.scores("1p", jnp.array([[0]]), jnp.array([[0]]))[0, 1], 5.0 - inside,
                             rtol=1e-6)


@pytest.mark.parametrize("cls", MODELS)
def test_intersection_is_permutation_invariant(cls):
  m = _model(cls)
  a, r = _batch("2i", seed=2)
  # the branches are combined in another order: equal up to rounding scaled to the scores
  assert_close_scaled(m.scores("2i", a, r), m.scores("2i", a[:, ::-1], r[:, ::-1]), 1e-5)
  a, r = _batch("3i", seed=3)
  p = jnp.array([2, 0, 1])
  assert_close_scaled(m.scores("3i", a, r), m.scores("3i", a[:, p], r[:, p]), 1e-5)


@pytest.mark.parametrize("cls", MODELS)
def test_adam_steps_reduce_the_loss(cls):
  m = _model(cls, seed=1)
  opt = nnx.Optimizer(m, optax.adam(0.05), wrt=nnx.Param)
  a, r = _batch("2i", seed=4, b=16)
  rng = np.random.default_rng(5)
  pos, neg = jnp.asarray(rng.integers(N, size=16)), jnp.asarray(rng.integers(N, size=(16, 5)))

  @nnx.jit(static_argnums=2)
  def step(m, opt, qtype, a, r, pos, neg):
    loss, g = nnx.value_and_grad(negative_sampling_loss)(m, qtype, a, r, pos, neg)
    opt.update(m, g)
    return loss

  losses = [float(step(m, opt, "2i", a, r, pos, neg)) for _ in range(15)]
  assert losses[-1] < 0.7 * losses[0], losses
  # the loss's value (KGReasoning's train_step): the weighted means of −log σ(γ − d⁺) and
  # −mean log σ(d⁻ − γ), averaged; uniform weights without subsampling weights
  d = m.distances("2i", a, r, jnp.concatenate([pos[:, None], neg], 1))
  p_term, n_term = -jax.nn.log_sigmoid(12.0 - d[:, 0]), -jax.nn.log_sigmoid(d[:, 1:] - 12.0).mean(1)
  w = jnp.asarray(rng.uniform(0.1, 0.5, 16), jnp.float32)
  want = (np.sum(w * p_term) / np.sum(w) + np.sum(w * n_term) / np.sum(w)) / 2
  np.testing.assert_allclose(negative_sampling_loss(m, "2i", a, r, pos, neg, w), want, rtol=1e-5)
  np.testing.assert_allclose(negative_sampling_loss(m, "2i", a, r, pos, neg),
                             (np.mean(p_term) + np.mean(n_term)) / 2, rtol=1e-5)


def beta_kl(a1, b1, a2, b2):
  """KL(Beta(a1, b1) ‖ Beta(a2, b2)), closed form (scipy's special functions, float64)."""
  from scipy.special import betaln, digamma
  return (betaln(a2, b2) - betaln(a1, b1) + (a1 - a2) * digamma(a1) + (b1 - b2) * digamma(b1)
          + (a2 - a1 + b2 - b1) * digamma(a1 + b1))


def test_betae_distance_is_the_kl_of_the_beta_distributions():
  """BetaE eq. 4: Σ_dims KL(entity ‖ query), the entity's and the query's (α, β) made positive
  by x + 1 clipped to [0.05, 1e9]; the closed form against numerical integration of
  ∫ p log(p / q); a 1p query's (α, β) is the projection MLP's output."""
  from scipy import integrate, stats
  for a1, b1, a2, b2 in ((1.3, 0.7, 2.5, 1.9), (0.6, 3.0, 1.0, 1.0), (4.0, 4.0, 0.5, 0.6)):
    p, q = stats.beta(a1, b1), stats.beta(a2, b2)
    ref = integrate.quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), 0, 1, limit=200)[0]
    np.testing.assert_allclose(float(beta_kl(a1, b1, a2, b2)), ref, rtol=2e-4)
  m = BetaE(3, 2, 2, gamma=10.0, rngs=nnx.Rngs(0))
  m.entity[...] = jnp.array([[0.3, -0.3, 1.5, 2.0], [-2.0, 0.0, 0.2, 0.4], [1.0, 1.0, 1.0, 1.0]])
  a, r = jnp.array([[0]]), jnp.array([[1]])
  q = m.projection_net(jnp.clip(m.entity[...][0] + 1, 0.05, 1e9)[None], m.relation[...][1][None])[0]
  v = np.clip(np.asarray(m.entity[...]) + 1, 0.05, 1e9)
  want = [sum(float(beta_kl(v[e, i], v[e, 2 + i], float(q[i]), float(q[2 + i]))) for i in range(2)) for e in range(3)]
  np.testing.assert_allclose(m.distances("1p", a, r)[0], want, rtol=1e-5)
  assert v[1, 0] == np.float32(0.05) and bool((q > 0).all())          # clipped; positive


def test_init_range_and_shape_errors():
  m = _model(Query2Box)
  bound = (12.0 + 2.0) / D
  assert float(jnp.abs(m.entity[...]).max()) <= bound and float(m.offset[...].min()) >= 0
  with pytest.raises(DataError, match=r"anchors \[B, 2\]"):
    m.scores("2i", *_batch("1p"))


def test_baseline_batches_carry_kgreasonings_subsampling_weights():
  """Each query's weight is KGReasoning's 1/√(4 + |answers|); its positive is an answer and its
  negatives are not."""
  from jaxpapers.kgt import kg
  from jaxpapers.kgt.experiments import BaselineBatches
  data = queries.generate(kg.load("nations"), {"train": {"1p": -1, "2p": 20}}, seed=0)
  split = data.splits["train"]
  batch = BaselineBatches(split, data.num_entities, 16, 4, seed=0)(0)
  for t in ("1p", "2p"):
    for a, r, pos, neg, w in zip(*(batch[f"{t}/{k}"] for k in ("anchors", "relations", "positive",
                                                                "negatives", "weight"))):
      ans = split.answers[queries.unflatten(t, a.tolist(), r.tolist())]
      assert w == np.float32((4 + len(ans)) ** -0.5) and pos in ans and not set(neg.tolist()) & ans


def test_betae_intersection_and_projection_by_hand():
  """BetaE's intersection: w = softmax over the branches of layer2(relu(layer1([α; β]))), per
  dimension, α = Σ w α_i, β = Σ w β_i; its projection: relu layers on [α; β; r], a last linear
  layer, then x + 1 clipped to [0.05, 1e9] (numpy, from the layers' weights)."""
  m = BetaE(3, 2, 2, gamma=10.0, rngs=nnx.Rngs(3))
  xs = np.random.default_rng(0).uniform(0.1, 3.0, (3, 4, 4)).astype(np.float32)    # [n, B, 2d]
  L1, L2 = m.center_net.layer1, m.center_net.layer2
  h = np.maximum(xs @ np.asarray(L1.kernel[...]) + np.asarray(L1.bias[...]), 0)
  z = h @ np.asarray(L2.kernel[...]) + np.asarray(L2.bias[...])                    # [n, B, d]
  w = np.exp(z - z.max(0)) / np.exp(z - z.max(0)).sum(0)
  want = np.concatenate([(w * xs[..., :2]).sum(0), (w * xs[..., 2:]).sum(0)], -1)
  assert_close_scaled(m.center_net(jnp.asarray(xs)), want, 1e-5)
  q, r = xs[0], np.random.default_rng(1).normal(size=(4, 2)).astype(np.float32)
  x = np.concatenate([q, r], -1)
  for layer in m.projection_net.hidden:
    x = np.maximum(x @ np.asarray(layer.kernel[...]) + np.asarray(layer.bias[...]), 0)
  out = np.clip(x @ np.asarray(m.projection_net.out.kernel[...]) + np.asarray(m.projection_net.out.bias[...]) + 1, 0.05, 1e9)
  assert len(m.projection_net.hidden) == 2 and m.projection_net.hidden[0].kernel.shape == (6, 8)
  assert_close_scaled(m.projection_net(jnp.asarray(q), jnp.asarray(r)), out, 1e-5)
