"""Compress what autodiff saves for the backward pass of any block, with no per-op code
(GACT, arXiv 2206.11357 §3-§4).

`compress_block(fn, bits, mode)` turns `fn(params, x) -> y` into `g(params, x, seed) -> y` with a
`jax.custom_vjp`:

- mode "residuals" (GACT proper, its levels L1-L2.2): the forward runs `jax.vjp(fn, params, x)`
  and compresses every saved tensor that is an activation, i.e. that depends on x (found on the
  jaxpr, `saved_tensors`): floats at their width, boolean masks at 1 bit. What does not depend on
  x (parameters, tensors computed from parameters only, RoPE tables and masks computed from
  integer inputs) is kept as it is, like the official code keeps parameters and tensors that need
  no gradient. Identical tensors are stored once. No broadcast is saved: the vjp is taken
  through `jax.checkpoint` with a policy that saves every intermediate but `broadcast_in_dim`
  outputs, which the backward recomputes from their (smaller) inputs behind jax's remat
  barrier. Without it, jax's vjp saved LayerNorm's small scale (kept: it does not depend on x),
  but XLA merged the backward's broadcast of it with the forward's and kept that buffer, an
  FP32 activation: 24 of f32[64, 64, 128] (48 MiB) at the peak of the 12-layer GLM's step at
  batch 64, found in XLA's live ranges; at 40 sequences it happened not to, so the bytes per
  sequence jumped with the batch (2 bits: 2.1 MiB per sequence up to 40 sequences, 3.0 above;
  with the policy 2.3-2.6, L0 15.2). Broadcasts that depend on x (one per GLM layer,
  attention-score shaped) are now recomputed from their compressed source instead of being
  compressed themselves. The backward decompresses and calls the vjp.
- mode "recompute" (GACT with checkpointing, the paper's "L*_ckpt" rows): only the block input x
  is saved, compressed; the backward decompresses it and re-runs `jax.vjp(fn, params, x_hat)`.

`bits`: one width for every activation or a tuple with one per activation (in `saved_tensors`
order; 32 = keep), or a traced float array of the same length: then each activation is
fake-quantized (`fake_quantize`, kept in FP32) at its traced width, which is how GACT's
sensitivity estimate probes every (tensor, width) through one compiled gradient (§4.3).

Two things XLA would otherwise undo on the CPU, found in the buffer assignment of a compiled
train step (experiments/gact/README.md): (1) it fuses compress-then-decompress into the backward
fusion that reads the decompressed tensor, so the codes never exist and the full-precision
tensor stays alive until the backward; (2) it schedules the decompression as soon as the codes
exist, in the forward, so every layer's decompressed tensors are alive at once. Optimization
barriers do not stop either (the CPU compiler expands them before fusion). So the codes are
computed inside a loop whose trip count (1) is only known at run time (`_materialize`): XLA
neither fuses across it nor removes it; and the decompression reads its min through an add of
0 * (one cotangent element) (`_after`), a data dependence XLA keeps (it does not fold float
x * 0), so it runs when the cotangent arrives. The residual structure (tree, duplicates, what is
compressed) travels in the residuals themselves (`Saved`), so one wrapped function may be
called at any number of shapes in one trace. Compression and decompression are
`pallas_kernels.act_compress.compress` / `decompress`: the jnp reference on the CPU, the Pallas
kernels where the program is lowered for a GPU or TPU.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
from jax.extend.core import Literal

from jaxpapers.core.errors import ConfigError
from pallas_kernels.act_compress import (BITS, GROUP, Compressed, _groups, compress, compress_parts,
                                         decompress, fake_quantize)

MODES = ("residuals", "recompute")
# Calls whose outputs are kept as they are even when they depend on x: normalisation statistics
# (`jaxpapers.nn.norm.norm_statistics`), which PyTorch's normalisation layers save as outputs that
# need no gradient and the official GACT therefore does not quantize (`quantizer.check_quantize`).
NO_GRADIENT_CALLS = frozenset({"norm_statistics"})


@dataclasses.dataclass(frozen=True)
class SavedTensor:
  shape: tuple
  dtype: str
  kind: str   # "act" (float activation: compressed), "mask" (bool activation: 1 bit), "kept"

  @property
  def size(self) -> int:
    n = 1
    for d in self.shape:
      n *= d
    return n

  @property
  def nbytes(self) -> int:
    return self.size * jnp.dtype(self.dtype).itemsize


def check_bits(bits) -> None:
  if isinstance(bits, jax.Array):
    return
  for b in (bits if isinstance(bits, (tuple, list)) else (bits,)):
    if b not in BITS + (32,):
      raise ConfigError(f"activation bits must be in {BITS + (32,)}, got {b!r}")


def _depends_on_x(jaxpr, n_params: int) -> list[bool]:
  """For each output of `jaxpr` (inputs: the params' leaves, then x's), whether it depends on a
  float x leaf: a forward pass over the equations (an equation's outputs depend on x if any input
  does; nested jaxprs are treated as one equation, which can only over-approximate), except the
  outputs of a call named in NO_GRADIENT_CALLS, which depend on nothing. That exception is seen
  only where the call is an equation of the block's own jaxpr (as `fused_layer_norm` called in
  the block is); inside another nested jaxpr (a scan's body) its outputs count as activations."""
  dep = set(id(v) for v in jaxpr.invars[n_params:]
            if jnp.issubdtype(v.aval.dtype, jnp.floating))      # integer inputs carry no gradient
  for eqn in jaxpr.eqns:
    if eqn.params.get("name") in NO_GRADIENT_CALLS:
      continue
    if any(not isinstance(v, Literal) and id(v) in dep for v in eqn.invars):
      dep.update(id(v) for v in eqn.outvars)
  return [not isinstance(v, Literal) and id(v) in dep for v in jaxpr.outvars]


def _no_broadcasts(prim, *_, **__) -> bool:
  return prim.name != "broadcast_in_dim"


def _lean(fn: Callable) -> Callable:
  """fn whose vjp recomputes broadcasts instead of saving them (see the module docstring)."""
  return jax.checkpoint(fn, policy=_no_broadcasts)


def _plan(fn: Callable, params, x):
  """(SavedTensor per unique residual leaf, index of each leaf among the unique ones); fn as the
  vjp runs it (`_lean` where anything may be compressed)."""

  def leaves_of(params, x):
    return jax.tree.leaves(jax.vjp(fn, params, x)[1])

  closed = jax.make_jaxpr(leaves_of)(params, x)
  dep = _depends_on_x(closed.jaxpr, len(jax.tree.leaves(params)))
  first, where, out = {}, [], []
  for v, d, aval in zip(closed.jaxpr.outvars, dep, closed.out_avals):
    key = ("lit", len(out)) if isinstance(v, Literal) else id(v)
    if key not in first:
      first[key] = len(out)
      dt = jnp.dtype(aval.dtype)
      kind = "kept"
      if d and jnp.issubdtype(dt, jnp.floating):
        kind = "act"
      elif d and dt == jnp.bool_:
        kind = "mask"
      out.append(SavedTensor(tuple(aval.shape), dt.name, kind))
    where.append(first[key])
  return out, where


def saved_tensors(fn: Callable, params, x) -> list[SavedTensor]:
  """The distinct tensors the compressed block's vjp (through `_lean`: broadcasts recomputed)
  keeps for the backward; the activations among them (kind "act") are what per-tensor `bits`
  refer to, in this order. (`compress_block(fn, 32)`, which compresses nothing, keeps jax's
  plain vjp residuals instead.)"""
  return _plan(_lean(fn), params, x)[0]


def _mix_seed(seed, salt):
  return jnp.asarray(seed, jnp.uint32) * jnp.uint32(0x85EBCA6B) + jnp.uint32(salt)


def _materialize(f: Callable, token):
  """f() computed inside a loop run `token` (= 1 at run time, unknown to XLA) times: its output
  exists as a buffer of its own (see the module docstring)."""
  shapes = jax.eval_shape(f)
  zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
  return jax.lax.fori_loop(0, token, lambda i, c: f(), zeros)


def _one(seed):
  """1, computed from a traced uint32 so that the compiler cannot prove it."""
  return jnp.minimum(jnp.asarray(seed, jnp.uint32) | jnp.uint32(1), jnp.uint32(1)).astype(jnp.int32)


def compress_leaf(leaf, bits: int, seed, salt: int = 0, base=0):
  """`leaf` at `bits` (32: as it is; bool: 1 bit), rounding keyed by (seed, salt) and the element
  index from `base` (see `compress_ref`), its codes materialised."""
  if bits == 32:
    return leaf
  s = _mix_seed(seed, salt)
  b = 1 if leaf.dtype == jnp.bool_ else bits
  return _materialize(lambda: compress(leaf, b, s, base), _one(s))


def decompress_leaf(c):
  return decompress(c) if isinstance(c, Compressed) else c


def _after(saved: list, ct, raw: bool = False):
  """`saved` with each Compressed's codes and min (and with `raw`, every float array: a
  checkpoint's kept input) made to depend on the cotangent `ct` (adds 0 * one of its elements,
  0 where that element is not finite): no part of its decompression or recomputation can run
  before the backward reaches this block."""
  leaf = next((l for l in jax.tree.leaves(ct) if jnp.issubdtype(l.dtype, jnp.floating)), None)
  if leaf is None:
    return saved
  c0 = jnp.ravel(leaf)[0].astype(jnp.float32)
  zero = jnp.where(jnp.isfinite(c0), c0, 0.0) * 0.0   # (the compiler cannot fold float x * 0)
  z8 = zero.astype(jnp.uint8)

  def tie(c):
    if isinstance(c, Compressed):
      return c.replace(packed=c.packed + z8, mn=c.mn + zero)
    if raw and jnp.issubdtype(c.dtype, jnp.floating):
      return c + zero.astype(c.dtype)
    return c
  return [tie(c) for c in saved]


@flax.struct.dataclass
class Saved:
  """The residuals of a compressed block, carrying how to rebuild the vjp closure: the leaves
  kept as they are (None where a leaf is in a pack), the packs (`Compressed`, each some of the
  block's tensors of one width, each padded to whole groups, compressed as one array; see
  `_pack_layout`) and, per pack, where each of its tensors lies in it (leaf index, shape, dtype,
  start, size)."""
  tensors: list
  packs: list
  treedef: object = flax.struct.field(pytree_node=False)
  where: tuple = flax.struct.field(pytree_node=False)
  layout: tuple = flax.struct.field(pytree_node=False, default=())


def _n_groups(size: int) -> int:
  """How many groups of GROUP the compressor makes of `size` elements (the last padded)."""
  return -(-size // GROUP)


def _padded(leaf) -> jnp.ndarray:
  """leaf flattened and padded with its last value to whole groups of 256, as the compressor
  groups it (so that packing tensors together gives each the groups, min and scale it has on
  its own)."""
  return _groups(leaf).reshape(-1)


def _pack_layout(items, plan, split: bool = True) -> tuple:
  """items: [(leaf index, width)] -> packs ((width, ((index, shape, dtype, start, size), ...)), ...):
  the tensors of one width (masks apart) in order, a new pack started where the pack would
  outgrow a quarter of the block's largest tensor (a tensor larger than that is a pack of its
  own). The joined array is written out while it is compressed (on the CPU; the GPU/TPU kernel
  reads it whole): with packs up to the largest tensor, the quick GLM's activation bytes at one
  allocation were 83.5 MiB against 79.6 with one compression per tensor; with a quarter, 79.8."""
  buckets: dict = {}
  for i, b in items:
    buckets.setdefault((b, plan[i].kind == "mask"), []).append(i)
  cap = max((_n_groups(plan[i].size) * GROUP for i, _ in items), default=0) // 4 if split else None
  out = []
  for (b, _), members in buckets.items():
    start, lay = 0, []
    for i in members:
      n = _n_groups(plan[i].size) * GROUP
      if lay and cap is not None and start + n > cap:
        out.append((b, tuple(lay)))
        start, lay = 0, []
      lay.append((i, plan[i].shape, plan[i].dtype, start, plan[i].size))
      start += n
    out.append((b, tuple(lay)))
  return tuple(out)


def _concat(uniq, lay) -> jnp.ndarray:
  parts = [_padded(uniq[i] if uniq[i].dtype == jnp.bool_ else uniq[i].astype(jnp.float32))
           for i, *_ in lay]
  return parts[0] if len(parts) == 1 else jnp.concatenate(parts)


def _compress_pack(uniq, lay, bits: int, seed) -> Compressed:
  """The tensors of `lay` compressed as one array (`_concat`'s), each padded to whole groups:
  the groups, mins and scales each has on its own, one compression for all."""
  if uniq[lay[0][0]].dtype == jnp.bool_:
    return compress(_concat(uniq, lay), bits, seed)
  return compress_parts([_padded(uniq[i]) for i, *_ in lay], bits, seed)


def _unpack(flat, lay, out: list) -> None:
  for i, shape, dtype, start, size in lay:
    out[i] = flat[start:start + size].reshape(shape).astype(dtype)


def _decompress_pack(c: Compressed, lay, out: list) -> None:
  """Each tensor of a pack decompressed from its own groups into its own buffer (decompressing
  the pack whole and slicing it kept two FP32 copies of a block's activations)."""
  for i, shape, dtype, start, size in lay:
    g, n = start // GROUP, _n_groups(size)
    part = Compressed(c.packed[g:g + n], c.mn[g:g + n], c.scale[g:g + n], (size,), c.dtype, c.bits)
    out[i] = decompress(part).reshape(shape).astype(dtype)


def _widths(bits, plan) -> list:
  """One width (int, or a traced scalar in probe mode) per unique residual leaf; None = kept."""
  acts = [i for i, t in enumerate(plan) if t.kind == "act"]
  if isinstance(bits, jax.Array):
    if bits.shape != (len(acts),):
      raise ConfigError(f"{bits.shape} traced widths given for {len(acts)} activations")
    per = {i: bits[j] for j, i in enumerate(acts)}
  else:
    seq = tuple(bits) if isinstance(bits, (tuple, list)) else (bits,) * len(acts)
    if len(seq) != len(acts):
      raise ConfigError(f"{len(seq)} bit widths given for {len(acts)} activations")
    per = dict(zip(acts, seq))
  return [per.get(i, 1 if t.kind == "mask" else None) for i, t in enumerate(plan)]


def compress_block(fn: Callable, bits, mode: str = "residuals") -> Callable:
  """`fn(params, x) -> y` as `g(params, x, seed) -> y` saving only compressed activations."""
  if mode not in MODES:
    raise ConfigError(f"unknown GACT mode {mode!r}; use one of {MODES}")
  check_bits(bits)
  probing = isinstance(bits, jax.Array)

  @jax.custom_vjp
  def g(params, x, seed):
    return fn(params, x)

  if mode == "recompute":
    def fwd_recompute(params, x, seed):
      if probing:
        b = bits.reshape(-1)[0]
        x_saved = jax.tree.map(lambda l: fake_quantize(l, b, _mix_seed(seed, 0))
                               if jnp.issubdtype(l.dtype, jnp.floating) else l, x)
        return fn(params, x), (params, x_saved)
      b = bits if isinstance(bits, int) else bits[0]
      leaves, tree = jax.tree.flatten(x)
      saved = [compress_leaf(l, b, seed, i) if l.dtype == jnp.bool_ or
               jnp.issubdtype(l.dtype, jnp.floating) else l for i, l in enumerate(leaves)]
      return fn(params, x), (params, Saved(saved, [], tree, ()))

    def bwd_recompute(res, gy):
      params, saved = res
      if isinstance(saved, Saved):
        saved = jax.tree.unflatten(saved.treedef, [decompress_leaf(c) for c in
                                                    _after(saved.tensors, gy, raw=True)])
      _, vjp = jax.vjp(fn, params, saved)
      return (*vjp(gy), None)

    g.defvjp(fwd_recompute, bwd_recompute)
    return g

  # one width of 32 compresses nothing: the vjp as jax takes it (bitwise the plain gradient)
  f = fn if isinstance(bits, int) and bits == 32 else _lean(fn)

  def fwd(params, x, seed):
    plan, where = _plan(f, params, x)
    y, vjp = jax.vjp(f, params, x)
    leaves, treedef = jax.tree.flatten(vjp)
    if len(leaves) != len(where):
      raise RuntimeError(f"the vjp closure has {len(leaves)} leaves, its plan {len(where)}")
    uniq = [None] * len(plan)
    for leaf, i in zip(leaves, where):
      if uniq[i] is None:
        if tuple(leaf.shape) != plan[i].shape or jnp.dtype(leaf.dtype).name != plan[i].dtype:
          raise RuntimeError(f"residual {i} is {leaf.shape} {leaf.dtype}, planned {plan[i]}")
        uniq[i] = leaf
      elif leaf is not uniq[i]:
        raise RuntimeError(f"residual {i} planned as a duplicate is a different tensor")
    widths = _widths(bits, plan)
    if probing:     # fake quantization of all activations as one array, a width per group
      acts = [(i, b) for i, b in enumerate(widths) if b is not None and plan[i].kind == "act"]
      saved = list(uniq)
      if acts:
        ((_, lay),) = _pack_layout([(i, 0) for i, _ in acts], plan, split=False)
        per_group = jnp.concatenate([jnp.full((_n_groups(size),), b, jnp.float32)
                                     for (i, b), (*_, size) in zip(acts, lay)])
        _unpack(fake_quantize(_concat(uniq, lay), per_group, _mix_seed(seed, 0)), lay, saved)
      return y, Saved(saved, [], treedef, tuple(where))
    todo = [(i, 1 if plan[i].kind == "mask" else int(b)) for i, b in enumerate(widths)
            if b is not None and int(b) != 32]
    layout = _pack_layout(todo, plan)
    saved = list(uniq)
    for i, _ in todo:
      saved[i] = None
    packs = []
    if layout:    # all of the block's codes in one loop, a compression per pack (one per tensor:
      # the quick GLM step's program 6.3x L0's, its compile 8x; with packs 27 vs 35 s at O0 at
      # uniform 2 bits, but only 4% faster at a real allocation: experiments/gact/README.md)
      s = [_mix_seed(seed, lay[0][0]) for _, lay in layout]
      packs = _materialize(lambda: [_compress_pack(uniq, lay, b, si)
                                    for (b, lay), si in zip(layout, s)], _one(s[0]))
    return y, Saved(saved, packs, treedef, tuple(where), tuple(lay for _, lay in layout))

  def bwd(res, gy):
    uniq = list(res.tensors)
    for c, lay in zip(_after(res.packs, gy), res.layout):
      _decompress_pack(c, lay, uniq)
    vjp = jax.tree.unflatten(res.treedef, [uniq[i] for i in res.where])
    gp, gx = vjp(gy)
    return gp, gx, None

  g.defvjp(fwd, bwd)
  return g


def compressed_bytes(t: SavedTensor, bits: int) -> int:
  """Bytes of one saved tensor at `bits` (codes + FP32 min and scale per 256-group)."""
  if t.kind == "kept" or bits == 32:
    return t.nbytes
  b = 1 if t.kind == "mask" else bits
  return _n_groups(t.size) * (GROUP * b // 8 + 8)


def saved_bytes(fn: Callable, params, x, bits, mode: str = "residuals") -> dict:
  """Bytes the backward keeps (residual leaves, or the block input for "recompute"): raw and
  compressed, in total and for the compressed (activation) part."""
  if mode == "residuals":
    plan = saved_tensors(fn, params, x)
  else:
    plan = [SavedTensor(tuple(l.shape), jnp.result_type(l).name,
                        "act" if jnp.issubdtype(jnp.result_type(l), jnp.floating) else "kept")
            for l in jax.tree.leaves(x)]
  widths = _widths(bits if mode == "residuals" else
                   (bits if isinstance(bits, int) else bits[0]), plan)
  out = {"raw": 0, "compressed": 0, "compressible_raw": 0, "compressible_compressed": 0}
  for t, b in zip(plan, widths):
    comp = compressed_bytes(t, 32 if b is None else int(b))
    out["raw"] += t.nbytes
    out["compressed"] += comp
    if b is not None:
      out["compressible_raw"] += t.nbytes
      out["compressible_compressed"] += comp
  return out


def compress_module(module, bits, mode: str = "residuals") -> Callable:
  """An NNX module as `g(x, seed)` whose saved activations are compressed (its parameters are
  passed through, never compressed)."""
  from flax import nnx
  graphdef, _ = nnx.split(module)
  g = compress_block(lambda state, x: nnx.merge(graphdef, state)(x), bits, mode)
  return lambda x, seed: g(nnx.state(module), x, seed)
