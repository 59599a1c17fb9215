"""GACT's activation compressor (arXiv 2206.11357 §4, and its released code's quantizer).

A tensor is flattened and cut into groups of 256 values (the last one padded with its last
value, so the padding never widens its range; the official code pads zeros); per group
    min_g,  scale_g = (2^b - 1) / (max_g - min_g + 2e-6)
    q = floor((x - min_g) * scale_g + u),   u ~ U[0, 1)        (stochastic rounding: E[q] exact)
    x_hat = q / scale_g + min_g
with b in {1, 2, 4, 8}, the codes bit-packed 8/b per byte, strided: byte k of a group holds values
k, k + n, k + 2n, ... (n = 256 b / 8 bytes per group), value j at bits j*b.. (the official CUDA
packs neighbours; strided fields are whole column slices, which a kernel loads and stores
without reshaping a loaded value, something Triton cannot lower). u comes from a counter-based
hash of (seed, element index), the index counted from `base` (the element's place in the
tensor a part of it belongs to: a tensor compressed part by part, e.g. per micro-batch, each part
a whole number of groups, gets the same codes), so the same (tensor, iteration) seed gives the
same codes everywhere, inside the kernels too. Boolean tensors (dropout masks) are packed at 1
bit without quantization.

`compress` / `decompress` are what the training path calls (`jaxpapers.gact.wrapper`): at
lowering time (`lax.platform_dependent`) the CPU gets the jnp reference (`compress_ref`,
`decompress_ref`), a GPU or TPU the Pallas kernels (`compress_pallas`, `decompress_pallas`,
layouts "gpu" (Triton) and "tpu" (Mosaic)); in interpret mode the kernels equal the reference
bitwise (tests/gact/test_compress.py).
"""
from __future__ import annotations

import functools
import math

import flax.struct
import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from jaxpapers.core.errors import ConfigError

GROUP = 256
BITS = (1, 2, 4, 8)
EPS = 2e-6


@flax.struct.dataclass
class Compressed:
  packed: jnp.ndarray              # uint8 [G, GROUP * bits / 8]
  mn: jnp.ndarray                  # f32 [G] (unused for bool tensors)
  scale: jnp.ndarray               # f32 [G]
  shape: tuple = flax.struct.field(pytree_node=False)
  dtype: str = flax.struct.field(pytree_node=False)
  bits: int = flax.struct.field(pytree_node=False)

  @property
  def nbytes(self) -> int:
    return sum(a.size * a.dtype.itemsize for a in (self.packed, self.mn, self.scale))


def check_bits(bits: int) -> None:
  if bits not in BITS:
    raise ConfigError(f"unsupported activation bit width {bits}; use one of {BITS} (32: uncompressed)")


def _mix(x):
  """A 32-bit integer finaliser (xorshift-multiply rounds): every input bit reaches every output bit."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def hash_uniform(seed, idx):
  """U[0, 1) from a counter-based hash: element idx of the stream that starts at mix(seed). The
  seed enters before any constant arithmetic on the index, so XLA has no [n]-sized constant to
  fold (folding iota * constant took minutes to compile at a million elements)."""
  x = idx.astype(jnp.uint32) + _mix(jnp.asarray(seed, jnp.uint32) * jnp.uint32(0x9E3779B1))
  x = _mix(x)
  # (< 2^24: exact through int32, which every backend converts to float)
  return (x >> 8).astype(jnp.int32).astype(jnp.float32) * jnp.float32(2.0 ** -24)


def _groups(x: jnp.ndarray) -> jnp.ndarray:
  flat = x.reshape(-1)
  pad = (-flat.size) % GROUP
  if pad:   # repeat the last value: zeros would widen the last group's range (and put 0 in it:
    flat = jnp.pad(flat, (0, pad), mode="edge")   # a softmax denominator rounded to 0 gave NaN)
  return flat.reshape(-1, GROUP)


def pack_bits(q: jnp.ndarray, bits: int) -> jnp.ndarray:
  """[G, 256] codes < 2^bits -> uint8 [G, n], n = 256 * bits / 8; byte k holds value k + j*n at
  bit j*bits (see the module docstring)."""
  per, n = 8 // bits, GROUP * bits // 8
  q = q.astype(jnp.uint8).reshape(q.shape[0], per, n)
  shifts = (jnp.arange(per, dtype=jnp.uint8) * jnp.uint8(bits))[:, None]
  # the fields are disjoint, so a uint8 sum is their bitwise or: no wider intermediate for XLA
  # to keep as the saved residual (a uint32 sum cast at the end was kept at 4x the bytes)
  return jnp.sum(q << shifts, axis=1, dtype=jnp.uint8)


def unpack_bits(p: jnp.ndarray, bits: int) -> jnp.ndarray:
  per = 8 // bits
  shifts = (jnp.arange(per, dtype=jnp.uint32) * bits)[:, None]
  q = (p.astype(jnp.uint32)[:, None, :] >> shifts) & jnp.uint32((1 << bits) - 1)
  return q.reshape(p.shape[0], -1)


def _index(shape, row0, col0, base):
  """uint32 element indices of a [rows, cols] block of groups whose first element is group
  row0's value col0, counted from `base` (2-D iotas: what Mosaic and Triton lower)."""
  r = jax.lax.broadcasted_iota(jnp.int32, shape, 0) + row0
  c = jax.lax.broadcasted_iota(jnp.int32, shape, 1) + col0
  return (r * GROUP + c).astype(jnp.uint32) + base


