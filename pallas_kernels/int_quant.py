"""Weight-only integer quantization in GLM-130B's format (arXiv 2210.02414 §5, App. B.8).

Symmetric absmax with one scale per output row and no calibration:
    s_r = max_j |W_rj| / (2^(b-1) - 1),   q = round(W / s_r)
INT8 in [-127, 127], INT4 in [-7, 7]. Weights are [N (out), K (in)] as GLM-130B stores them; INT4
is packed two per byte along K exactly as GLM-130B's kernels read it:
    byte_k = (q_2k << 4) | (q_2k+1 & 0xF)
Also group-wise scales (one per `group_size` inputs of a row) and asymmetric zero-point INT4
(q in [0, 15], x = (q - z) * s), which GLM-130B found better (Table 10).
"""
from __future__ import annotations

import flax.struct
import jax.numpy as jnp

from jaxpapers.core.errors import ConfigError

BITS = (4, 8)


@flax.struct.dataclass
class QuantizedWeight:
  q: jnp.ndarray                 # int8 [N, K] (8 bit) or uint8 [N, K/2] (4 bit, packed)
  scale: jnp.ndarray             # f32 [N, K / group_size]
  zero: jnp.ndarray | None       # f32 [N, K / group_size] (zero-point INT4) or None
  bits: int = flax.struct.field(pytree_node=False)
  group_size: int = flax.struct.field(pytree_node=False)   # == K for one scale per row
  in_features: int = flax.struct.field(pytree_node=False)
  out_shape: tuple = flax.struct.field(pytree_node=False, default=())   # () means (N,)

  @property
  def out_features(self) -> int:
    return self.scale.shape[-2]

  @property
  def nbytes(self) -> int:
    n = self.q.size * self.q.dtype.itemsize + self.scale.size * self.scale.dtype.itemsize
    return n + (0 if self.zero is None else self.zero.size * self.zero.dtype.itemsize)


def pack_int4(q: jnp.ndarray) -> jnp.ndarray:
  """[N, K] int values in [-8, 15] -> uint8 [N, K/2]: high nibble = even k, low nibble = odd k."""
  if q.shape[-1] % 2:
    raise ConfigError(f"INT4 packing needs an even input dimension, got K={q.shape[-1]}")
  q = q.astype(jnp.int32)
  return (((q[..., 0::2] & 0xF) << 4) | (q[..., 1::2] & 0xF)).astype(jnp.uint8)


def unpack_int4(p: jnp.ndarray, signed: bool = True) -> jnp.ndarray:
  """Inverse of pack_int4: uint8 [N, K/2] -> int8 [N, K] (sign-extended when `signed`)."""
  p = p.astype(jnp.int32)
  hi, lo = (p >> 4) & 0xF, p & 0xF
  if signed:
    hi, lo = jnp.where(hi >= 8, hi - 16, hi), jnp.where(lo >= 8, lo - 16, lo)
  return jnp.stack([hi, lo], axis=-1).reshape(p.shape[:-1] + (2 * p.shape[-1],)).astype(jnp.int8)


def quantize(w: jnp.ndarray, bits: int, group_size: int | None = None,
             zero_point: bool = False) -> QuantizedWeight:
  """Quantizes w [N, K] (rows = output features). The group size must divide K; a group size
  of K (or None) is one scale per row."""
  if bits not in BITS:
    raise ConfigError(f"unsupported bit width {bits}; use one of {BITS}")
  if zero_point and bits != 4:
    raise ConfigError("zero-point quantization is implemented for INT4 only")
  N, K = w.shape
  g = K if group_size is None else group_size
  if g <= 0 or K % g:
    raise ConfigError(f"input dimension K={K} is not divisible by the group size {g}")
  if bits == 4 and (K % 2 or g % 2):
    raise ConfigError(f"INT4 packs two values per byte: K={K} and group size {g} must be even")
  wg = w.astype(jnp.float32).reshape(N, K // g, g)
  zero = None
  if zero_point:
    lo, hi = wg.min(-1), wg.max(-1)
    scale = jnp.maximum(hi - lo, 1e-12) / 15.0
    zero = jnp.round(-lo / scale)
    q = jnp.clip(jnp.round(wg / scale[..., None]) + zero[..., None], 0, 15)
  else:
    qmax = 2 ** (bits - 1) - 1
    scale = jnp.maximum(jnp.abs(wg).max(-1), 1e-12) / qmax
    q = jnp.clip(jnp.round(wg / scale[..., None]), -qmax, qmax)
  q = q.reshape(N, K).astype(jnp.int32)
  q = pack_int4(q) if bits == 4 else q.astype(jnp.int8)
  return QuantizedWeight(q=q, scale=scale, zero=zero, bits=bits, group_size=g, in_features=K)


def int_values(qw: QuantizedWeight) -> jnp.ndarray:
  """The integer codes as int8 [N, K]."""
  if qw.bits == 4:
    return unpack_int4(qw.q, signed=qw.zero is None)
  return qw.q


def dequantize(qw: QuantizedWeight, dtype=jnp.float32) -> jnp.ndarray:
  """W_hat [N, K] = s * q (symmetric) or s * (q - z) (zero-point)."""
  q = int_values(qw).astype(jnp.float32)
  N, K = q.shape
  q = q.reshape(N, K // qw.group_size, qw.group_size)
  if qw.zero is not None:
    q = q - qw.zero[..., None]
  return (q * qw.scale[..., None]).reshape(N, K).astype(dtype)


def qmatmul_reference(x: jnp.ndarray, qw: QuantizedWeight) -> jnp.ndarray:
  """y [M, N] = x [M, K] @ W_hat^T, the function every kernel must equal."""
  return jnp.dot(x.astype(jnp.float32), dequantize(qw).T).astype(x.dtype)
