"""GACT's three model families (arXiv 2206.11357 §6), each as a list of blocks that one runner
(`jaxpapers.gact.experiments.run_levels`) trains and measures at every level:

- `transformer`: a GLM stack (composition: GLM is another paper's model) on the Austen
  blank-infilling task; blocks = its layers (run unrolled through GLM's `layer_stack` hook) and
  the tied output head with its loss; held-out loss in nats.
- `cnn`: a ResNet (GroupNorm basic blocks) on the embedded Fashion-MNIST subset; blocks = the
  residual blocks; batch = images.
- `gnn`: a jraph GCN (Kipf & Welling 2017) classifying WordNet synsets into their 45
  lexicographer files, full-graph training; blocks = its layers; "batch" = nodes of a graph at
  WordNet's mean degree for the memory measurements (GACT §6 trains GCNs on full graphs).

A family's `loss(model, batch, wrap, seed)` calls `wrap(i, fn, params, x, seed_i)` for its block
i, where fn(params, x) -> y is the block; wrap decides what the backward keeps (everything, a
checkpoint, compressed tensors). `wrap=None` is plain training. The seed (uint32, fresh every
step) keys the stochastic rounding.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx


@dataclasses.dataclass
class Family:
  name: str
  what: str                   # model and data, for the report
  model: nnx.Module
  loss: Callable              # (model, batch, wrap | None, seed uint32) -> mean loss
  batch_at: Callable          # step -> training batch
  probe_batch: Callable       # () -> the small batch of GACT's sensitivity estimate
  example: Callable           # size -> a batch of that size (zeros; compile only)
  held_out: Callable          # model -> {"loss": ..., ["acc": ...]} on held-out data


def plain(i, fn, params, x, seed):
  return fn(params, x)


def _xent(logits, y, w):
  nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], -1)[:, 0]
  return (nll * w).sum() / jnp.maximum(w.sum(), 1.0)


def _loss_and_accuracy(logits: np.ndarray, y: np.ndarray) -> dict:
  """Mean cross-entropy and accuracy of held-out logits [N, classes] against labels [N]."""
  lp = logits - logits.max(1, keepdims=True)
  lp = lp - np.log(np.exp(lp).sum(1, keepdims=True))
  return {"loss": float(-lp[np.arange(len(y)), y].mean()), "acc": float((logits.argmax(1) == y).mean())}


def _module_block(wrap, i, module, x, seed, *rest):
  """An NNX submodule called through wrap: its state is the block's params."""
  gdef = nnx.split(module)[0]
  return wrap(i, lambda s, x: nnx.merge(gdef, s)(x, *rest), nnx.state(module), x, seed)


# --- transformer: GLM on Austen --------------------------------------------------------------

def transformer(c: ml_collections.ConfigDict, seed: int, workdir: Path) -> Family:
  from jaxpapers.glm import data as glmdata
  from jaxpapers.glm import evaluate as ev
  from jaxpapers.glm.model import GLM, GLMConfig
  from jaxpapers.glm.objective import BatchSampler
  t = c.transformer
  corpus = glmdata.prepare(c.data.corpus, c.data.vocab_size, 0.05, str(workdir), t.seq_len)
  cfg = GLMConfig(vocab_size=corpus.vocab_size, dropout=0.0, remat=False, layer_chunk=0,
                  **t.model.to_dict())
  model = GLM(cfg, rngs=nnx.Rngs(params=seed))
  L = cfg.num_layers

  def sampler(batch, s=seed):
    return BatchSampler(corpus.train, corpus.ids, seq_len=t.seq_len, batch=batch, seed=s,
                        gmask_prob=0.7, mask_ratio=0.15, span_lambda=3.0, two_d=False)   # GLM §2.1

  train, probe = sampler(t.train.batch), sampler(t.probe_batch, seed + 10_000)
  val = ev.ppl_set(corpus.val, corpus.ids, t.seq_len, t.eval_samples, 32, False)

  def held_out(model):
    tot = ev.evaluate(model, val, corpus.ids.eop)
    return {"loss": tot["nll"] / tot["n"]}

  def example(b):
    z = jnp.zeros((b, t.seq_len), jnp.int32)
    return {"tokens": z, "positions": z, "context_len": jnp.zeros((b,), jnp.int32), "targets": z,
            "weights": jnp.ones((b, t.seq_len), jnp.float32)}

  as_jnp = lambda b: {k: jnp.asarray(v) for k, v in b.items()}
  return Family("transformer", f"GLM, {L} layers of width {cfg.d_model}, on Austen (seq {t.seq_len})",
                model, glm_loss, lambda i: as_jnp(train(i)), lambda: as_jnp(probe(0)), example,
                held_out)


def glm_loss(model, batch, wrap, seed):
  """GLM's mean blank-infilling loss with each layer, then the tied head with its loss, as a
  block through `wrap` (the layers unrolled through GLM's `layer_stack` hook, so that each has
  its own widths)."""
  wrap = wrap or plain
  L = model.cfg.num_layers

  def unrolled(layer_fn, h, xs, shared, seeds, chunk=0):
    for l in range(L):
      xs_l = jax.tree.map(lambda a: a[l], xs)
      h = wrap(l, lambda p, h: layer_fn(shared, p, h, None), xs_l, h, seeds[l])
    return h

  key = jax.random.fold_in(jax.random.key(0), seed)   # only its per-layer seeds are used
  h = model(batch["tokens"], batch["positions"], batch["context_len"], dropout_key=key,
            return_hidden=True, layer_stack=unrolled)
  w = batch["weights"]
  head = (model.embed[...], model.final_scale[...], model.final_bias[...])
  head_fn = lambda p, h: _head(p, h, batch["targets"], w)
  return wrap(L, head_fn, head, h, seed + jnp.uint32(7919)) / jnp.maximum(w.sum(), 1.0)