def _scale_of(mn, mx, bits):
  return (2.0 ** bits - 1.0) / (mx - mn + EPS)


def _codes(x, mn, scale, u, bits):
  q = jnp.floor((x - mn) * scale + u)
  return jnp.clip(q, 0.0, 2.0 ** bits - 1.0).astype(jnp.int32).astype(jnp.uint32)


def _quantize_groups(xg, bits, seed, base):
  """xg [g, 256] f32 -> (codes [g, 256] uint32, mn [g], scale [g]); `base` = index of xg[0, 0]."""
  mn = xg.min(axis=1)
  scale = _scale_of(mn, xg.max(axis=1), bits)
  # the element index as one flat iota (the kernels' 2-D iotas give the same numbers): XLA folds
  # an iota times a constant into an [n]-sized constant, which took minutes to compile
  u = hash_uniform(seed, jnp.arange(xg.size, dtype=jnp.uint32).reshape(xg.shape) + base)
  return _codes(xg, mn[:, None], scale[:, None], u, bits), mn, scale


def compress_ref(x: jnp.ndarray, bits: int, seed, base=0) -> Compressed:
  """Reference compressor (see the module docstring). `base`: the index of x's first element in
  the tensor it is a part of (the rounding noise is keyed by the element's index there), so that
  a tensor compressed part by part, each part a whole number of groups, gets the same codes."""
  check_bits(bits)
  if x.dtype == jnp.bool_:
    q = _groups(x.astype(jnp.uint32))
    z = jnp.zeros((q.shape[0],), jnp.float32)
    return Compressed(pack_bits(q, 1), z, z, tuple(x.shape), "bool", 1)
  xg = _groups(x.astype(jnp.float32))
  q, mn, scale = _quantize_groups(xg, bits, seed, jnp.asarray(base, jnp.uint32))
  return Compressed(pack_bits(q, bits), mn, scale, tuple(x.shape), jnp.dtype(x.dtype).name, bits)


def _unflatten(flat: jnp.ndarray, c: Compressed) -> jnp.ndarray:
  return flat.reshape(-1)[:math.prod(c.shape)].reshape(c.shape)


def decompress_ref(c: Compressed) -> jnp.ndarray:
  q = unpack_bits(c.packed, c.bits)
  if c.dtype == "bool":
    return _unflatten(q, c).astype(jnp.bool_)
  return _unflatten(q.astype(jnp.float32) / c.scale[:, None] + c.mn[:, None], c).astype(c.dtype)


# --- the Pallas kernels ---------------------------------------------------------------------

LAYOUTS = ("gpu", "tpu")


def _compress_kernel(sb_ref, x_ref, p_ref, mn_ref, s_ref, *, bits, block):
  """One block of `block` groups. sb_ref: (seed, base) as int32 (their uint32 bits)."""
  seed = jax.lax.bitcast_convert_type(sb_ref[0], jnp.uint32)
  base = jax.lax.bitcast_convert_type(sb_ref[1], jnp.uint32)
  row0 = pl.program_id(0) * block
  x = x_ref[...].astype(jnp.float32)
  mn = jnp.min(x, axis=1, keepdims=True)
  scale = _scale_of(mn, jnp.max(x, axis=1, keepdims=True), bits)
  per, n = 8 // bits, GROUP * bits // 8
  packed = None
  for j in range(per):      # field j of every byte: values j*n .. j*n + n - 1 of each group
    u = hash_uniform(seed, _index((block, n), row0, j * n, base))
    xj = x_ref[:, pl.ds(j * n, n)].astype(jnp.float32)
    q = _codes(xj, mn, scale, u, bits) << jnp.uint32(j * bits)
    packed = q if packed is None else packed | q
  p_ref[...] = packed.astype(jnp.uint8)
  mn_ref[...] = mn
  s_ref[...] = scale


