"""kgTransformer pieces: triple transformation and its attention mask (§3.1), padding, top-2
MoE routing, the loss (§3.3), filtered ranking, the union rank rule, expert sharding."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxpapers.kgt import evaluate as E
from jaxpapers.kgt import graph as G
from jaxpapers.kgt import model as M
from jaxpapers.kgt import predict as PR
from jp_testutil import assert_close_scaled

V = G.Vocab(num_entities=10, num_relations=4)   # tokens: entities 0-9, relations 10-13, [MASK] 14


def test_2p_query_graph_and_attention_mask():
  """2p (anchor 1, r0 then r2): entities a, v, t; relation nodes r0 (a->v), r0^-1 (v->a),
  r2 (v->t), r2^-1 (t->v). A relation node attends its head, a tail its incoming relation node."""
  L = G.query_graph((1, (0, 2)), V)
  np.testing.assert_array_equal(L.graph.tokens, [1, 14, 14, 10, 11, 12, 13])
  np.testing.assert_array_equal(L.graph.types, [G.ENTITY, G.MASK, G.MASK] + [G.RELATION] * 4)
  assert L.target == 2 and L.variables == [1]
  a, v, t, r0, r0i, r2, r2i = range(7)
  expected = np.eye(7, dtype=bool)
  for node, attends in [(r0, a), (v, r0), (r0i, v), (a, r0i), (r2, v), (t, r2), (r2i, t), (v, r2i)]:
    expected[node, attends] = True
  np.testing.assert_array_equal(G.dense_mask(L.graph.senders, L.graph.receivers, 7), expected)


def test_2i_query_graph_and_attention_mask():
  """2i ((1, r0), (2, r2)): target t, anchors a1, a2; both relation nodes point into t."""
  L = G.query_graph(((1, (0,)), (2, (2,))), V)
  np.testing.assert_array_equal(L.graph.tokens, [14, 1, 2, 10, 11, 12, 13])
  assert L.target == 0 and L.variables == []
  t, a1, a2, r0, r0i, r2, r2i = range(7)
  expected = np.eye(7, dtype=bool)
  for node, attends in [(r0, a1), (t, r0), (r0i, t), (a1, r0i), (r2, a2), (t, r2), (r2i, t), (a2, r2i)]:
    expected[node, attends] = True
  np.testing.assert_array_equal(G.dense_mask(L.graph.senders, L.graph.receivers, 7), expected)


def small_model(moe=True, experts=4):
  c = M.KGTConfig(10, 4, d_model=16, num_heads=2, num_layers=2, d_ff=32, num_experts=experts, moe=moe)
  return M.KGTransformer(c, rngs=nnx.Rngs(0))


def test_padding_never_changes_real_nodes():
  m = small_model()
  graphs = [G.query_graph(q, V).graph for q in [(1, (0, 2)), ((1, (0,)), (2, (2,)), (3, (1,)))]]
  n = sum(len(g.tokens) for g in graphs)
  graphdef, state = nnx.split(m)
  encode = jax.jit(lambda s, *a: nnx.merge(graphdef, s).encode(*a))
  outs = []
  for n_node, n_edge, n_graph in [(n + 1, 60, 3), (n + 40, 300, 9)]:
    b = G.batch(graphs, n_node, n_edge, n_graph)
    h = encode(state, b.nodes["tokens"], b.nodes["types"], b.senders, b.receivers)
    outs.append(np.asarray(h[:n]))
  # equal up to float32 summation order (other shapes tile the matmuls differently); a padding
  # node reaching a real one would move them by O(0.1)
  assert_close_scaled(outs[0], outs[1], 1e-5)
  # and a graph alone gives what it gives inside the batch
  b = G.batch(graphs[:1], len(graphs[0].tokens) + 1, 30, 2)
  alone = encode(state, b.nodes["tokens"], b.nodes["types"], b.senders, b.receivers)[:len(graphs[0].tokens)]
  assert_close_scaled(alone, outs[0][:len(graphs[0].tokens)], 1e-5)


def test_top2_gate_and_moe_equal_per_token_reference():
  logits = jnp.array([[0.1, 2.0, -1.0, 1.0], [3.0, 0.0, 2.5, -2.0]])
  w = M.top_k_gate(logits, 2, "softmax_topk")
  e1 = np.exp(2.0) / (np.exp(2.0) + np.exp(1.0))
  e2 = np.exp(3.0) / (np.exp(3.0) + np.exp(2.5))
  np.testing.assert_allclose(w, [[0, e1, 0, 1 - e1], [e2, 0, 1 - e2, 0]], rtol=1e-6)
  np.testing.assert_allclose(M.top_k_gate(logits, 2, "raw_topk"), [[0, 2.0, 0, 1.0], [3.0, 0, 2.5, 0]])
  moe = M.MoE(8, 16, 4, 2, "softmax_topk", rngs=nnx.Rngs(1))
  moe.gate_bias[...] = jnp.array([0.5, -0.5, 1.0, 0.0])      # the gate's bias takes part
  x = jax.random.normal(jax.random.key(2), (5, 8))
  y = moe(x)
  g = np.asarray(x @ moe.gate[...]) + np.array([0.5, -0.5, 1.0, 0.0])
  for i in range(5):
    top = np.argsort(-g[i])[:2]
    p = np.exp(g[i, top] - g[i, top].max())
    p /= p.sum()
    ref = sum(pj * (np.maximum(x[i] @ moe.w1[...][e] + moe.b1[...][e], 0) @ moe.w2[...][e] + moe.b2[...][e])
              for pj, e in zip(p, top))
    assert_close_scaled(y[i], ref, 1e-5)


def test_answer_loss_removes_other_answers_from_the_denominator():
  s = np.array([[2.0, 1.0, 0.0, -1.0]])
  labels = np.array([[1.0, 1.0, 0.0, 0.0]])
  neg = np.exp(0.0) + np.exp(-1.0)
  expected = 0.5 * (-np.log(np.exp(2.0) / (np.exp(2.0) + neg)) - np.log(np.exp(1.0) / (np.exp(1.0) + neg)))
  loss = jax.jit(M.answer_loss, static_argnums=3)
  got = loss(jnp.asarray(s), jnp.asarray(labels), jnp.ones(1), 0.0)
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  # a padding row (weight 0) changes nothing
  s2 = np.concatenate([s, [[9.0, -9.0, 0.0, 0.0]]])
  l2 = np.concatenate([labels, [[0.0, 1.0, 0.0, 0.0]]])
  np.testing.assert_allclose(loss(jnp.asarray(s2), jnp.asarray(l2), jnp.array([1.0, 0.0]), 0.0), expected, rtol=1e-6)
  # label smoothing as the official loss_label_smoothing_multi_ans: for each answer a, the mean
  # over all entities of -log(exp(s_e) / D_a), D_a = exp(s_a) + the non-answers' exp; the answers
  # weighted 1/2 (other answers' scores enter the mean but not D_a)
  smooth = loss(jnp.asarray(s), jnp.asarray(labels), jnp.ones(1), 0.1)
  ls = 0.5 * sum(np.mean(-np.log(np.exp(s[0]) / (np.exp(s[0, a]) + neg))) for a in (0, 1))
  np.testing.assert_allclose(smooth, 0.9 * expected + 0.1 * ls, rtol=1e-6)
  assert abs(ls - float(-jax.nn.log_softmax(jnp.asarray(s[0])).mean())) > 0.1   # not the full softmax


def test_filtered_ranks_and_metrics_by_hand():
  scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
  # hard answers 2 and 4, easy answer 0: entity 0 and the other hard answer are filtered out
  ranks = E.filtered_ranks(scores, hard=[2, 4], easy=[0])
  np.testing.assert_array_equal(ranks, [2, 3])         # 2 is beaten by 1; 4 by 1 and 3
  m = E.query_metrics(ranks)
  assert m["mrr"] == pytest.approx((1 / 2 + 1 / 3) / 2)
  assert (m["hits1"], m["hits3"], m["hits10"]) == (0.0, 1.0, 1.0)
  # ties with non-answers count half
  np.testing.assert_array_equal(E.filtered_ranks(np.zeros(5), hard=[1], easy=[]), [3.0])


def test_union_rank_rule():
  b1 = np.array([[0.1, 0.9, 0.5, 0.2]])
  b2 = np.array([[0.8, 0.0, 0.3, 0.1]])
  # positions: b1 -> [0, 3, 2, 1], b2 -> [3, 0, 2, 1]; best position per entity
  np.testing.assert_array_equal(PR.union_scores([b1, b2]), [[3, 3, 2, 1]])


def test_experts_sharded_over_8_devices_equal_one_device():
  from jaxpapers.core.mesh import make_mesh, state_shardings
  m = small_model(experts=8)
  graphs = [G.query_graph(q, V).graph for q in [(1, (0, 2)), ((1, (0,)), (2, (2,)))]]
  b = G.batch(graphs, 40, 80, 3)
  args = (b.nodes["tokens"], b.nodes["types"], b.senders, b.receivers, np.array([2, 7]))
  graphdef, state = nnx.split(m)
  f = jax.jit(lambda s, *a: nnx.merge(graphdef, s)(*a))
  one = f(state, *args)
  mesh = make_mesh((1, 8), ("data", "expert"))
  with jax.set_mesh(mesh):
    sharded = jax.device_put(state, state_shardings(state, mesh))
    w1 = sharded["layers"][0]["ffn"]["w1"]
    assert w1.get_value().sharding.spec[0] == "expert"
    assert len(w1.get_value().addressable_shards) == 8 and w1.get_value().addressable_shards[0].data.shape[0] == 1
    eight = f(sharded, *args)
  assert_close_scaled(eight, one, 1e-5)


def test_six_layers_let_every_target_see_every_anchor():
  """Attention is 1-hop and directed: an anchor is 2 hops per relation from the target, so 3p
  needs 6 layers. Changing any anchor changes the target's logits for all nine types."""
  from jaxpapers.kgt import queries as Q
  c = M.KGTConfig(10, 4, d_model=16, num_heads=2, num_layers=6, d_ff=16, num_experts=4)
  m = M.KGTransformer(c, rngs=nnx.Rngs(3))
  p = PR.Predictor(m, chunk=4)

  def target_probs(q):   # raw probabilities at each DNF branch's target
    layouts = [G.query_graph(b, p.vocab) for b in Q.branches(q)]
    return np.concatenate([r[0] for r in p.node_probs(layouts, lambda l: [l.target])])

  for t in Q.TYPES:
    n = Q.num_anchors(t)
    base = Q.unflatten(t, [1, 2, 3][:n], [0, 2, 1])
    for i in range(n):
      anchors = [1, 2, 3][:n]
      anchors[i] = 7
      moved = Q.unflatten(t, anchors, [0, 2, 1])
      assert np.abs(target_probs(base) - target_probs(moved)).max() > 1e-6, (t, i)
  # and with 5 layers the 3p target is blind to its anchor: bitwise the same output
  m5 = M.KGTransformer(dataclasses.replace(c, num_layers=5), rngs=nnx.Rngs(3))
  p = PR.Predictor(m5, chunk=4)
  np.testing.assert_array_equal(target_probs((1, (0, 2, 1))), target_probs((7, (0, 2, 1))))


def test_batched_scores_equal_each_query_alone():
  from jaxpapers.kgt import queries as Q
  p = PR.Predictor(small_model(), chunk=8)
  qs = [Q.unflatten("pi", [1 + i, 2], [0, 2, i % 4]) for i in range(5)]
  together = p.scores("pi", qs)
  for q, row in zip(qs, together):
    assert_close_scaled(p.scores("pi", [q])[0], row, 1e-5)
