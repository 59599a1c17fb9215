"""Compress what autodiff saves for the backward pass of any block, with no per-op code
(GACT, arXiv 2206.11357 §3-§4).

`compress_block(fn, bits, mode)` turns `fn(params, x) -> y` into `g(params, x, seed) -> y` with a
`jax.custom_vjp`:

- mode "residuals" (GACT proper): the forward runs `jax.vjp(fn, params, x)` and compresses every
  floating leaf of the returned vjp closure (the tensors the backward needs) that is not a
  parameter; identical leaves are stored once; boolean leaves (dropout masks) at 1 bit; integer
  leaves and tensors smaller than one 256-group as they are. The backward decompresses them and calls the closure. `bits` is one width
  for every leaf or a tuple with one width per leaf (`residual_leaves` lists them), 32 = keep.
- mode "recompute" (GACT with checkpointing, §6): only the block input x is saved, compressed;
  the backward decompresses it and re-runs `jax.vjp(fn, params, x_hat)`.

Parameters are never compressed. `seed` (uint32) keys the stochastic rounding: give each
(tensor, iteration) its own, e.g. fold the step and the layer index.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxpapers.core.errors import ConfigError
from pallas_kernels.act_compress import (BITS, GROUP, Compressed, compress_ref, decompress_ref,
                                         fake_quantize)

MODES = ("residuals", "recompute")


@dataclasses.dataclass(frozen=True)
class ResidualLeaf:
  shape: tuple
  dtype: str
  kind: str   # "param" (never compressed), "float" (compressed), "bool" (1 bit), "int"/"small" (kept)

  @property
  def size(self) -> int:
    n = 1
    for d in self.shape:
      n *= d
    return n


def check_bits(bits) -> None:
  for b in (bits if isinstance(bits, (tuple, list)) else (bits,)):
    if b not in BITS + (32,):
      raise ConfigError(f"activation bits must be in {BITS + (32,)}, got {b!r}")


def _classify(leaves, params) -> list[str]:
  pids = {id(p) for p in jax.tree.leaves(params)}
  kinds = []
  for leaf in leaves:
    dt = jnp.result_type(leaf)
    if id(leaf) in pids:
      kinds.append("param")
    elif jnp.size(leaf) < GROUP:
      kinds.append("small")        # scalars and tiny tensors: a 256-group would cost more
    elif jnp.issubdtype(dt, jnp.floating):
      kinds.append("float")
    elif dt == jnp.bool_:
      kinds.append("bool")
    else:
      kinds.append("int")
  return kinds


def _unique(leaves):
  """(unique leaves, index of each leaf in them): duplicates in a vjp closure are stored once."""
  first, where = {}, []
  uniq = []
  for leaf in leaves:
    k = id(leaf)
    if k not in first:
      first[k] = len(uniq)
      uniq.append(leaf)
    where.append(first[k])
  return uniq, where


def residual_leaves(fn: Callable, params, x) -> list[ResidualLeaf]:
  """The distinct tensors `jax.vjp(fn, params, x)` keeps for the backward, in the order the
  per-leaf `bits` of mode "residuals" refers to."""
  out = []

  def probe(params, x):
    _, vjp = jax.vjp(fn, params, x)
    leaves, _ = _unique(jax.tree.leaves(vjp))
    for leaf, kind in zip(leaves, _classify(leaves, params)):
      out.append(ResidualLeaf(tuple(leaf.shape), jnp.result_type(leaf).name, kind))
    return 0

  jax.eval_shape(probe, params, x)
  return out


def compress_leaf(leaf, bits, seed, salt, base=0):
  """`leaf` at `bits` (32: as it is; bool: 1 bit), rounding keyed by (seed, salt) and the element
  index from `base` (see `compress_ref`)."""
  if bits == 32:
    return leaf
  s = jnp.asarray(seed, jnp.uint32) * jnp.uint32(0x85EBCA6B) + jnp.uint32(salt)
  return compress_ref(leaf, 1 if leaf.dtype == jnp.bool_ else bits, s, base)


def decompress_leaf(c):
  return decompress_ref(c) if isinstance(c, Compressed) else c


def compress_block(fn: Callable, bits, mode: str = "residuals") -> Callable:
  """`fn(params, x) -> y` as `g(params, x, seed) -> y` saving only compressed activations."""
  if mode not in MODES:
    raise ConfigError(f"unknown GACT mode {mode!r}; use one of {MODES}")
  check_bits(bits)

  @jax.custom_vjp
  def g(params, x, seed):
    return fn(params, x)

  holder: dict = {}   # static tree structures, set while tracing the forward

  if mode == "recompute":
    def fwd_recompute(params, x, seed):
      b = bits if isinstance(bits, int) else bits[0]
      leaves, holder["x_tree"] = jax.tree.flatten(x)
      saved = [compress_leaf(l, b, seed, i) if l.dtype == jnp.bool_ or jnp.issubdtype(l.dtype, jnp.floating)
               else l for i, l in enumerate(leaves)]
      return fn(params, x), (params, saved)

    def bwd_recompute(res, gy):
      params, saved = res
      x_hat = jax.tree.unflatten(holder["x_tree"], [decompress_leaf(c) for c in saved])
      _, vjp = jax.vjp(fn, params, x_hat)
      return (*vjp(gy), None)

    g.defvjp(fwd_recompute, bwd_recompute)
    return g

  def fwd(params, x, seed):
    y, vjp = jax.vjp(fn, params, x)
    leaves, treedef = jax.tree.flatten(vjp)
    uniq, where = _unique(leaves)
    kinds = _classify(uniq, params)
    per = bits if isinstance(bits, (tuple, list)) else (bits,) * len(uniq)
    if len(per) != len(uniq):
      raise ConfigError(f"{len(per)} bit widths given for {len(uniq)} residual tensors")
    saved = []
    for i, (leaf, kind, b) in enumerate(zip(uniq, kinds, per)):
      if kind in ("param", "int", "small"):
        saved.append(leaf)                 # parameters are never compressed
      else:
        saved.append(compress_leaf(leaf, b, seed, i))
    holder["treedef"], holder["where"] = treedef, where
    return y, saved

  def bwd(saved, gy):
    uniq = [decompress_leaf(c) for c in saved]
    vjp = jax.tree.unflatten(holder["treedef"], [uniq[i] for i in holder["where"]])
    gp, gx = vjp(gy)
    return gp, gx, None

  g.defvjp(fwd, bwd)
  return g


def saved_bytes(fn: Callable, params, x, bits, mode: str = "residuals") -> dict:
  """Bytes the backward keeps (non-parameter residual leaves, or the block input for
  "recompute"): raw and compressed, in total and for the compressible (float/bool) part."""
  leaves = (residual_leaves(fn, params, x) if mode == "residuals" else
            [ResidualLeaf(tuple(l.shape), jnp.result_type(l).name,
                          "float" if jnp.issubdtype(jnp.result_type(l), jnp.floating) else "int")
             for l in jax.tree.leaves(x)])
  per = bits if isinstance(bits, (tuple, list)) else (bits,) * len(leaves)
  out = {"raw": 0, "compressed": 0, "compressible_raw": 0, "compressible_compressed": 0}
  for leaf, b in zip(leaves, per):
    if leaf.kind == "param":
      continue
    nbytes = leaf.size * jnp.dtype(leaf.dtype).itemsize
    out["raw"] += nbytes
    if leaf.kind in ("int", "small") or b == 32:
      out["compressed"] += nbytes
      continue
    b = 1 if leaf.kind == "bool" else b
    comp = -(-leaf.size // GROUP) * (GROUP * b // 8 + 8)   # codes + FP32 min and scale per group
    out["compressed"] += comp
    out["compressible_raw"] += nbytes
    out["compressible_compressed"] += comp
  return out


def probe_block(bits_of_layer: jnp.ndarray) -> Callable:
  """A layer wrapper for the sensitivity estimate of mode "recompute": the forward is exact, the
  backward recomputes layer l at fake_quantize(x, bits_of_layer[l]) (32 = exact). The widths
  are traced, so one compiled gradient serves every (layer, width) probe. For layer stacks whose
  ctx carries the layer index at ctx["xs"]["idx"] (see GLM.__call__)."""
  def wrapper(fn):
    @jax.custom_vjp
    def g(ctx, x, seed):
      return fn(ctx, x)

    def fwd(ctx, x, seed):   # the width is read here: bwd may not close over traced values
      b = jnp.asarray(bits_of_layer)[ctx["xs"]["idx"]]
      return fn(ctx, x), (ctx, x, seed, b)

    def bwd(res, gy):
      ctx, x, seed, b = res
      s = jnp.asarray(seed, jnp.uint32) * jnp.uint32(0x85EBCA6B)
      _, vjp = jax.vjp(fn, ctx, fake_quantize(x, b, s))
      return (*vjp(gy), None)

    g.defvjp(fwd, bwd)
    return g
  return wrapper


def compress_module(module, bits, mode: str = "residuals") -> Callable:
  """An NNX module as `g(x, seed)` whose saved activations are compressed (its parameters are
  passed through, never compressed)."""
  from flax import nnx
  graphdef, _ = nnx.split(module)
  g = compress_block(lambda state, x: nnx.merge(graphdef, state)(x), bits, mode)
  return lambda x, seed: g(nnx.state(module), x, seed)


def probe_residuals(bits: jnp.ndarray, offset: int) -> Callable:
  """Mode-"residuals" twin of `probe_block` for the sensitivity estimate: `fn(params, x)` becomes
  g(params, x, seed) whose backward fake-quantizes its j-th residual leaf (as `residual_leaves`
  lists them) at width bits[offset + j] (traced; 32 = exact). Forward and saved values exact."""
  def wrap(fn):
    holder: dict = {}

    @jax.custom_vjp
    def g(params, x, seed):
      return fn(params, x)

    def fwd(params, x, seed):
      y, vjp = jax.vjp(fn, params, x)
      leaves, holder["treedef"] = jax.tree.flatten(vjp)
      uniq, holder["where"] = _unique(leaves)
      holder["kinds"] = _classify(uniq, params)
      return y, (uniq, seed, jnp.asarray(bits)[offset:offset + len(uniq)])

    def bwd(res, gy):
      uniq, seed, b = res
      s = jnp.asarray(seed, jnp.uint32) * jnp.uint32(0x85EBCA6B)
      probed = [fake_quantize(l, b[j], s + jnp.uint32(j)) if k == "float" else l
                for j, (l, k) in enumerate(zip(uniq, holder["kinds"]))]
      vjp = jax.tree.unflatten(holder["treedef"], [probed[i] for i in holder["where"]])
      return (*vjp(gy), None)

    g.defvjp(fwd, bwd)
    return g
  return wrap