def _decompress_kernel(p_ref, mn_ref, s_ref, o_ref, *, bits):
  per, n = 8 // bits, GROUP * bits // 8
  p = p_ref[...].astype(jnp.uint32)
  mn, scale = mn_ref[...], s_ref[...]
  for j in range(per):
    q = (p >> jnp.uint32(j * bits)) & jnp.uint32((1 << bits) - 1)
    o_ref[:, pl.ds(j * n, n)] = q.astype(jnp.int32).astype(jnp.float32) / scale + mn


def _layout(layout):
  layout = layout or ("tpu" if jax.default_backend() == "tpu" else "gpu")
  if layout not in LAYOUTS:
    raise ConfigError(f"unknown kernel layout {layout!r}; use one of {LAYOUTS}")
  return layout


def _block(G: int, block) -> int:
  """Groups per kernel program: a power of two (Triton) and a multiple of 8 (the TPU's tiles)."""
  if block is None:
    block = min(64, max(8, 1 << (G - 1).bit_length()))
  if block < 8 or block & (block - 1):
    raise ConfigError(f"block {block} must be a power of two >= 8 (Triton's and the TPU's tiles)")
  return block


def _call(kernel, args, out_shape, grid, in_specs, out_specs, layout, interpret, scalars=0):
  """pallas_call for a layout: on the TPU the first `scalars` args go to SMEM by scalar
  prefetch; on a GPU the kernel is Triton's (its compiler parameters name it)."""
  if layout == "tpu":
    from jax.experimental.pallas import tpu as pltpu
    drop = (lambda spec: pl.BlockSpec(spec.block_shape, lambda i, *_: spec.index_map(i)))
    return pl.pallas_call(
        kernel, out_shape=out_shape,
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=scalars, grid=grid, in_specs=[drop(sp) for sp in in_specs],
            out_specs=tuple(drop(sp) for sp in out_specs)),
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel",)),
        interpret=interpret)(*args)
  compiler_params = None
  if not interpret:
    from jax.experimental.pallas import triton as pltriton
    compiler_params = pltriton.CompilerParams(num_warps=4, num_stages=1)
  specs = [pl.BlockSpec(a.shape, lambda i: (0,)) for a in args[:scalars]] + list(in_specs)
  return pl.pallas_call(kernel, out_shape=out_shape, grid=grid, in_specs=specs,
                        out_specs=tuple(out_specs), interpret=interpret,
                        compiler_params=compiler_params)(*args)