def _head(p, h, targets, weights):
  """sum_bt w * -log p(target) through GLM's final LayerNorm and tied output projection."""
  from jaxpapers.nn.norm import layer_norm
  embed, scale, bias = p
  logits = jnp.einsum("bte,ve->btv", layer_norm(h, scale, bias), embed).astype(jnp.float32)
  nll = -jnp.take_along_axis(jax.nn.log_softmax(logits, -1), targets[..., None], -1)[..., 0]
  return (nll * weights).sum()


# --- cnn: ResNet on Fashion-MNIST ------------------------------------------------------------

def cnn(c: ml_collections.ConfigDict, seed: int, workdir: Path) -> Family:
  """ResNet on the embedded Fashion-MNIST subset (8,000 train / 2,000 test)."""
  from jaxpapers.data.images import load_fashion_mnist
  from jaxpapers.nn.resnet import ResNet
  k = c.cnn
  data = load_fashion_mnist()
  model = ResNet(tuple(k.widths), k.blocks_per_stage, rngs=nnx.Rngs(params=seed))
  n, b = len(data["train_x"]), k.train.batch
  rng = np.random.default_rng(seed)
  order = np.concatenate([rng.permutation(n) for _ in range(k.train.steps * b // n + 2)])

  def batch_at(i, b=b):
    idx = order[i * b:(i + 1) * b]
    return {"x": jnp.asarray(data["train_x"][idx]), "y": jnp.asarray(data["train_y"][idx])}

  def loss(model, batch, wrap, seed):
    wrap = wrap or plain
    block = lambda i, blk: (lambda h: _module_block(wrap, i, blk, h, seed + jnp.uint32(97 * i)))
    logits = model(batch["x"], block)
    return _xent(logits, batch["y"], jnp.ones(batch["y"].shape, jnp.float32))

  gdef = nnx.split(model)[0]
  f = jax.jit(lambda s, x: nnx.merge(gdef, s)(x))

  def held_out(model):
    s = nnx.state(model)
    logits = np.concatenate([np.asarray(f(s, jnp.asarray(data["test_x"][i:i + 500])))
                             for i in range(0, len(data["test_y"]), 500)])
    return _loss_and_accuracy(logits, data["test_y"])

  return Family("cnn", f"ResNet {tuple(k.widths)} x {k.blocks_per_stage} on Fashion-MNIST (8,000 images)",
                model, loss, batch_at, lambda: batch_at(0, k.probe_batch),
                lambda b: {"x": jnp.zeros((b, 28, 28, 1)), "y": jnp.zeros((b,), jnp.int32)}, held_out)


# --- gnn: GCN on WordNet ---------------------------------------------------------------------

def gnn(c: ml_collections.ConfigDict, seed: int, workdir: Path) -> Family:
  """GCN on WordNet (117,659 synsets, or the first `max_nodes` -> 45 lexnames; a 60/20/20 node
  split drawn from the seed), full-graph training."""
  from jaxpapers.data.graphs import load_wordnet_lexname
  from jaxpapers.nn.gcn import GCN
  k = c.gnn
  d = load_wordnet_lexname(k.feature_dim, seed, max_nodes=k.get("max_nodes"))
  model = GCN(k.feature_dim, k.hidden, k.num_layers, len(d["classes"]), rngs=nnx.Rngs(params=seed))
  n, e = len(d["y"]), len(d["senders"])
  full = {"x": jnp.asarray(d["x"]), "y": jnp.asarray(d["y"]), "senders": jnp.asarray(d["senders"]),
          "receivers": jnp.asarray(d["receivers"]), "w": jnp.asarray(d["train"], jnp.float32)}

  def logits_of(model, g, wrap, seed):
    wrap = wrap or plain
    layer = lambda i, l: (lambda h, s, r: _module_block(wrap, i, l, h, seed + jnp.uint32(97 * i), s, r))
    return model(g["x"], g["senders"], g["receivers"], layer)

  def loss(model, g, wrap, seed):
    return _xent(logits_of(model, g, wrap, seed), g["y"], g["w"])

  def example(nodes):   # a graph of `nodes` nodes at WordNet's mean degree
    m = max(1, round(nodes * e / n))
    return {"x": jnp.zeros((nodes, k.feature_dim)), "y": jnp.zeros((nodes,), jnp.int32),
            "senders": jnp.zeros((m,), jnp.int32), "receivers": jnp.zeros((m,), jnp.int32),
            "w": jnp.zeros((nodes,))}

  gdef = nnx.split(model)[0]
  f = jax.jit(lambda s, g: nnx.merge(gdef, s)(g["x"], g["senders"], g["receivers"]))
  test = np.asarray(d["test"])

  def held_out(model):
    logits = np.asarray(f(nnx.state(model), full))
    return _loss_and_accuracy(logits[test], d["y"][test])

  return Family("gnn", f"GCN {k.num_layers} x {k.hidden} on WordNet lexnames ({n:,} synsets, full graph)",
                model, loss, lambda i: full, lambda: full, example, held_out)


BUILDERS = {"transformer": transformer, "cnn": cnn, "gnn": gnn}
