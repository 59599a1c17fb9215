"""W8A16 / W4A16 matmul that dequantizes inside a Pallas kernel (GLM-130B §5: weight-only
quantization, activations stay in floating point). Reference: `int_quant.qmatmul_reference`.

y[M, N] = x[M, K] @ W_hat[N, K]^T, grid (M/bm, N/bn, K/bk); each step loads one int8 (or packed
int4) weight tile and its scales, dequantizes it in registers and accumulates in FP32. The K axis
is the innermost grid axis, so the output tile stays resident while K is reduced.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from jaxpapers.core.errors import ConfigError
from pallas_kernels.int_quant import QuantizedWeight, unpack_int4


def default_blocks(M: int, N: int, K: int, group_size: int) -> tuple[int, int, int]:
  """Decode (M <= 16) uses one short row block; prefill 128-row blocks."""
  bm = 16 if M <= 16 else 128
  bn = next(b for b in (256, 128, 64, 32, 16, 8, 4, 2, 1) if N % b == 0)
  bk = next(b for b in (512, 256, 128, 64, 32, 16, 8, 4, 2) if K % b == 0
            and (b % group_size == 0 or group_size % b == 0))
  return bm, bn, bk


def _kernel(*refs, bits, zero_point, group_size, bk):
  if zero_point:
    x_ref, q_ref, s_ref, z_ref, o_ref = refs
  else:
    x_ref, q_ref, s_ref, o_ref = refs

  @pl.when(pl.program_id(2) == 0)
  def _():
    o_ref[...] = jnp.zeros_like(o_ref)

  q = q_ref[...]
  q = unpack_int4(q, signed=not zero_point) if bits == 4 else q
  bn = q.shape[0]
  g = min(group_size, bk)
  q = q.astype(jnp.float32).reshape(bn, bk // g, g)
  s = s_ref[...]
  if zero_point:
    q = q - z_ref[...][..., None]
  w = (q * s[..., None]).reshape(bn, bk)
  x = x_ref[...].astype(jnp.float32)
  o_ref[...] += jax.lax.dot_general(x, w, (((1,), (1,)), ((), ())),
                                    preferred_element_type=jnp.float32)


@functools.partial(jax.jit, static_argnames=("blocks", "interpret"))
def qmatmul_pallas(x: jnp.ndarray, qw: QuantizedWeight, blocks: tuple[int, int, int] | None = None,
                   interpret: bool = False) -> jnp.ndarray:
  """x [M, K] (bf16/f32) @ dequant(qw)^T -> [M, N] in x.dtype. M is padded to the row block;
  N and K must divide their blocks (a clear error otherwise)."""
  M, K = x.shape
  N = qw.scale.shape[0]
  if K != qw.in_features:
    raise ConfigError(f"activation K={K} does not match the quantized weight's K={qw.in_features}")
  bm, bn, bk = blocks or default_blocks(M, N, K, qw.group_size)
  g = qw.group_size
  if N % bn or K % bk or (bk % g and g % bk) or (qw.bits == 4 and bk % 2):
    raise ConfigError(f"blocks (bm={bm}, bn={bn}, bk={bk}) do not tile N={N}, K={K} with group "
                      f"size {g}")
  Mp = -(-M // bm) * bm
  xp = jnp.pad(x, ((0, Mp - M), (0, 0))) if Mp != M else x
  qk = bk // 2 if qw.bits == 4 else bk
  if g >= bk:   # one scale column covers several K blocks
    s_spec = pl.BlockSpec((bn, 1), lambda i, j, k: (j, (k * bk) // g))
  else:
    s_spec = pl.BlockSpec((bn, bk // g), lambda i, j, k: (j, k))
  in_specs = [pl.BlockSpec((bm, bk), lambda i, j, k: (i, k)),
              pl.BlockSpec((bn, qk), lambda i, j, k: (j, k)), s_spec]
  args = [xp, qw.q, qw.scale]
  if qw.zero is not None:
    in_specs.append(s_spec)
    args.append(qw.zero)
  out = pl.pallas_call(
      functools.partial(_kernel, bits=qw.bits, zero_point=qw.zero is not None, group_size=g, bk=bk),
      out_shape=jax.ShapeDtypeStruct((Mp, N), jnp.float32),
      grid=(Mp // bm, N // bn, K // bk),
      in_specs=in_specs,
      out_specs=pl.BlockSpec((bm, bn), lambda i, j, k: (i, j)),
      interpret=interpret,
  )(*args)
  return out[:M].astype(x.dtype)
