"""Masking and the masked-behaviour loss on hand cases; task inputs never show what they predict;
the downstream metrics on hand cases."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxpapers.core.batched import apply_batched
from jaxpapers.mooc import metrics, tasks
from jaxpapers.mooc.model import (MASK_RESPONSE, BehaviourModel, Items, ModelConfig, mask_tokens,
                                  masked_ce, pretrain_loss)
from jaxpapers.mooc.simulator import RIGHT, WRONG

ITEMS = Items(n_videos=5, text=np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32),
              concept=np.array([0, 0, 1, 1, 2, 0, 1, 2]), course=np.array([0, 0, 0, 1, 1, 0, 1, 1]),
              field=np.array([0, 0, 0, 1, 1, 0, 1, 1]), school=np.zeros(8, np.int64),
              n_concepts=3, n_courses=2, n_fields=2, n_schools=1)
CFG = ModelConfig(hidden=16, layers=2, heads=2, mlp=32, max_len=8, dropout=0.0)


def _model(seed=0):
  return BehaviourModel(CFG, ITEMS, rngs=nnx.Rngs(seed))


def test_mask_tokens_bert_rule():
  rng = np.random.default_rng(0)
  B, L = 400, 8
  items = rng.integers(0, 8, (B, L))
  resp = np.where(items >= 5, rng.choice([WRONG, RIGHT], (B, L)), rng.integers(0, 4, (B, L)))
  length = rng.integers(1, L + 1, B)
  m = mask_tokens(items, resp, length, rng, n_items=8, n_videos=5, mask_prob=0.3, response_prob=0.5)
  real = np.arange(L)[None] < length[:, None]
  assert (m["mask"] == real).all()
  assert (m["items"][~real] == 9).all() and (m["item_target"][~real] == -1).all()
  chosen = np.zeros((B, L), bool)
  listed = m["item_target"] >= 0
  b_idx, k_idx = np.nonzero(listed)
  chosen[b_idx, m["item_pos"][b_idx, k_idx]] = True
  assert (listed.sum(1) == chosen.sum(1)).all() and chosen.any(1).all()   # at least one each
  assert (m["item_target"][listed] == np.take_along_axis(items, m["item_pos"], 1)[listed]).all()
  masked = m["items"] == 8
  assert (masked <= chosen).all() and (m["responses"][chosen] == MASK_RESPONSE).all()
  frac = masked[chosen].mean()
  assert 0.7 < frac < 0.9                                      # 80% [MASK]
  changed = chosen & ~masked & (m["items"] != items)
  assert ((m["items"][changed] >= 5) == (items[changed] >= 5)).all()   # random item of the same kind
  resp_only = (m["response_target"] >= 0) & ~chosen
  assert (items[resp_only] >= 5).all() and (m["responses"][resp_only] == MASK_RESPONSE).all()
  assert (m["items"][resp_only] == items[resp_only]).all()
  assert (m["response_target"][chosen] == resp[chosen]).all()


def test_masked_ce_hand_case():
  logits = jnp.array([[[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]]])
  target = jnp.array([[1, -1]])
  loss, n = masked_ce(logits, target)
  expect = -(2.0 - np.log(np.exp(1) + np.exp(2) + 1))
  assert int(n) == 1 and float(loss) == pytest.approx(expect, rel=1e-6)


def test_pretrain_loss_is_item_plus_response_ce():
  model = _model()
  batch = dict(items=np.array([[0, 8, 6, 9]]), responses=np.array([[1, MASK_RESPONSE, MASK_RESPONSE, 0]]),
               mask=np.array([[1, 1, 1, 0]]), item_pos=np.array([[1, 0]]),
               item_target=np.array([[2, -1]]),
               response_target=np.array([[-1, 0, RIGHT, -1]]))
  graphdef, state = nnx.split(model)

  @jax.jit
  def both(state, batch):
    m = nnx.merge(graphdef, state)
    h = m(batch["items"], batch["responses"], batch["mask"])
    return pretrain_loss(m, batch, None), m.item_logits(h)[0, 1], m.response_logits(h)[0]

  (loss, aux), il, rl = both(state, batch)
  il, rl = np.asarray(jax.nn.log_softmax(il)), np.asarray(jax.nn.log_softmax(rl))
  expect = -il[2] + (-(rl[1, 0] + rl[2, RIGHT]) / 2)
  assert float(loss) == pytest.approx(expect, rel=1e-5)
  assert float(aux["masked"]) == 1


def test_task_inputs_hide_their_targets():
  model = _model(1)
  items = np.array([[0, 5, 1, 6, 2, 7, 3, -1]])
  resp = np.array([[2, RIGHT, 1, WRONG, 3, RIGHT, 0, 0]])
  t = np.array([4])
  # recommendation: the target video (and anything after it) does not change the scores
  rec = lambda b: apply_batched(model, tasks.rec_scores, b, 1)
  kt = lambda b: apply_batched(model, tasks.kt_scores, b, 1)
  a = tasks.rec_inputs(items, resp, t, ITEMS.mask_id, ITEMS.pad_id)
  items2 = items.copy()
  items2[0, 4:7] = [4, 5, 0]
  b = tasks.rec_inputs(items2, resp, t, ITEMS.mask_id, ITEMS.pad_id)
  np.testing.assert_array_equal(rec(a), rec(b))
  # knowledge tracing: the answer being predicted (and later tokens) do not change the logit
  t = np.array([5])
  resp2 = resp.copy()
  resp2[0, 5:] = [WRONG, 3, 1]
  items3 = items.copy()
  items3[0, 6] = 0
  x = kt(tasks.kt_inputs(items, resp, t, ITEMS.pad_id))
  y = kt(tasks.kt_inputs(items3, resp2, t, ITEMS.pad_id))
  np.testing.assert_array_equal(x, y)
  # ... while an earlier answer does
  resp3 = resp.copy()
  resp3[0, 3] = RIGHT
  z = kt(tasks.kt_inputs(items, resp3, t, ITEMS.pad_id))
  assert not np.allclose(x, z)


def test_targets_of_each_task():
  from jaxpapers.mooc.simulator import Logs
  lg = Logs(items=np.array([[0, 5, 1, 6, 2, -1], [5, 0, 6, -1, -1, -1]]),
            responses=np.zeros((2, 6), np.int64), length=np.array([5, 3]),
            dropped=np.array([True, False]), sequential=np.array([True, True]), n_videos=5)
  assert tasks.rec_targets(lg, False).tolist() == [[0, 2], [0, 4], [1, 1]]
  assert tasks.rec_targets(lg, True).tolist() == [[0, 4], [1, 1]]
  assert tasks.kt_targets(lg).tolist() == [[0, 3], [1, 2]]
  assert tasks.dropout_students(lg, 4).tolist() == [0]


def test_auc_against_all_pairs():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, 60)
  s = rng.integers(0, 5, 60).astype(float)          # many ties
  pos, neg = s[y == 1], s[y == 0]
  brute = np.mean([(p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)])
  assert metrics.auc(y, s) == pytest.approx(brute, rel=1e-12)
  assert metrics.auc([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2]) == 1.0
  assert np.isnan(metrics.auc([1, 1], [0.1, 0.2]))


def test_ranking_metrics_hand_case():
  scores = np.array([[0.1, 0.9, 0.5, 0.3],        # target 2: rank 1
                     [0.4, 0.4, 0.4, 0.4],        # target 0: ties count against it: rank 3
                     [0.9, 0.1, 0.2, 0.3]])       # target 0: rank 0
  rank = metrics.target_rank(scores, np.array([2, 0, 0]))
  assert rank.tolist() == [1, 3, 0]
  assert metrics.hit_rate(rank, 2) == pytest.approx(2 / 3)
  assert metrics.ndcg(rank, 2) == pytest.approx((1 / np.log2(3) + 0 + 1) / 3)
  assert metrics.ndcg(rank, 10) == pytest.approx((1 / np.log2(3) + 1 / np.log2(5) + 1) / 3)


def test_f1_and_threshold():
  y = np.array([1, 0, 1, 0, 1])
  s = np.array([0.9, 0.8, 0.7, 0.1, 0.2])
  assert metrics.f1(y, s >= 0.7) == pytest.approx(2 * 2 / (3 + 3))
  t = metrics.best_f1_threshold(y, s)
  best = max(metrics.f1(y, s >= c) for c in s)
  assert metrics.f1(y, s >= t) == pytest.approx(best)


def test_bert_causal_mask():
  m = _model(2).encoder
  ids = np.array([[0, 1, 2, 3, 4]])
  ids2 = np.array([[0, 1, 2, 7, 6]])
  mask = np.ones((1, 5), np.int32)
  graphdef, state = nnx.split(m)
  f = jax.jit(lambda st, i, causal: nnx.merge(graphdef, st)(i, mask, causal=causal),
              static_argnums=2)
  a, b = f(state, ids, True), f(state, ids2, True)
  np.testing.assert_array_equal(a[:, :3], b[:, :3])
  assert not np.allclose(f(state, ids, False)[:, :3], f(state, ids2, False)[:, :3])
