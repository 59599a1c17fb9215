"""W8A16 / W4A16 matmul that dequantizes inside a Pallas kernel (GLM-130B §5: weight-only
quantization, activations stay in floating point). Reference: `int_quant.qmatmul_reference`.

y[M, N] = x[M, K] @ W_hat[N, K]^T with W_hat = dequant(codes, scales[, zeros]). One kernel body,
two launch layouts, because the backends order a grid differently:

* GPU (`layout="gpu"`, Triton): grid (M/bm, N/bn), every program independent; the K reduction is a
  `fori_loop` inside the kernel with an FP32 accumulator in registers (a K grid axis with
  `o_ref +=` races on a GPU: max relative error 0.73-0.98 measured on an H200).
* TPU (`layout="tpu"`, Mosaic): grid (M/bm, N/bn, K/bk) with K the innermost, "arbitrary"
  (sequential) axis and a VMEM FP32 accumulator, written out at the last K step; every block
  obeys the (8, 128) rule: lane dims are multiples of 128 or whole array dims.

Both read INT4 without slicing a loaded value: the high nibbles of byte k are input 2k and the low
nibbles input 2k+1, so the activations come in as two inputs, x[:, 0::2] and x[:, 1::2]. Scales
(and zero points) are laid out per K block, [K/bk, N, groups per block], so a block's scales are
one legal block whatever the group size; inside the kernel a group's scale is broadcast to its
columns by a select over the (few) groups of the block, again without reshaping a loaded value.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from jaxpapers.core.errors import ConfigError
from pallas_kernels.int_quant import QuantizedWeight

LAYOUTS = ("gpu", "tpu")


# TPU: the f32 temporaries of one block (dequantized weights, activations, products) stay within
# this, a share of the 16 MiB of VMEM Mosaic scopes by default
TPU_BLOCK_BYTES = 8 * 2**20


def default_blocks(M: int, N: int, K: int, group_size: int, bits: int,
                   layout: str) -> tuple[int, int, int]:
  """(bm, bn, bk). GPU: powers of two, 16-row blocks and narrow column blocks for decode (more
  programs than SMs), 64 x 128 tiles for prefill. TPU: bn and bk multiples of 128 (256 for INT4,
  whose codes and activation halves are bk/2 wide) or the whole dimension, bn lowered until a
  block's f32 working set (about 4 arrays of bn x bk/2 for INT4) fits TPU_BLOCK_BYTES."""
  fits = lambda b: K % b == 0 and (b % group_size == 0 or group_size % b == 0)
  if layout == "gpu":
    bm = 16 if M <= 16 else 64
    bn = next((b for b in ((32, 16) if M <= 16 else (128, 64, 32, 16)) if N % b == 0), N)
    bk = next((b for b in (256, 128, 64, 32) if fits(b)), K)
    return bm, bn, bk
  bm = 16 if M <= 16 else 128
  step = 256 if bits == 4 else 128
  bk = next((b for b in (2048, 1024, 512, 256, 128) if b % step == 0 and fits(b)), K)
  cols = bk // 2 if bits == 4 else bk
  bn = next((b for b in (512, 256, 128) if N % b == 0 and 4 * 4 * b * cols <= TPU_BLOCK_BYTES),
            next((b for b in (128, 256, 512) if N % b == 0), N))
  return bm, bn, bk