@functools.partial(jax.jit, static_argnames=("bits", "layout", "block", "interpret"))
def compress_pallas(x: jnp.ndarray, bits: int, seed, base=0, layout: str | None = None,
                    block: int | None = None, interpret: bool = False) -> Compressed:
  """The compressor as a Pallas kernel over blocks of `block` groups; equals `compress_ref`
  (bool tensors: the reference's 1-bit packing, no kernel)."""
  check_bits(bits)
  layout = _layout(layout)
  if x.dtype == jnp.bool_:
    return compress_ref(x, bits, seed)
  # no copy of x in the caller (GACT exists to save memory): its dtype is converted inside the
  # kernel, and the last program's block may reach past the last group (rows are independent;
  # what lies past the end is neither read into a kept row nor written)
  xg = _groups(x)
  G = xg.shape[0]
  block = _block(G, block)
  n = GROUP * bits // 8
  sb = jax.lax.bitcast_convert_type(jnp.stack([jnp.asarray(seed, jnp.uint32),
                                               jnp.asarray(base, jnp.uint32)]), jnp.int32)
  packed, mn, scale = _call(
      functools.partial(_compress_kernel, bits=bits, block=block), (sb, xg),
      (jax.ShapeDtypeStruct((G, n), jnp.uint8), jax.ShapeDtypeStruct((G, 1), jnp.float32),
       jax.ShapeDtypeStruct((G, 1), jnp.float32)),
      (-(-G // block),), [pl.BlockSpec((block, GROUP), lambda i: (i, 0))],
      [pl.BlockSpec((block, n), lambda i: (i, 0)), pl.BlockSpec((block, 1), lambda i: (i, 0)),
       pl.BlockSpec((block, 1), lambda i: (i, 0))], layout, interpret, scalars=1)
  return Compressed(packed, mn[:, 0], scale[:, 0], tuple(x.shape), jnp.dtype(x.dtype).name, bits)


@functools.partial(jax.jit, static_argnames=("layout", "block", "interpret"))
def decompress_pallas(c: Compressed, layout: str | None = None, block: int | None = None,
                      interpret: bool = False) -> jnp.ndarray:
  """`decompress_ref` as a Pallas kernel (bool tensors: the reference)."""
  layout = _layout(layout)
  if c.dtype == "bool":
    return decompress_ref(c)
  G, n = c.packed.shape
  block = _block(G, block)
  out = _call(
      functools.partial(_decompress_kernel, bits=c.bits),
      (c.packed, c.mn[:, None], c.scale[:, None]),
      (jax.ShapeDtypeStruct((G, GROUP), jnp.float32),), (-(-G // block),),
      [pl.BlockSpec((block, n), lambda i: (i, 0)), pl.BlockSpec((block, 1), lambda i: (i, 0)),
       pl.BlockSpec((block, 1), lambda i: (i, 0))],
      [pl.BlockSpec((block, GROUP), lambda i: (i, 0))], layout, interpret)[0]
  return _unflatten(out, c).astype(c.dtype)


def compress(x: jnp.ndarray, bits: int, seed, base=0) -> Compressed:
  """The training path's compressor: the reference on the CPU, the Pallas kernel of the
  platform the program is lowered for on a GPU or TPU (`lax.platform_dependent`)."""
  if x.dtype == jnp.bool_:
    return compress_ref(x, bits, seed, base)
  kernel = lambda layout: (lambda x, seed, base: compress_pallas(x, bits, seed, base, layout))
  return jax.lax.platform_dependent(
      x, jnp.asarray(seed, jnp.uint32), jnp.asarray(base, jnp.uint32),
      cpu=lambda x, seed, base: compress_ref(x, bits, seed, base),
      cuda=kernel("gpu"), rocm=kernel("gpu"), tpu=kernel("tpu"))


def compress_parts_ref(parts, bits: int, seed) -> Compressed:
  """`compress_ref` of the concatenation of `parts` (each a whole number of groups), with each
  group's min and max taken from its own part, so that the concatenation is only read by the
  rounding (XLA then fuses it into that loop instead of writing it out)."""
  check_bits(bits)
  gs = [_groups(p.astype(jnp.float32)) for p in parts]
  mn = jnp.concatenate([g.min(axis=1) for g in gs])
  scale = _scale_of(mn, jnp.concatenate([g.max(axis=1) for g in gs]), bits)
  xg = jnp.concatenate(gs)
  u = hash_uniform(seed, jnp.arange(xg.size, dtype=jnp.uint32).reshape(xg.shape))
  q = _codes(xg, mn[:, None], scale[:, None], u, bits)
  return Compressed(pack_bits(q, bits), mn, scale, (xg.size,), "float32", bits)


def compress_parts(parts, bits: int, seed) -> Compressed:
  """`compress` of the concatenation of float `parts`, each a whole number of groups: the
  reference without writing the concatenation on the CPU, the kernel on it on a GPU or TPU."""
  if len(parts) == 1:
    return compress(parts[0], bits, seed)
  kernel = lambda layout: (lambda ps, seed: compress_pallas(jnp.concatenate(ps), bits, seed, 0, layout))
  return jax.lax.platform_dependent(
      tuple(p.astype(jnp.float32) for p in parts), jnp.asarray(seed, jnp.uint32),
      cpu=lambda ps, seed: compress_parts_ref(ps, bits, seed),
      cuda=kernel("gpu"), rocm=kernel("gpu"), tpu=kernel("tpu"))


def decompress(c: Compressed) -> jnp.ndarray:
  """The training path's decompressor (as `compress`)."""
  if c.dtype == "bool":
    return decompress_ref(c)
  kernel = lambda layout: (lambda c: decompress_pallas(c, layout))
  return jax.lax.platform_dependent(c, cpu=decompress_ref, cuda=kernel("gpu"),
                                    rocm=kernel("gpu"), tpu=kernel("tpu"))


def fake_quantize(x: jnp.ndarray, bits, seed) -> jnp.ndarray:
  """decompress(compress(x, bits, seed)) with `bits` a traced value (no packing; >= 32 returns
  x): one compiled function serves every width, as the sensitivity estimate needs. `bits` is a
  scalar or one width per group of 256 ([G]: a block's tensors packed into one array, each at
  its own width)."""
  bits = jnp.asarray(bits, jnp.float32)
  xg = _groups(x.astype(jnp.float32))
  if bits.ndim and bits.shape != (xg.shape[0],):
    raise ConfigError(f"{bits.size} widths for {xg.shape[0]} groups")
  b = bits.reshape(-1, 1) if bits.ndim else bits          # [G, 1] or a scalar
  mn = xg.min(axis=1, keepdims=True)
  mx = xg.max(axis=1, keepdims=True)
  levels = jnp.exp2(jnp.minimum(b, 8.0)) - 1.0
  scale = levels / (mx - mn + EPS)
  idx = jnp.arange(xg.size, dtype=jnp.uint32).reshape(xg.shape)
  q = jnp.clip(jnp.floor((xg - mn) * scale + hash_uniform(seed, idx)), 0.0, levels)
  x_hat = jnp.where(b >= 32, xg, q / scale + mn)
  return x_hat.reshape(-1)[:x.size].reshape(x.shape).astype(x.dtype)
