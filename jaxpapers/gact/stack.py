"""A scanned layer stack that saves only each layer's compressed input, at one width per layer
(GACT, arXiv 2206.11357 §4.3 per-tensor bits, combined with checkpointing as in §6).

`compressed_stack(bits)` returns `layer_stack(layer_fn, h, xs, shared, seeds, chunk=0) -> h`, a
drop-in for `lax.scan` over `layer_fn(shared, xs_l, h, part) -> h` with `jax.checkpoint` (GLM's
and the GCN's `layer_stack` hook). Its `jax.custom_vjp`:

- forward: the exact layers, one scan; before layer l overwrites its input, the input is
  compressed at `bits[l]` (32 = kept in FP32) into slot l of its width class's stacked buffer
  (a `lax.switch` over the classes): these codes are the only residuals.
- backward: one reverse scan; layer l reads its codes, dequantises them, re-runs `jax.vjp` of
  the layer and passes the cotangent down. Parameter gradients come out stacked; cotangents of
  float `shared` leaves (e.g. RoPE tables) are summed over layers.
- with chunk > 0 (rows independent: h and every `shared` leaf have the batch leading), every
  layer runs over micro-batches of `chunk` rows in place (`nn.micro_batch`): a part is compressed
  (at its element offset, so the codes equal the whole tensor's), then overwritten by the
  layer's output; the backward decompresses, recomputes and pulls back one part at a time over
  the cotangent's buffer. Then the stack holds the codes, one [B, ...] buffer and one part's
  working set, which is what lets the compressed inputs dominate the memory (README).

A single forward and a single backward scan keep one layer's working set alive whatever the
widths: one `lax.scan` per run of equal widths made XLA keep a working set per scan (597 MiB vs
283 MiB for 8 GLM layers when the backward was split too; 932 vs 468 MiB at batch 1024 with
micro-batched layers when only the forward was; see experiments/gact/README.md).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxpapers.core.errors import ConfigError
from jaxpapers.gact.wrapper import check_bits, compress_leaf, decompress_leaf
from jaxpapers.nn.float_tree import cotangent_tree, merge_float, split_float
from jaxpapers.nn.micro_batch import backward_in_parts, forward_in_parts
from pallas_kernels.act_compress import GROUP, fake_quantize


def compressed_stack(bits: Sequence[int]) -> Callable:
  """A layer-stack runner saving layer l's input at bits[l] in {1, 2, 4, 8, 32}."""
  bits = tuple(int(b) for b in bits)
  check_bits(bits)
  if not bits:
    raise ConfigError("compressed_stack needs at least one layer width")
  widths = sorted(set(bits))
  cls = jnp.asarray([widths.index(b) for b in bits], jnp.int32)
  slot = jnp.asarray([bits[:l].count(b) for l, b in enumerate(bits)], jnp.int32)

  def layer_stack(layer_fn: Callable, h, xs, shared, seeds, chunk: int = 0):
    n = jax.tree.leaves(xs)[0].shape[0]
    if n != len(bits):
      raise ConfigError(f"{len(bits)} layer widths given for a stack of {n} layers")
    row = math.prod(h.shape[1:])
    if 0 < chunk < h.shape[0] and row % GROUP:
      raise ConfigError(f"compressed_stack micro-batches need rows of a multiple of {GROUP} "
                        f"values (one row here: {h.shape[1:]}); use chunk 0")

    def at(start, w):      # a part's first index along the leading axis of width w's buffers
      return 0 if start is None else (start if w == 32 else start * (row // GROUP))

    def write(buf, s, start, code, w, offset=None):   # (a part's code has its own static shape)
      leaves, treedef = jax.tree.flatten(buf)
      o = at(start, w) if offset is None else offset
      return treedef.unflatten([jax.lax.dynamic_update_slice(b, v[None], (s, o) + (0,) * (v.ndim - 1))
                                for b, v in zip(leaves, jax.tree.leaves(code))])

    def read(buf, s, start, size, w):
      if start is None:    # the whole tensor (its last group may be padded; no dump region)
        n = jax.tree.leaves(jax.eval_shape(lambda: compress_leaf(h, w, 0, 0)))[0].shape[0]
        part = jax.tree.map(lambda b: jax.lax.dynamic_slice(
            b, (s, 0) + (0,) * (b.ndim - 2), (1, n) + b.shape[2:])[0], buf)
        return part if w == 32 else decompress_leaf(part)
      n_lead = size if w == 32 else size * row // GROUP
      part = jax.tree.map(lambda b: jax.lax.dynamic_slice(
          b, (s, at(start, w)) + (0,) * (b.ndim - 2), (1, n_lead) + b.shape[2:])[0], buf)
      return part if w == 32 else decompress_leaf(part.replace(shape=(size,) + h.shape[1:]))

    def run_layers(shared, xs, h):
      body = lambda h, xs_l: (forward_in_parts(lambda x, sh, i: layer_fn(sh, xs_l, x, i), h,
                                               shared, chunk)[0], None)
      return jax.lax.scan(body, h, xs)[0]

    @jax.custom_vjp
    def stack(shared, xs, h, seeds):
      return run_layers(shared, xs, h)

    def fwd(shared, xs, h, seeds):
      proto = [jax.eval_shape(lambda h, s, w=w: compress_leaf(h, w, s, 0), h, seeds[0])
               for w in widths]
      # mixed widths: each class's buffer gets a dump region of one part after its data, where
      # the classes a layer does not use write their (zero) codes: every write is then an
      # unconditional in-place update. Writing inside a lax.switch over the classes made XLA
      # copy buffers (24 GLM layers at 1/2/8 bits: 46 MiB more per 1,024 sequences).
      whole = not 0 < chunk < h.shape[0]
      part = jax.eval_shape(lambda h, s: [compress_leaf(h, w, s, 0) for w in widths],
                            h if whole else h[:chunk], seeds[0])
      dump = [jax.tree.leaves(p)[0].shape[0] for p in proto]      # where the dump region starts
      extra = [0 if len(widths) == 1 else jax.tree.leaves(q)[0].shape[0] for q in part]
      bufs0 = [jax.tree.map(lambda a, k=bits.count(w), e=e: jnp.zeros((k, a.shape[0] + e) + a.shape[1:],
                                                                         a.dtype), p)
               for p, w, e in zip(proto, widths, extra)]

      def body(carry, inp):
        h, bufs = carry
        xs_l, seed, c, s = inp

        def save(bufs, i, start, x):
          base = 0 if start is None else start * row
          if len(widths) == 1:
            return [write(bufs[0], s, start, compress_leaf(x, widths[0], seed, 0, base), widths[0])]
          shapes = jax.eval_shape(lambda x: [compress_leaf(x, w, seed, 0, base) for w in widths], x)
          zeros = lambda j: jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes[j])
          codes = jax.lax.switch(c, [
              lambda x, k=k: [compress_leaf(x, widths[j], seed, 0, base) if j == k else zeros(j)
                              for j in range(len(widths))] for k in range(len(widths))], x)
          return [write(b, jnp.where(c == j, s, 0), start, code, widths[j],
                        offset=jnp.where(c == j, at(start, widths[j]), dump[j]))
                  for j, (b, code) in enumerate(zip(bufs, codes))]

        return forward_in_parts(lambda x, sh, i: layer_fn(sh, xs_l, x, i), h, shared, chunk,
                                bufs, save), None

      (h, bufs), _ = jax.lax.scan(body, (h, bufs0), (xs, seeds, cls, slot))
      return h, (shared, xs, bufs)

    def bwd(res, gy):
      shared, xs, bufs = res
      sh_f = split_float(shared)[0]

      def body(carry, inp):
        g, g_sh = carry
        xs_l, c, s = inp
        readers = [lambda start, size, k=k: read(bufs[k], s, start, size, widths[k])
                   for k in range(len(widths))]
        rows_of = (lambda i, start, size: readers[0](start, size)) if len(widths) == 1 else (
            lambda i, start, size: jax.lax.switch(c, [lambda r=r: r(start, size) for r in readers]))
        d_xs, g, d_sh = backward_in_parts(lambda xs_l, x, sh, i: layer_fn(sh, xs_l, x, i), xs_l,
                                          rows_of, shared, g, chunk)
        return (g, jax.tree.map(jnp.add, g_sh, d_sh)), d_xs

      zeros = cotangent_tree(shared, [None if a is None else jnp.zeros_like(a) for a in sh_f])
      (g_h, g_sh), g_xs = jax.lax.scan(body, (gy, zeros), (xs, cls, slot), reverse=True)
      return g_sh, g_xs, g_h, None

    stack.defvjp(fwd, bwd)
    return stack(shared, xs, h, seeds)

  return layer_stack


def probe_stack(bits) -> Callable:
  """A layer-stack runner for GACT's sensitivity estimate (§4.2) on a stack: the forward is exact;
  the backward recomputes layer l from fake_quantize(its input, bits[l]) (traced widths, 32 =
  exact), so one compiled gradient serves every (layer, width) probe. Whole batches only (the
  probe batch is small): `chunk` is accepted for the hook's signature and not used."""
  def layer_stack(layer_fn: Callable, h, xs, shared, seeds, chunk: int = 0):
    @jax.custom_vjp
    def layer(shared, xs_l, h, seed, b):
      return layer_fn(shared, xs_l, h, None)

    def fwd(shared, xs_l, h, seed, b):
      return layer_fn(shared, xs_l, h, None), (shared, xs_l, h, seed, b)

    def bwd(res, g):     # everything it reads comes through res (no closed-over tracers)
      shared, xs_l, h, seed, b = res
      sh_f, sh_o, sh_def = split_float(shared)
      xf, xo, x_def = split_float(xs_l)
      f = lambda shf, xsf, h: layer_fn(merge_float(shf, sh_o, sh_def), merge_float(xsf, xo, x_def),
                                       h, None)
      s = jnp.asarray(seed, jnp.uint32) * jnp.uint32(0x85EBCA6B)
      _, vjp = jax.vjp(f, sh_f, xf, fake_quantize(h, b, s))
      d_sh, d_xs, d_h = vjp(g)
      return cotangent_tree(shared, d_sh), cotangent_tree(xs_l, d_xs), d_h, None, None

    layer.defvjp(fwd, bwd)
    body = lambda h, inp: (layer(shared, inp[0], h, inp[1], inp[2]), None)
    return jax.lax.scan(body, h, (xs, seeds, jnp.asarray(bits, jnp.float32)))[0]
  return layer_stack
