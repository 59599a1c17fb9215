"""PET layers of jaxpapers.nn (LoRA, BitFit, prefix) on a tiny random BERT, and the EH-FT stages:
what a stage trains, leaf by leaf, and where stage 2 starts."""
import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from jaxpapers.core.mesh import make_mesh
from jaxpapers.core.train import train
from jaxpapers.nn import bert, pet
from jaxpapers.pethead.model import Classifier, loss_fn, with_head_of
from jp_testutil import assert_close_scaled

CFG = bert.BertConfig(vocab_size=50, hidden=16, num_layers=2, num_heads=2, mlp_dim=32,
                      max_positions=12, dropout=0.0)


def _batch(n=8, t=6, seed=0):
  r = np.random.default_rng(seed)
  mask = np.ones((n, t), np.int32)
  mask[::2, -2:] = 0
  return {"ids": r.integers(1, 50, (n, t)).astype(np.int32), "mask": mask,
          "type_ids": np.zeros((n, t), np.int32), "y": r.integers(0, 3, n).astype(np.int32)}


def _same_base(cfg):
  """A BERT with PET parameters whose backbone equals a plain one (as stage 1 on a checkpoint)."""
  plain = bert.Bert(dataclasses.replace(cfg, lora_rank=0, prefix_len=0), rngs=nnx.Rngs(0))
  with_pet = bert.Bert(cfg, rngs=nnx.Rngs(1))
  nnx.update(with_pet, nnx.state(plain))
  return plain, with_pet


def test_lora_with_zero_b_leaves_outputs_unchanged_and_matches_hand_formula():
  b = _batch()
  plain, lora = _same_base(dataclasses.replace(CFG, lora_rank=4, lora_alpha=8.0))
  run = lambda m: np.asarray(m(jnp.asarray(b["ids"]), jnp.asarray(b["mask"])))
  np.testing.assert_array_equal(run(lora), run(plain))   # B = 0: exactly the frozen model
  assert np.all(lora.lora_b_q.get_value() == 0) and np.any(lora.lora_a_q.get_value() != 0)
  bound = 1 / np.sqrt(CFG.hidden)   # loralib's kaiming_uniform(a=sqrt(5)) on A
  assert np.max(np.abs(lora.lora_a_q.get_value())) <= bound
  # a non-zero B changes the output, by (alpha/r) x A B on the projection
  x = jax.random.normal(jax.random.key(0), (2, 3, CFG.hidden))
  a = jax.random.normal(jax.random.key(1), (CFG.hidden, 4))
  bb = jax.random.normal(jax.random.key(2), (4, CFG.num_heads, CFG.head_dim))
  want = 2.0 * np.einsum("bti,ir,rhd->bthd", x, a, bb)
  assert_close_scaled(pet.lora_delta(x, a, bb, 8.0 / 4), want, 1e-5)
  # in the model: the query projection is x Wq + bq + (alpha/r) x A B, here alpha/r = 2
  b_q = jax.random.normal(jax.random.key(3), lora.lora_b_q.get_value().shape)
  lora.lora_b_q.set_value(b_q)
  w = jax.tree.map(lambda t: t[0], lora.layer_weights())   # layer 0
  hand = (np.einsum("bte,ehd->bthd", x, w["wq"]) + w["bq"]
          + 2.0 * np.einsum("bte,er,rhd->bthd", x, w["lora_a_q"], w["lora_b_q"]))
  assert_close_scaled(bert._proj(lora.cfg, x, w, "q"), hand, 1e-4)
  lora.lora_b_q.set_value(jnp.zeros_like(b_q))
  # the output projection (a random B: a B of ones adds the same value to every feature of a
  # token, which the LayerNorm after it removes)
  lora.lora_b_o.set_value(jax.random.normal(jax.random.key(4), lora.lora_b_o.get_value().shape))
  assert not np.allclose(run(lora), run(plain))


def test_prefix_mask_covers_the_prefix_and_never_padding():
  mask = np.array([[1, 1, 0], [1, 0, 0]])
  m = np.asarray(bert.attention_mask(jnp.asarray(mask), prefix_len=2))
  want = np.array([[[1, 1, 1, 1, 0]] * 3, [[1, 1, 1, 0, 0]] * 3], bool)
  np.testing.assert_array_equal(m, want)
  # behaviour: the prefix values reach every real token; padded tokens reach none
  b = _batch()
  _, model = _same_base(dataclasses.replace(CFG, prefix_len=3))
  run = lambda m, ids=b["ids"]: np.asarray(m(jnp.asarray(ids), jnp.asarray(b["mask"])))
  before = run(model)
  ids2 = b["ids"].copy()
  ids2[b["mask"] == 0] = 7                 # change only padded positions
  np.testing.assert_allclose(run(model, ids2)[b["mask"] == 1], before[b["mask"] == 1], atol=1e-6)
  model.prefix_v.set_value(model.prefix_v.get_value() + 3.0)
  assert np.all(np.abs(run(model) - before).max(-1)[b["mask"] == 1] > 1e-3)


