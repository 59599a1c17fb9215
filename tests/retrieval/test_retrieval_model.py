"""DPR's in-batch loss against a hand computation; prompt tuning and BitFit train only their
parameters (everything else bitwise unchanged); exact top-k search."""
import dataclasses

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from conftest import assert_close_scaled
from jaxpapers.core.mesh import make_mesh
from jaxpapers.core.train import train
from jaxpapers.nn import pet
from jaxpapers.nn.bert import Bert, BertConfig
from jaxpapers.retrieval.index import search
from jaxpapers.retrieval.model import DualEncoder, loss_fn

CFG = BertConfig(vocab_size=50, hidden=16, num_layers=2, num_heads=2, mlp_dim=32, max_positions=16,
                 dropout=0.0)


def _batch(rng, B=4, T=6):
  ids = lambda: rng.integers(1, 50, (B, T)).astype(np.int32)
  mask = lambda: (np.arange(T)[None] < rng.integers(2, T + 1, (B, 1))).astype(np.int32)
  return {"q_ids": ids(), "q_mask": mask(), "p_ids": ids(), "p_mask": mask(), "n_ids": ids(),
          "n_mask": mask()}


@pytest.mark.parametrize("pool, score", [("mean", "cos"), ("cls", "dot")])
def test_in_batch_loss_equals_a_hand_computation(pool, score):
  model = DualEncoder(Bert(CFG, rngs=nnx.Rngs(0)), Bert(CFG, rngs=nnx.Rngs(1)), pool=pool,
                      score=score, scale=20.0)
  b = _batch(np.random.default_rng(0))
  loss, aux = loss_fn(model, b, None)
  q = np.asarray(model.embed("query", b["q_ids"], b["q_mask"]), np.float64)
  docs = [np.asarray(model.embed("doc", b[f"{s}_ids"], b[f"{s}_mask"]), np.float64) for s in "pn"]
  d = np.concatenate(docs)
  if score == "cos":
    assert_close_scaled(np.linalg.norm(q, axis=1), np.ones(4), 1e-6)
  logits = (20.0 if score == "cos" else 1.0) * q @ d.T          # [B, 2B]: positives, then negatives
  want = np.mean([np.log(np.exp(row - row.max()).sum()) + row.max() - row[i]
                  for i, row in enumerate(logits)])
  assert float(loss) == pytest.approx(want, rel=1e-5)
  assert float(aux["accuracy"]) == np.mean(logits.argmax(1) == np.arange(4))
  # separate towers: the query and document encoders differ
  assert not np.allclose(q, model.embed("doc", b["q_ids"], b["q_mask"]))


@pytest.mark.parametrize("mode, kind", [("prefix", pet.Prefix), ("bitfit", pet.Bias)])
def test_parameter_efficient_modes_change_only_their_parameters(mode, kind, tmp_path):
  cfg = dataclasses.replace(CFG, prefix_len=3 if mode == "prefix" else 0, prefix_dropout=0.1)
  model = DualEncoder(Bert(cfg, rngs=nnx.Rngs(0)), Bert(cfg, rngs=nnx.Rngs(1)), pool="mean",
                      score="cos", scale=20.0)
  before = jax.tree.map(np.array, nnx.state(model, nnx.Param))
  rng = np.random.default_rng(1)
  batches = [_batch(rng, B=8) for _ in range(3)]      # 8: the test mesh's data axis
  t = dict(steps=3, batch=8, lr=1e-2, warmup=0, end_lr_ratio=1.0, weight_decay=0.0, b1=0.9,
           b2=0.999, eps=1e-8, clip=2.0, grad_accum=1, log_every=1, eval_every=0, ckpt_every=0,
           keep=1, on_nonfinite="stop", inject_nan_step=-1, tensorboard=False)
  out = train(cfg=ml_collections.ConfigDict({"seed": 0, "train": t}), workdir=tmp_path,
              model=model, loss_fn=loss_fn, get_batch=lambda s: batches[s],
              mesh=make_mesh((-1,), ("data",)), progress=False, trainable=pet.trainable_filter(mode))
  after = nnx.state(out.model(), nnx.Param)
  tuned = unchanged = 0
  for (path, b), (_, a) in zip(nnx.to_flat_state(before), nnx.to_flat_state(after)):
    same = np.array_equal(np.asarray(b.get_value()), np.asarray(a.get_value()))
    if isinstance(a, kind):
      # every array of the kind in both towers moves, but maybe the key bias: it adds q.b_k to
      # every score of a query, which the softmax cancels (its gradient is rounding noise)
      assert path[-1] == "bk" or not same, f"{mode} left {path} unchanged"
      tuned += 1
    else:
      assert same, f"{mode} changed {path}"
      unchanged += 1
  assert tuned == (4 if mode == "prefix" else 2 * 9) and unchanged > 10


def test_prompt_dropout_acts_in_training_only():
  cfg = dataclasses.replace(CFG, prefix_len=3, prefix_dropout=0.5)
  bert = Bert(cfg, rngs=nnx.Rngs(0))
  b = _batch(np.random.default_rng(2))
  clean = [np.asarray(bert(b["q_ids"], b["q_mask"])) for _ in range(2)]
  np.testing.assert_array_equal(clean[0], clean[1])                  # evaluation: deterministic
  no_prompt_drop = Bert(dataclasses.replace(cfg, prefix_dropout=0.0), rngs=nnx.Rngs(0))
  key = jax.random.key(3)
  a = np.asarray(bert(b["q_ids"], b["q_mask"], dropout_key=key))
  z = np.asarray(no_prompt_drop(b["q_ids"], b["q_mask"], dropout_key=key))
  assert not np.allclose(a, z)         # the same hidden/attention dropout, the prompts dropped too


def test_exact_top_k_search_matches_numpy():
  rng = np.random.default_rng(0)
  q, d = rng.normal(size=(300, 8)).astype(np.float32), rng.normal(size=(50, 8)).astype(np.float32)
  scores, idx = search(q, d, 2.0, 10, chunk=128)
  full = 2.0 * q @ d.T
  want = np.argsort(-full, axis=1)[:, :10]
  np.testing.assert_array_equal(idx, want)
  assert_close_scaled(scores, np.take_along_axis(full, want, 1), 1e-6)
  assert search(q, d, 1.0, 100)[1].shape == (300, 50)           # k capped at the corpus size
