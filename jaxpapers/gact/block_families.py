"""GACT on models built from blocks (GACT §3, §6), two of the paper's families. `block_family`:
every tensor a block saves for its backward is compressed ("residuals" mode), no recomputation.
`stack_family`: identical layers scanned, each saving only its compressed input (as the
transformer family). The families:

- `cnn`: a ResNet (GroupNorm basic blocks) on the embedded Fashion-MNIST subset (GACT §6 trains
  ResNets on images); batch = images.
- `gnn`: a jraph GCN (Kipf & Welling 2017) classifying WordNet synsets into their 45 lexicographer
  files, full-graph training (GACT §6 trains GCN/GAT on full graphs); "batch" = nodes of the
  graph (at WordNet's mean degree) for the memory measurements.

`run_levels` runs the levels for one family: the same model, data and seed per level; test
accuracy; activation memory = XLA temp bytes of the train step at `memory_batch` minus at batch
1; max batch under L0's temp bytes at `budget_batch`; median step time; adaptive levels allocate
one width per saved tensor (over all blocks) from GACT's sensitivity, re-estimated every
`adapt_interval` steps.
"""
from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxpapers.core.train import TrainState, make_optimizer, make_train_step
from jaxpapers.gact import adaptive
from jaxpapers.gact.measure import max_batch, temp_probe
from jaxpapers.gact.stack import compressed_stack, probe_stack
from jaxpapers.gact.wrapper import compress_block, probe_residuals, residual_leaves
from jaxpapers.nn.stack import scan_stack

log = logging.getLogger("jaxpapers")


@dataclasses.dataclass
class FamilySpec:
  """What `block_family` needs from a model family. `apply(model, batch, wrapper)` returns
  (logits, labels, weights); wrapper(i, block) -> a callable with the block's signature (its
  first argument is the activation; the others are passed through uncompressed)."""
  model: nnx.Module
  apply: Callable
  batch_at: Callable          # step -> batch
  probe_batch: Callable       # () -> the sub-batch of the sensitivity estimate
  example: Callable           # size -> a batch of that size (zeros; for compiling only)
  accuracy: Callable          # params -> test accuracy


def _xent(logits, y, w):
  nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], -1)[:, 0]
  return (nll * w).sum() / jnp.maximum(w.sum(), 1.0)


def _wrapped(blk, make: Callable, seed):
  """blk(x, *rest) with its saved tensors handled by make(fn) -> g(params, x, seed)."""
  g, _ = nnx.split(blk)

  def call(x, *rest):
    return make(lambda s, x: nnx.merge(g, s)(x, *rest))(nnx.state(blk), x, seed)
  return call


def block_family(name: str, k: ml_collections.ConfigDict, levels, seed: int, spec: FamilySpec) -> dict:
  """GACT's residual mode: every saved tensor of every block is a candidate for compression."""
  graphdef, params0 = nnx.split(spec.model, nnx.Param)

  # the saved tensors of each block, and their offsets in one flat list
  per_block = []

  def record(i, blk):
    def call(x, *rest):
      g, _ = nnx.split(blk)
      fn = lambda s, x: nnx.merge(g, s)(x, *rest)
      per_block.append(residual_leaves(fn, nnx.state(blk), x))
      return fn(nnx.state(blk), x)
    return call

  jax.eval_shape(lambda: spec.apply(nnx.merge(graphdef, params0), spec.example(k.memory_batch), record))
  offsets = np.cumsum([0] + [len(b) for b in per_block]).tolist()
  flat_leaves = [l for b in per_block for l in b]
  compressible = [j for j, l in enumerate(flat_leaves) if l.kind == "float"]

  def expand(bits):         # one width per float tensor -> one per residual leaf (masks: 1 bit)
    flat = [1 if l.kind == "bool" else 32 for l in flat_leaves]
    for j, b in zip(compressible, bits):
      flat[j] = int(b)
    return flat

  def loss_fn_for(bits):    # None: plain (L0)
    flat = None if bits is None else expand(bits)

    def loss_fn(model, batch, key):
      s = jax.random.bits(key, dtype=jnp.uint32)
      wrapper = None
      if flat is not None:
        wrapper = lambda i, blk: _wrapped(
            blk, lambda fn: compress_block(fn, tuple(flat[offsets[i]:offsets[i + 1]]), "residuals"),
            s + jnp.uint32(97 * i))
      return _xent(*spec.apply(model, batch, wrapper)), {}
    return loss_fn

  idx = jnp.asarray(compressible)

  def probe_loss(model, batch, bits, s):
    flat = jnp.full((len(flat_leaves),), 32.0).at[idx].set(bits)
    wrapper = lambda i, blk: _wrapped(blk, probe_residuals(flat, offsets[i]), s + jnp.uint32(97 * i))
    return _xent(*spec.apply(model, batch, wrapper))

  out = run_levels(name, k, levels, seed, spec, [flat_leaves[j].size for j in compressible],
                   loss_fn_for, probe_loss)
  out["saved_tensors"] = [{"shape": list(l.shape), "kind": l.kind} for l in flat_leaves]
  return out


