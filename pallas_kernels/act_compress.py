"""GACT's activation compressor (arXiv 2206.11357 §4, and its released code's quantizer).

A tensor is flattened and cut into groups of 256 values (the last one padded with its last
value, so the padding never widens its range; the official code pads zeros); per group
    min_g,  scale_g = (2^b - 1) / (max_g - min_g + 2e-6)
    q = floor((x - min_g) * scale_g + u),   u ~ U[0, 1)        (stochastic rounding: E[q] exact)
    x_hat = q / scale_g + min_g
with b in {1, 2, 4, 8}, the codes bit-packed 8/b per byte (value j of a byte in bits j*b..). u
comes from a counter-based hash of (seed, element index), so the same (tensor, iteration) seed
gives the same codes everywhere, including inside the Pallas kernel. Boolean tensors (dropout
masks) are packed at 1 bit without quantization. `compress_ref` / `decompress_ref` are the
reference; `compress_pallas` is the kernel (interpret mode on CPU).
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
  return (x >> 8).astype(jnp.float32) * jnp.float32(2.0 ** -24)


def _groups(x: jnp.ndarray) -> jnp.ndarray:
  flat = x.reshape(-1)
  pad = (-flat.size) % GROUP
  if pad:   # repeat the last value: zeros would widen the last group's range (and put 0 in it:
    flat = jnp.pad(flat, (0, pad), mode="edge")   # a softmax denominator rounded to 0 gave NaN)
  return flat.reshape(-1, GROUP)


def pack_bits(q: jnp.ndarray, bits: int) -> jnp.ndarray:
  """[G, 256] codes < 2^bits -> uint8 [G, 256 * bits / 8]; value j of a byte sits at bit j*bits."""
  per = 8 // bits
  q = q.astype(jnp.uint8).reshape(q.shape[0], -1, per)
  shifts = jnp.arange(per, dtype=jnp.uint8) * jnp.uint8(bits)
  # the fields are disjoint, so a uint8 sum is their bitwise or: no wider intermediate for XLA
  # to keep as the saved residual (a uint32 sum cast at the end was kept at 4x the bytes)
  return jnp.sum(q << shifts, axis=-1, dtype=jnp.uint8)


def unpack_bits(p: jnp.ndarray, bits: int) -> jnp.ndarray:
  per = 8 // bits
  shifts = jnp.arange(per, dtype=jnp.uint32) * bits
  q = (p.astype(jnp.uint32)[..., None] >> shifts) & jnp.uint32((1 << bits) - 1)
  return q.reshape(p.shape[0], -1)


def _quantize_groups(xg, bits, seed, base):
  """xg [g, 256] f32 -> (codes [g, 256] uint32, mn [g], scale [g]); `base` = index of xg[0, 0]."""
  mn = xg.min(axis=1)
  mx = xg.max(axis=1)
  scale = (2.0 ** bits - 1.0) / (mx - mn + EPS)
  idx = base + jnp.arange(xg.size, dtype=jnp.uint32).reshape(xg.shape)
  u = hash_uniform(seed, idx)
  q = jnp.floor((xg - mn[:, None]) * scale[:, None] + u)
  q = jnp.clip(q, 0.0, 2.0 ** bits - 1.0).astype(jnp.uint32)
  return q, mn, scale


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


def decompress_ref(c: Compressed) -> jnp.ndarray:
  q = unpack_bits(c.packed, c.bits)
  n = math.prod(c.shape)
  if c.dtype == "bool":
    return q.reshape(-1)[:n].reshape(c.shape).astype(jnp.bool_)
  x = q.astype(jnp.float32) / c.scale[:, None] + c.mn[:, None]
  return x.reshape(-1)[:n].reshape(c.shape).astype(c.dtype)


def _compress_kernel(seed_ref, x_ref, p_ref, mn_ref, s_ref, *, bits, block):
  base = (pl.program_id(0) * (block * GROUP)).astype(jnp.uint32)
  q, mn, scale = _quantize_groups(x_ref[...], bits, seed_ref[0], base)
  p_ref[...] = pack_bits(q, bits)
  mn_ref[...] = mn
  s_ref[...] = scale


@functools.partial(jax.jit, static_argnames=("bits", "block", "interpret"))
def compress_pallas(x: jnp.ndarray, bits: int, seed, block: int = 8,
                    interpret: bool = False) -> Compressed:
  """The compressor as a Pallas kernel over blocks of `block` groups; equals `compress_ref`."""
  check_bits(bits)
  if x.dtype == jnp.bool_:
    return compress_ref(x, bits, seed)
  xg = _groups(x.astype(jnp.float32))
  G = xg.shape[0]
  Gp = -(-G // block) * block
  if Gp != G:   # padded groups are dropped below
    xg = jnp.pad(xg, ((0, Gp - G), (0, 0)))
  nb = GROUP * bits // 8
  packed, mn, scale = pl.pallas_call(
      functools.partial(_compress_kernel, bits=bits, block=block),
      out_shape=(jax.ShapeDtypeStruct((Gp, nb), jnp.uint8),
                 jax.ShapeDtypeStruct((Gp,), jnp.float32),
                 jax.ShapeDtypeStruct((Gp,), jnp.float32)),
      grid=(Gp // block,),
      in_specs=[pl.BlockSpec((1,), lambda i: (0,)),
                pl.BlockSpec((block, GROUP), lambda i: (i, 0))],
      out_specs=(pl.BlockSpec((block, nb), lambda i: (i, 0)),
                 pl.BlockSpec((block,), lambda i: (i,)),
                 pl.BlockSpec((block,), lambda i: (i,))),
      interpret=interpret,
  )(jnp.asarray(seed, jnp.uint32).reshape(1), xg)
  return Compressed(packed[:G], mn[:G], scale[:G], tuple(x.shape), jnp.dtype(x.dtype).name, bits)


def fake_quantize(x: jnp.ndarray, bits, seed) -> jnp.ndarray:
  """decompress(compress(x, bits, seed)) with `bits` a traced value (no packing; >= 32 returns
  x): one compiled function serves every width, as the sensitivity estimate needs."""
  bits = jnp.asarray(bits, jnp.float32)
  xg = _groups(x.astype(jnp.float32))
  mn = xg.min(axis=1)
  mx = xg.max(axis=1)
  levels = jnp.exp2(jnp.minimum(bits, 8.0)) - 1.0
  scale = levels / (mx - mn + EPS)
  idx = jnp.arange(xg.size, dtype=jnp.uint32).reshape(xg.shape)
  q = jnp.clip(jnp.floor((xg - mn[:, None]) * scale[:, None] + hash_uniform(seed, idx)), 0.0, levels)
  x_hat = (q / scale[:, None] + mn[:, None]).reshape(-1)[:x.size].reshape(x.shape).astype(x.dtype)
  return jnp.where(bits >= 32, x, x_hat)