def _classifier(cfg, seed=0):
  plain, enc = _same_base(cfg)
  return Classifier(enc, 3, rngs=nnx.Rngs(seed)), plain


def _flat(model):
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in
          jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]}


@pytest.mark.parametrize("method,cfg_kw,changes", [
    ("lora", dict(lora_rank=2), lambda k: "lora_" in k or "head" in k),
    ("bitfit", {}, lambda k: "head" in k or k.split("'")[-2] in (
        "emb_ln_bias", "bq", "bk", "bv", "bo", "b_in", "b_out", "ln1_bias", "ln2_bias")),
    ("prefix", dict(prefix_len=2), lambda k: "prefix_" in k or "head" in k),
    ("head", {}, lambda k: "head" in k),
])
def test_stage1_changes_only_the_chosen_parameters(tmp_path, method, cfg_kw, changes):
  """Leaf by leaf: the chosen PET leaves and the head change, every other leaf stays bitwise."""
  model, _ = _classifier(dataclasses.replace(CFG, **cfg_kw))
  before = _flat(model)
  cfg = ml_collections.ConfigDict({"seed": 0, "train": dict(
      steps=3, batch=8, lr=1e-2, warmup=0, end_lr_ratio=1.0, weight_decay=0.01, b1=0.9, b2=0.98,
      eps=1e-6, clip=0.0, grad_accum=1, log_every=1, eval_every=0, ckpt_every=0, keep=1,
      on_nonfinite="stop", inject_nan_step=-1, tensorboard=False)})
  out = train(cfg=cfg, workdir=tmp_path, model=model, loss_fn=loss_fn, get_batch=lambda s: _batch(seed=s),
              mesh=make_mesh([-1], ["data"]), progress=False, trainable=pet.trainable_filter(method))
  after = _flat(out.model())
  assert set(after) == set(before)
  for k in before:
    moved = not np.array_equal(before[k], after[k])
    assert moved == changes(k), f"{method}: {k} {'changed' if moved else 'did not change'}"
  # the optimizer holds state only for the trained leaves: Adam's two moments of each
  n_trained = sum(np.size(v) for k, v in before.items() if changes(k))
  assert sum(np.size(x) for x in jax.tree.leaves(out.state.params)) == n_trained
  assert sum(np.size(x) for x in jax.tree.leaves(out.state.opt_state) if np.ndim(x)) == 2 * n_trained


def test_stage2_starts_from_the_pretrained_backbone_and_the_stage1_head():
  model, plain = _classifier(dataclasses.replace(CFG, lora_rank=2))
  # pretend stage 1 moved everything
  nnx.update(model, jax.tree.map(lambda x: x + 0.5, nnx.state(model, nnx.Param)))
  pretrained = _flat(plain)
  stage2 = with_head_of(plain, model)
  s2 = _flat(stage2)
  assert not any("lora" in k or "prefix" in k for k in s2)           # PET parameters discarded
  for k, v in pretrained.items():                                    # the pretrained backbone
    np.testing.assert_array_equal(s2[f"['encoder']{k}"], v, err_msg=k)
    assert not np.array_equal(_flat(model)[f"['encoder']{k}"], v)    # not stage 1's
  for k, v in _flat(model.head).items():                             # the stage-1 head
    np.testing.assert_array_equal(s2[f"['head']{k}"], v, err_msg=k)
  # the full stage trains every parameter of it
  assert pet.count(stage2, pet.trainable_filter("full")) == sum(np.size(v) for v in s2.values())


def test_the_suite_rebuilds_the_same_pretrained_backbone_for_every_stage():
  """`experiments.encoder` (stage 2's backbone in run_method) gives the pretrained weights
  whatever the seed and the stage's PET kind; only PET leaves are added."""
  from jaxpapers.pethead.experiments import encoder
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      "suite_cfg", __import__("conftest").REPO / "jaxpapers/configs/pethead/suite.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config("tiny")
  a, b, lora = _flat(encoder(c, 0, None)), _flat(encoder(c, 5, None)), _flat(encoder(c, 5, "lora"))
  assert set(a) == set(b) and set(lora) - set(a) == {f"['lora_{x}_{p}'].value" for x in "ab" for p in "qkvo"}
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    np.testing.assert_array_equal(a[k], lora[k], err_msg=k)