def stack_family(name: str, k: ml_collections.ConfigDict, levels, seed: int, spec: FamilySpec) -> dict:
  """GACT with checkpointing on a scanned stack of identical layers (as the transformer family):
  L0 = `lax.scan` + `jax.checkpoint` (the most frugal uncompressed layout); compressed levels
  save each layer's input at its own width (`gact.stack.compressed_stack`); spec.apply takes a
  layer-stack runner instead of a block wrapper."""
  model = spec.model
  graphdef, params0 = nnx.split(model, nnx.Param)
  num_layers = len(model.layers)

  def loss_fn_for(bits):
    runner = scan_stack(remat=True) if bits is None else compressed_stack(bits)

    def loss_fn(model, batch, key):
      return _xent(*spec.apply(model, batch, runner, jax.random.bits(key, dtype=jnp.uint32))), {}
    return loss_fn

  def probe_loss(model, batch, bits, s):
    return _xent(*spec.apply(model, batch, probe_stack(bits), s))

  return run_levels(name, k, levels, seed, spec, [1] * num_layers, loss_fn_for, probe_loss)


def run_levels(name: str, k, levels, seed: int, spec: FamilySpec, sizes, loss_fn_for: Callable,
               probe_loss: Callable) -> dict:
  """Trains and measures every level. `sizes`: the candidate tensors' relative sizes (d_l);
  loss_fn_for(None | one width per candidate) -> loss_fn; probe_loss(model, batch, widths
  [traced f32, 32 = exact], seed) -> the loss whose gradient GACT's sensitivity compares."""
  graphdef, params0 = nnx.split(spec.model, nnx.Param)
  tx = make_optimizer(ml_collections.ConfigDict(dict(k.train)))
  n = len(sizes)

  @jax.jit
  def probe_grad(params, bits, s, batch):
    return jax.grad(lambda p: probe_loss(nnx.merge(graphdef, p), batch, bits, s))(params)

  out, budget = {}, None
  for level in levels:
    if level in adaptive.REFERENCE_LEVELS:
      continue                     # these families' L0 is already uncompressed
    lv = adaptive.get_level(level)
    state = TrainState(step=jnp.int32(0), params=params0, opt_state=jax.jit(tx.init)(params0),
                       rng=jax.random.key_data(jax.random.key(seed)))
    bits = None if lv.bits is None else [int(lv.bits)] * n
    steps, losses, times, allocs = {}, [], [], []
    for start in range(0, k.train.steps, k.adapt_interval):
      if lv.adaptive:
        sens = adaptive.probe_sensitivities(probe_grad, state.params, spec.probe_batch(), n,
                                            seed + start)
        bits = list(adaptive.allocate_bits(sens, sizes, lv.bits))
        allocs.append({"step": start, "sensitivity": sens, "bits": bits})
      key = tuple(bits or ())
      if key not in steps:
        lf = loss_fn_for(bits)
        steps[key] = (jax.jit(make_train_step(graphdef, lf, tx)), lf)
      step, loss_fn = steps[key]
      for i in range(start, min(k.train.steps, start + k.adapt_interval)):
        t0 = time.perf_counter()
        state, m = step(state, spec.batch_at(i), jnp.float32(1.0))
        losses.append(float(m["loss"]))
        times.append(time.perf_counter() - t0)
    temp_at = temp_probe(graphdef, loss_fn, tx, params0, spec.example)
    t_b, t_1 = temp_at(k.memory_batch), temp_at(1)
    if budget is None:
      budget = temp_at(k.budget_batch)
    out[level] = {"acc": spec.accuracy(state.params), "act_bytes": t_b - t_1, "temp_bytes": t_b,
                  "max_batch": max_batch(temp_at, budget, k.memory_batch, k.max_batch_limit),
                  "step_time": statistics.median(times[1:] if len(times) > 1 else times),
                  "bits": bits, "avg_bits": None if bits is None else adaptive.average_bits(bits, sizes),
                  "allocations": allocs, "losses": losses}
    log.info("%s %s: test acc %.3f, act %.1f MiB, max batch %d, step %.3fs", name, level,
             out[level]["acc"], (t_b - t_1) / 2**20, out[level]["max_batch"], out[level]["step_time"])
  return {"levels": out, "budget_bytes": budget}


