"""A scanned layer stack that saves only each layer's compressed input, at one width per layer
(GACT, arXiv 2206.11357 §4.3 per-tensor bits, combined with checkpointing as in §6).

`compressed_stack(bits)` returns `layer_stack(layer_fn, h, xs, shared, seeds) -> h`, a drop-in
for `lax.scan` over `layer_fn(shared, xs_l, h) -> h` with `jax.checkpoint` (GLM's `layer_stack`
hook). Its `jax.custom_vjp`:

- forward: the exact layers; before layer l its input is compressed at `bits[l]` (32 = kept in
  FP32). One scan over all layers; layer l writes its codes into its width class's stacked
  buffer (a `lax.switch` over the classes), which are the only residuals.
- backward: one reverse scan over all layers; layer l reads its codes (a `lax.switch` over the
  width classes, each stored as one stacked array), dequantises them, re-runs `jax.vjp` of the
  layer and passes the cotangent down. Parameter gradients come out stacked; cotangents of
  float `shared` leaves (e.g. RoPE tables) are summed over layers.

A single forward and a single backward scan keep one layer's working set alive whatever the
widths: one `lax.scan` per run of equal widths made XLA keep a working set per scan (597 MiB vs
283 MiB for 8 GLM layers when the backward was split too; 932 vs 468 MiB at batch 1024 with
micro-batched layers when only the forward was; see experiments/gact/README.md).
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxpapers.core.errors import ConfigError
from jaxpapers.gact.wrapper import check_bits, compress_leaf, decompress_leaf
from pallas_kernels.act_compress import fake_quantize


def _is_float(x) -> bool:
  return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def _split_float(tree):
  """(float leaves or None, other leaves or None, treedef): differentiate only the float part."""
  leaves, treedef = jax.tree.flatten(tree)
  return ([l if _is_float(l) else None for l in leaves],
          [None if _is_float(l) else l for l in leaves], treedef)


def _merge(fl, other, treedef):
  return jax.tree.unflatten(treedef, [f if o is None else o for f, o in zip(fl, other)])


def compressed_stack(bits: Sequence[int]) -> Callable:
  """A layer-stack runner saving layer l's input at bits[l] in {1, 2, 4, 8, 32}."""
  bits = tuple(int(b) for b in bits)
  check_bits(bits)
  if not bits:
    raise ConfigError("compressed_stack needs at least one layer width")
  widths = sorted(set(bits))
  cls = jnp.asarray([widths.index(b) for b in bits], jnp.int32)
  slot = jnp.asarray([bits[:l].count(b) for l, b in enumerate(bits)], jnp.int32)

  save = lambda h, width, seed: compress_leaf(h, width, seed, 0)   # as compress_block's input

  def layer_stack(layer_fn: Callable, h, xs, shared, seeds):
    n = jax.tree.leaves(xs)[0].shape[0]
    if n != len(bits):
      raise ConfigError(f"{len(bits)} layer widths given for a stack of {n} layers")

    def scan_plain(shared, xs, h):
      def body(h, xs_l):
        return layer_fn(shared, xs_l, h), None
      return jax.lax.scan(body, h, xs)[0]

    @jax.custom_vjp
    def stack(shared, xs, h, seeds):
      return scan_plain(shared, xs, h)

    def fwd(shared, xs, h, seeds):
      if len(widths) == 1:
        def body(h, inp):
          xs_l, seed = inp
          return layer_fn(shared, xs_l, h), save(h, widths[0], seed)
        h, codes = jax.lax.scan(body, h, (xs, seeds))
        return h, (shared, xs, [codes])
      # one scan whatever the widths: layer l writes its codes into slot[l] of its width class's
      # buffer (a lax.switch over the classes). One scan per run of equal widths made XLA keep
      # about a layer input per run boundary (8 GLM layers at batch 1024, widths alternating
      # 2/1: 932 MiB against 483 MiB for two runs; README)
      counts = [bits.count(w) for w in widths]
      proto = [jax.eval_shape(lambda h, s, w=w: save(h, w, s), h, seeds[0]) for w in widths]
      bufs0 = [jax.tree.map(lambda a, n=n: jnp.zeros((n,) + a.shape, a.dtype), p)
               for p, n in zip(proto, counts)]

      def body(carry, inp):
        h, bufs = carry
        xs_l, seed, c, s = inp

        def write(k):
          def branch(bufs):
            new = jax.tree.map(lambda buf, v: jax.lax.dynamic_update_index_in_dim(buf, v, s, 0),
                               bufs[k], save(h, widths[k], seed))
            return [new if j == k else b for j, b in enumerate(bufs)]
          return branch

        bufs = jax.lax.switch(c, [write(k) for k in range(len(widths))], bufs)
        return (layer_fn(shared, xs_l, h), bufs), None

      (h, bufs), _ = jax.lax.scan(body, (h, bufs0), (xs, seeds, cls, slot))
      return h, (shared, xs, bufs)

    def bwd(res, gy):
      shared, xs, bufs = res
      sh_f, sh_o, sh_def = _split_float(shared)
      readers = [lambda s, k=k: decompress_leaf(jax.tree.map(lambda a: a[s], bufs[k])) for k in range(len(widths))]

      def body(carry, inp):
        g, g_sh = carry
        xs_l, c, s = inp
        x_hat = jax.lax.switch(c, readers, s)
        xf, xo, x_def = _split_float(xs_l)
        f = lambda shf, xsf, h: layer_fn(_merge(shf, sh_o, sh_def), _merge(xsf, xo, x_def), h)
        _, vjp = jax.vjp(f, sh_f, xf, x_hat)
        d_sh, d_xs, d_h = vjp(g)
        g_sh = jax.tree.map(jnp.add, g_sh, d_sh)
        return (d_h, g_sh), d_xs

      zeros = jax.tree.map(jnp.zeros_like, sh_f)
      (g_h, g_sh), g_xs = jax.lax.scan(body, (gy, zeros), (xs, cls, slot), reverse=True)
      return _cotangent_tree(shared, g_sh), _cotangent_tree(xs, g_xs), g_h, None

    stack.defvjp(fwd, bwd)
    return stack(shared, xs, h, seeds)

  return layer_stack


