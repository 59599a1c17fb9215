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
from pallas_kernels.int_quant import QuantizedWeight


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

  s = s_ref[...]
  z = z_ref[...] if zero_point else None

  def dequant(codes, g):   # codes [bn, n] -> FP [bn, n] with one scale (and zero) per g columns
    bn, n = codes.shape
    w = codes.astype(jnp.float32).reshape(bn, n // g, g) if g < n else codes.astype(jnp.float32)[:, None]
    if zero_point:
      w = w - z[..., None]
    return (w * s[..., None]).reshape(bn, n)

  dot_t = lambda a, w: jax.lax.dot_general(a, w, (((1,), (1,)), ((), ())),
                                           preferred_element_type=jnp.float32)
  x = x_ref[...].astype(jnp.float32)
  g = min(group_size, bk)
  if bits == 8:
    o_ref[...] += dot_t(x, dequant(q_ref[...], g))
    return
  # INT4: the high nibbles are the even inputs, the low nibbles the odd ones. x arrives with
  # each K block permuted to [evens | odds] (see qmatmul_pallas), so no interleave is needed.
  p = q_ref[...].astype(jnp.int32)
  hi, lo = (p >> 4) & 0xF, p & 0xF
  if not zero_point:   # signed nibbles
    hi, lo = jnp.where(hi >= 8, hi - 16, hi), jnp.where(lo >= 8, lo - 16, lo)
  half = bk // 2
  o_ref[...] += dot_t(x[:, :half], dequant(hi, g // 2)) + dot_t(x[:, half:], dequant(lo, g // 2))


def _permute_even_odd(x: jnp.ndarray, bk: int) -> jnp.ndarray:
  """Within each K block of x [M, K]: columns reordered to [even ones | odd ones]."""
  M, K = x.shape
  xb = x.reshape(M, K // bk, bk // 2, 2)
  return jnp.concatenate([xb[..., 0], xb[..., 1]], axis=-1).reshape(M, K)


@functools.partial(jax.jit, static_argnames=("blocks", "interpret"))
def qmatmul_pallas(x: jnp.ndarray, qw: QuantizedWeight, blocks: tuple[int, int, int] | None = None,
                   interpret: bool = False) -> jnp.ndarray:
  """x [M, K] (bf16/f32) @ dequant(qw)^T -> [M, N] in x.dtype. M is padded to the row block;
  N and K must divide their blocks (a clear error otherwise). K is reduced over the innermost grid
  axis, which is sequential on TPU and in interpret mode only: on a GPU (H200, jax 0.11.2) INT8
  results with several K blocks were wrong and INT4 did not lower (`lax.slice` unimplemented), so
  `qmatmul` does not route GPUs here (see experiments/bench/pallas_gpu_check.py)."""
  M, K = x.shape
  N = qw.scale.shape[0]
  if K != qw.in_features:
    raise ConfigError(f"activation K={K} does not match the quantized weight's K={qw.in_features}")
  bm, bn, bk = blocks or default_blocks(M, N, K, qw.group_size)
  g = qw.group_size
  if N % bn or K % bk or (bk % g and g % bk) or (qw.bits == 4 and (bk % 2 or min(g, bk) % 2)):
    raise ConfigError(f"blocks (bm={bm}, bn={bn}, bk={bk}) do not tile N={N}, K={K} with group "
                      f"size {g}")
  Mp = -(-M // bm) * bm
  xp = jnp.pad(x, ((0, Mp - M), (0, 0))) if Mp != M else x
  if qw.bits == 4:
    xp = _permute_even_odd(xp, bk)
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
  compiler_params = None
  if not interpret and jax.default_backend() == "gpu":
    from jax.experimental.pallas import triton as pltriton
    compiler_params = pltriton.CompilerParams(num_warps=4, num_stages=3)
  out = pl.pallas_call(
      functools.partial(_kernel, bits=qw.bits, zero_point=qw.zero is not None, group_size=g, bk=bk),
      out_shape=jax.ShapeDtypeStruct((Mp, N), jnp.float32),
      grid=(Mp // bm, N // bn, K // bk),
      in_specs=in_specs,
      out_specs=pl.BlockSpec((bm, bn), lambda i, j, k: (i, j)),
      interpret=interpret,
      compiler_params=compiler_params,
  )(*args)
  return out[:M].astype(x.dtype)


@functools.partial(jax.jit, static_argnames=("tile_rows",))
def qmatmul_xla_tiled(x: jnp.ndarray, qw: QuantizedWeight, tile_rows: int = 256) -> jnp.ndarray:
  """The CPU path: `lax.map` over tiles of `tile_rows` output rows, each dequantized just before
  its dot, so at most one FP32 tile of W exists at a time (never the whole matrix).

  INT4 is not interleaved back to [t, K]: with byte_k = (q_2k << 4) | q_2k+1, the high nibbles
  are the even columns and the low nibbles the odd ones, so y = x[:, 0::2] W_hi^T + x[:, 1::2] W_lo^T.
  """
  N = qw.scale.shape[0]
  K = qw.in_features
  t = next(d for d in range(min(tile_rows, N), 0, -1) if N % d == 0)   # a tile that divides N
  nt = N // t
  q = qw.q.reshape((nt, t) + qw.q.shape[1:])
  s = qw.scale.reshape(nt, t, -1)
  z = None if qw.zero is None else qw.zero.reshape(nt, t, -1)
  xf = x.astype(jnp.float32)
  dot_t = lambda a, w: jax.lax.dot_general(a, w, (((1,), (1,)), ((), ())))   # a @ w.T, no copy

  def dequant(codes, st, zt, g):
    w = codes.astype(jnp.float32).reshape(t, -1, g)
    if zt is not None:
      w = w - zt[..., None]
    return (w * st[..., None]).reshape(t, -1)

  if qw.bits == 8:
    def tile(args):
      qt, st, zt = args
      return dot_t(xf, dequant(qt, st, zt, qw.group_size))
  else:
    x_even, x_odd = xf[:, 0::2], xf[:, 1::2]
    half = qw.group_size // 2

    def tile(args):
      qt, st, zt = args
      p = qt.astype(jnp.int32)
      hi, lo = (p >> 4) & 0xF, p & 0xF
      if zt is None:   # symmetric codes are signed nibbles
        hi, lo = jnp.where(hi >= 8, hi - 16, hi), jnp.where(lo >= 8, lo - 16, lo)
      return dot_t(x_even, dequant(hi, st, zt, half)) + dot_t(x_odd, dequant(lo, st, zt, half))

  out = jax.lax.map(tile, (q, s, z))                  # [nt, M, t]
  return jnp.moveaxis(out, 0, 1).reshape(x.shape[0], N).astype(x.dtype)


DECODE_ROWS = 16   # up to this many rows the CPU uses the FFI kernel (weight-bandwidth bound)


def qmatmul_path(rows: int) -> str:
  """Which implementation `qmatmul` runs for `rows` activation rows on this backend."""
  if jax.default_backend() == "tpu":
    return "pallas"
  if jax.default_backend() == "gpu":
    # the Pallas kernel accumulates K over the grid (TPU semantics): on an H200 (jax 0.11.2) INT8
    # with several K blocks gave wrong products and INT4 did not lower (experiments/bench/
    # pallas_gpu_check.py); until a K-loop kernel replaces it, GPUs take the XLA path
    return "xla_tiled"
  from pallas_kernels import quant_matmul_cpu
  if rows <= DECODE_ROWS and quant_matmul_cpu.available():
    return "cpu_ffi"
  return "xla_tiled"


def qmatmul(x: jnp.ndarray, qw: QuantizedWeight) -> jnp.ndarray:
  """x [M, K] @ dequant(qw)^T on the best path of the backend: the Pallas kernel on TPU, the tiled
  XLA path on GPU (the Pallas kernel is wrong there, see `qmatmul_pallas`); on
  CPU the FFI kernel for decode (M <= 16, the weight-read-bound case) and the tiled XLA path for
  prefill (compute-bound, where XLA's GEMM on one dequantized tile at a time wins)."""
  path = qmatmul_path(x.shape[0])
  if path == "pallas":
    return qmatmul_pallas(x, qw)
  if path == "cpu_ffi":
    from pallas_kernels.quant_matmul_cpu import qmatmul_ffi
    return qmatmul_ffi(x, qw)
  return qmatmul_xla_tiled(x, qw)