def check_blocks(M: int, N: int, K: int, g: int, bits: int, blocks, layout: str) -> None:
  bm, bn, bk = blocks
  bad = N % bn or K % bk or (bk % g and g % bk) or (bits == 4 and (bk % 2 or min(g, bk) % 2))
  cols = bk // 2 if bits == 4 else bk
  if layout == "gpu" and not bad:   # Triton loads blocks whose sides are powers of two
    pow2 = lambda v: v > 0 and v & (v - 1) == 0
    bad = not (pow2(bm) and pow2(bn) and pow2(cols) and pow2(max(1, min(g, bk) // (2 if bits == 4 else 1))))
  if layout == "tpu" and not bad:   # the (8, 128) rule: lane dims x128 or whole, sublanes x8
    lane = lambda b, whole: b % 128 == 0 or b == whole
    bad = bm % 8 or not lane(bn, N) or not lane(cols, K // (2 if bits == 4 else 1))
  if bad:
    raise ConfigError(f"blocks (bm={bm}, bn={bn}, bk={bk}) do not tile N={N}, K={K} with group "
                      f"size {g} on the {layout} layout")


def per_block_groups(a: jnp.ndarray, K: int, g: int, bk: int) -> jnp.ndarray:
  """Scales or zeros [N, K/g] -> [K/bk, N, max(1, bk/g)]: the groups of each K block."""
  nk = K // bk
  if g >= bk:   # one group spans whole K blocks: repeat its column for each
    return a[:, (jnp.arange(nk) * bk) // g].T[..., None]
  return a.reshape(a.shape[0], nk, bk // g).transpose(1, 0, 2)


def _dequant(codes, scale_of, zero_of, n_groups, gc):
  """codes int32 [bn, c] -> f32 [bn, c]. scale_of(j) / zero_of(j) load group j's [bn, 1] column
  from its ref (group j = code columns [j*gc, (j+1)*gc)); columns are matched to groups by
  comparisons, as neither Triton nor Mosaic lowers every slice or integer division of a value."""
  sc, zc = scale_of(0), None if zero_of is None else zero_of(0)
  if n_groups > 1:
    col = jax.lax.broadcasted_iota(jnp.int32, codes.shape, 1)
    sc = jnp.broadcast_to(sc, codes.shape)
    zc = None if zc is None else jnp.broadcast_to(zc, codes.shape)
    for j in range(1, n_groups):
      later = col >= j * gc
      sc = jnp.where(later, scale_of(j), sc)
      if zc is not None:
        zc = jnp.where(later, zero_of(j), zc)
  w = codes.astype(jnp.float32)
  if zc is not None:
    w = w - zc
  return w * sc


def _block_product(xs, codes, scale_of, zero_of, n_groups, bits, g, dot_dtype):
  """This K block's x @ dequant(codes)^T, FP32 [bm, bn]. xs: [x] (INT8) or [x_even, x_odd]
  (INT4), each [bm, c] with c the code columns of the block; g: the group size in inputs."""
  # FP32 activations dot in full FP32 (a GPU's default f32 dot is TF32: 3e-4 relative error
  # measured on an H200); bf16 activations dot in bf16 with an FP32 accumulator
  precision = jax.lax.Precision.HIGHEST if dot_dtype == jnp.float32 else None
  dot_t = lambda a, w: jax.lax.dot_general(a.astype(dot_dtype), w.astype(dot_dtype),
                                           (((1,), (1,)), ((), ())), precision=precision,
                                           preferred_element_type=jnp.float32)
  codes = codes.astype(jnp.int32)
  if bits == 8:
    return dot_t(xs[0], _dequant(codes, scale_of, zero_of, n_groups, g))
  hi, lo = (codes >> 4) & 0xF, codes & 0xF
  if zero_of is None:   # symmetric codes are signed nibbles
    hi, lo = jnp.where(hi >= 8, hi - 16, hi), jnp.where(lo >= 8, lo - 16, lo)
  return (dot_t(xs[0], _dequant(hi, scale_of, zero_of, n_groups, g // 2))
          + dot_t(xs[1], _dequant(lo, scale_of, zero_of, n_groups, g // 2)))


def _gpu_kernel(*refs, bits, zero_point, g, cb, nk, gpb, dot_dtype):
  n_x = 2 if bits == 4 else 1
  x_refs, q_ref, s_ref = refs[:n_x], refs[n_x], refs[n_x + 1]
  z_ref = refs[n_x + 2] if zero_point else None
  o_ref = refs[-1]
  bk = cb * (2 if bits == 4 else 1)

  def body(k, acc):
    cols = pl.ds(pl.multiple_of(k * cb, cb), cb)
    column = lambda ref: (lambda j: ref[k, :, pl.ds(j, 1)])
    return acc + _block_product([r[:, cols] for r in x_refs], q_ref[:, cols], column(s_ref),
                                column(z_ref) if zero_point else None, gpb, bits, min(g, bk),
                                dot_dtype)

  acc = jax.lax.fori_loop(0, nk, body, jnp.zeros(o_ref.shape, jnp.float32))
  o_ref[...] = acc.astype(o_ref.dtype)


def _tpu_kernel(*refs, bits, zero_point, g, bk, gpb, dot_dtype):
  n_x = 2 if bits == 4 else 1
  x_refs, q_ref, s_ref = refs[:n_x], refs[n_x], refs[n_x + 1]
  z_ref = refs[n_x + 2] if zero_point else None
  o_ref, acc_ref = refs[-2], refs[-1]
  k = pl.program_id(2)

  @pl.when(k == 0)
  def _():
    acc_ref[...] = jnp.zeros_like(acc_ref)

  column = lambda ref: (lambda j: ref[:, pl.ds(j, 1)])
  acc_ref[...] += _block_product([r[...] for r in x_refs], q_ref[...], column(s_ref),
                                 column(z_ref) if zero_point else None, gpb, bits, min(g, bk),
                                 dot_dtype)

  @pl.when(k == pl.num_programs(2) - 1)
  def _():
    o_ref[...] = acc_ref[...].astype(o_ref.dtype)


@functools.partial(jax.jit, static_argnames=("layout", "blocks", "interpret"))
def qmatmul_pallas(x: jnp.ndarray, qw: QuantizedWeight, layout: str | None = None,
                   blocks: tuple[int, int, int] | None = None,
                   interpret: bool = False) -> jnp.ndarray:
  """x [M, K] (bf16/f32) @ dequant(qw)^T -> [M, N] in x.dtype, accumulated in FP32. `layout`:
  "gpu" or "tpu" (default: this backend's; see the module docstring). M is padded to the row
  block; N and K must divide their blocks (a clear error otherwise)."""
  layout = layout or ("tpu" if jax.default_backend() == "tpu" else "gpu")
  if layout not in LAYOUTS:
    raise ConfigError(f"unknown kernel layout {layout!r}; use one of {LAYOUTS}")
  M, K = x.shape
  N, g, bits = qw.scale.shape[0], qw.group_size, qw.bits
  if K != qw.in_features:
    raise ConfigError(f"activation K={K} does not match the quantized weight's K={qw.in_features}")
  blocks = blocks or default_blocks(M, N, K, g, bits, layout)
  check_blocks(M, N, K, g, bits, blocks, layout)
  bm, bn, bk = blocks
  Mp = -(-M // bm) * bm
  xp = jnp.pad(x, ((0, Mp - M), (0, 0))) if Mp != M else x
  xs = [xp[:, 0::2], xp[:, 1::2]] if bits == 4 else [xp]
  cb = bk // 2 if bits == 4 else bk            # code (and activation) columns per K block
  groups = [per_block_groups(qw.scale.astype(jnp.float32), K, g, bk)]
  if qw.zero is not None:
    groups.append(per_block_groups(qw.zero.astype(jnp.float32), K, g, bk))
  gpb = groups[0].shape[2]
  dot_dtype = jnp.float32 if x.dtype == jnp.float32 else x.dtype
  kw = dict(bits=bits, zero_point=qw.zero is not None, g=g, gpb=gpb, dot_dtype=dot_dtype)
  if layout == "gpu":
    compiler_params = None
    if not interpret:
      from jax.experimental.pallas import triton as pltriton
      compiler_params = pltriton.CompilerParams(num_warps=4, num_stages=3)
    out = pl.pallas_call(
        functools.partial(_gpu_kernel, cb=cb, nk=K // bk, **kw),
        out_shape=jax.ShapeDtypeStruct((Mp, N), x.dtype),
        grid=(Mp // bm, N // bn),
        in_specs=[pl.BlockSpec((bm, K // len(xs)), lambda i, j: (i, 0)) for _ in xs]
        + [pl.BlockSpec((bn, qw.q.shape[1]), lambda i, j: (j, 0))]
        + [pl.BlockSpec((K // bk, bn, gpb), lambda i, j: (0, j, 0)) for _ in groups],
        out_specs=pl.BlockSpec((bm, bn), lambda i, j: (i, j)),
        interpret=interpret, compiler_params=compiler_params,
    )(*xs, qw.q, *groups)
    return out[:M]
  from jax.experimental.pallas import tpu as pltpu
  out = pl.pallas_call(
      functools.partial(_tpu_kernel, bk=bk, **kw),
      out_shape=jax.ShapeDtypeStruct((Mp, N), x.dtype),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=0, grid=(Mp // bm, N // bn, K // bk),
          in_specs=[pl.BlockSpec((bm, cb), lambda i, j, k: (i, k)) for _ in xs]
          + [pl.BlockSpec((bn, cb), lambda i, j, k: (j, k))]
          + [pl.BlockSpec((None, bn, gpb), lambda i, j, k: (k, j, 0)) for _ in groups],
          out_specs=pl.BlockSpec((bm, bn), lambda i, j, k: (i, j)),
          scratch_shapes=[pltpu.VMEM((bm, bn), jnp.float32)]),
      compiler_params=pltpu.CompilerParams(
          dimension_semantics=("parallel", "parallel", "arbitrary")),
      interpret=interpret,
  )(*xs, qw.q, *groups)
  return out[:M]


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


DECODE_ROWS = 16   # up to this many rows the CPU uses the FFI kernels (weight-bandwidth bound)


def qmatmul_path(rows: int) -> str:
  """Which implementation `qmatmul` runs for `rows` activation rows on this backend."""
  if jax.default_backend() in ("tpu", "gpu"):
    return "pallas_" + jax.default_backend()
  from pallas_kernels import quant_matmul_cpu
  if rows <= DECODE_ROWS and quant_matmul_cpu.available():
    return "cpu_ffi"
  return "xla_tiled"


def qmatmul(x: jnp.ndarray, qw: QuantizedWeight) -> jnp.ndarray:
  """x [M, K] @ dequant(qw)^T on the best path of the backend: the Pallas kernel in its GPU or
  TPU layout; on CPU the FFI kernel for decode (M <= 16, the weight-read-bound case) and the
  tiled XLA path for prefill (compute-bound, where XLA's GEMM on one dequantized tile at a time
  wins)."""
  path = qmatmul_path(x.shape[0])
  if path.startswith("pallas_"):
    return qmatmul_pallas(x, qw, layout=path[len("pallas_"):])
  if path == "cpu_ffi":
    from pallas_kernels.quant_matmul_cpu import qmatmul_ffi
    return qmatmul_ffi(x, qw)
  return qmatmul_xla_tiled(x, qw)


def f32_matmul_path(rows: int, x_dtype, w_dtype) -> str:
  """Which implementation `f32_matmul` runs for `rows` activation rows (FP32 x and w only)."""
  if (jax.default_backend() != "cpu" or rows > DECODE_ROWS or x_dtype != jnp.float32
      or w_dtype != jnp.float32):
    return "xla"
  from pallas_kernels import quant_matmul_cpu
  return "cpu_ffi" if quant_matmul_cpu.available() else "xla"


def f32_matmul(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
  """x [M, K] @ w [K, N] for decoding: on the CPU, up to DECODE_ROWS rows of FP32, the FFI kernel
  beside the quantized one (the same threads, the weight read once in row order), so that FP32
  and INT8/INT4 decode compare like for like; XLA's dot otherwise. No gradient: decoding only."""
  if f32_matmul_path(x.shape[0], x.dtype, w.dtype) == "cpu_ffi":
    from pallas_kernels.quant_matmul_cpu import f32_matmul_ffi
    return f32_matmul_ffi(x, w)
  return x @ w