def probe_stack(bits) -> Callable:
  """A layer-stack runner for GACT's sensitivity estimate (§4.2) on a stack: the forward is exact;
  the backward recomputes layer l from fake_quantize(its input, bits[l]) (traced widths, 32 =
  exact), so one compiled gradient serves every (layer, width) probe."""
  def layer_stack(layer_fn: Callable, h, xs, shared, seeds):
    @jax.custom_vjp
    def layer(shared, xs_l, h, seed, b):
      return layer_fn(shared, xs_l, h)

    def fwd(shared, xs_l, h, seed, b):
      return layer_fn(shared, xs_l, h), (shared, xs_l, h, seed, b)

    def bwd(res, g):     # everything it reads comes through res (no closed-over tracers)
      shared, xs_l, h, seed, b = res
      sh_f, sh_o, sh_def = _split_float(shared)
      xf, xo, x_def = _split_float(xs_l)
      f = lambda shf, xsf, h: layer_fn(_merge(shf, sh_o, sh_def), _merge(xsf, xo, x_def), h)
      s = jnp.asarray(seed, jnp.uint32) * jnp.uint32(0x85EBCA6B)
      _, vjp = jax.vjp(f, sh_f, xf, fake_quantize(h, b, s))
      d_sh, d_xs, d_h = vjp(g)
      return _cotangent_tree(shared, d_sh), _cotangent_tree(xs_l, d_xs), d_h, None, None

    layer.defvjp(fwd, bwd)
    body = lambda h, inp: (layer(shared, inp[0], h, inp[1], inp[2]), None)
    return jax.lax.scan(body, h, (xs, seeds, jnp.asarray(bits, jnp.float32)))[0]
  return layer_stack


def _cotangent_tree(primal, float_cts):
  """Cotangents for `primal`: the float leaves from `float_cts` (as `_split_float` lists them),
  None (zero) for integer and key leaves."""
  leaves, treedef = jax.tree.flatten(primal)
  cts = jax.tree.leaves(float_cts, is_leaf=lambda x: x is None)
  it = iter(c for c in cts if c is not None)
  return jax.tree.unflatten(treedef, [next(it) if _is_float(l) else None for l in leaves])