def cnn_spec(k: ml_collections.ConfigDict, seed: int) -> FamilySpec:
  """ResNet on the embedded Fashion-MNIST subset (8,000 train / 2,000 test)."""
  from jaxpapers.data.images import load_fashion_mnist
  from jaxpapers.nn.resnet import ResNet
  data = load_fashion_mnist()
  model = ResNet(tuple(k.widths), k.blocks_per_stage, rngs=nnx.Rngs(params=seed))
  n, b = len(data["train_x"]), k.train.batch
  rng = np.random.default_rng(seed)
  flat = np.concatenate([rng.permutation(n) for _ in range(k.train.steps * b // n + 1)])

  def batch_at(i, b=b):
    idx = flat[i * b:(i + 1) * b] if (i + 1) * b <= len(flat) else rng.integers(0, n, b)
    return {"x": jnp.asarray(data["train_x"][idx]), "y": jnp.asarray(data["train_y"][idx])}

  def apply(model, batch, wrapper):
    return model(batch["x"], wrapper), batch["y"], jnp.ones(batch["y"].shape, jnp.float32)

  gdef = nnx.split(model, nnx.Param)[0]

  def accuracy(params):
    f = jax.jit(lambda p, x: jnp.argmax(nnx.merge(gdef, p)(x), -1))
    pred = np.concatenate([np.asarray(f(params, jnp.asarray(data["test_x"][i:i + 500])))
                           for i in range(0, len(data["test_y"]), 500)])
    return float((pred == data["test_y"]).mean())

  return FamilySpec(model, apply, batch_at, lambda: batch_at(0, k.probe_batch),
                    lambda b: {"x": jnp.zeros((b, 28, 28, 1)), "y": jnp.zeros((b,), jnp.int32)},
                    accuracy)


def gnn_spec(k: ml_collections.ConfigDict, seed: int) -> FamilySpec:
  """GCN on WordNet (117,659 synsets, or the first `max_nodes` -> 45 lexnames; 60/20/20 node
  split), full-graph training."""
  from jaxpapers.data.graphs import load_wordnet_lexname
  from jaxpapers.nn.gcn import GCN
  d = load_wordnet_lexname(k.feature_dim, seed, max_nodes=k.get("max_nodes"))
  model = GCN(k.feature_dim, k.hidden, k.num_layers, len(d["classes"]), rngs=nnx.Rngs(params=seed))
  n, e = len(d["y"]), len(d["senders"])
  full = {"x": jnp.asarray(d["x"]), "y": jnp.asarray(d["y"]), "senders": jnp.asarray(d["senders"]),
          "receivers": jnp.asarray(d["receivers"]), "w": jnp.asarray(d["train"], jnp.float32)}

  def apply(model, g, hook, seed=0):   # hook: a block wrapper, or a layer-stack runner (k.layout)
    if k.get("layout", "blocks") == "stack" and hook is not None:
      return model(g["x"], g["senders"], g["receivers"], layer_stack=hook, seed=seed), g["y"], g["w"]
    return model(g["x"], g["senders"], g["receivers"], hook), g["y"], g["w"]

  def example(nodes):   # a graph of `nodes` nodes at WordNet's mean degree
    m = max(1, round(nodes * e / n))
    return {"x": jnp.zeros((nodes, k.feature_dim)), "y": jnp.zeros((nodes,), jnp.int32),
            "senders": jnp.zeros((m,), jnp.int32), "receivers": jnp.zeros((m,), jnp.int32),
            "w": jnp.zeros((nodes,))}

  test, gdef = jnp.asarray(d["test"]), nnx.split(model, nnx.Param)[0]

  def accuracy(params):
    logits = jax.jit(lambda p, g: apply(nnx.merge(gdef, p), g, None)[0])(params, full)
    return float(jnp.sum((jnp.argmax(logits, -1) == full["y"]) & test) / jnp.sum(test))

  return FamilySpec(model, apply, lambda i: full, lambda: full, example, accuracy)
