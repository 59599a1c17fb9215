"""Post-training weight-only quantization of any jaxpapers model (GLM-130B §5, App. B.8).

A model marks its dense kernels: an `nnx.Param` with `dense_in` metadata (see `nn.param.param`)
contracts its first `dense_in` non-"layers" axes with the input's last ones, and every
`nnx.Linear` is a dense layer. `quantize(model, scheme)` replaces each of them, one layer of a
stacked kernel at a time, by a `QuantizedParam` / `QuantizedDense` holding the integer codes
(`pallas_kernels.int_quant.QuantizedWeight`); embeddings, biases and norms stay in floating
point, as in GLM-130B. `dense(x, w, n_in)` runs either kind of kernel, so a model calls it once
and serves both. Quantized weights save and load through orbax with INT4 packed two per byte.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import shutil
from pathlib import Path

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxpapers.core.errors import CheckpointError, ConfigError
from pallas_kernels.int_quant import QuantizedWeight, quantize as quantize_matrix
from pallas_kernels.quant_matmul import f32_matmul, qmatmul


@dataclasses.dataclass(frozen=True)
class Scheme:
  bits: int
  group_size: int | None = None   # None: one scale per output row
  zero_point: bool = False


SCHEMES = {
    "int8": Scheme(8),                                # GLM-130B Table 10: absmax per row
    "int4_absmax": Scheme(4),                         # GLM-130B §5: the released INT4
    "int4_zeropoint": Scheme(4, zero_point=True),     # Table 10: asymmetric INT4
    "int4_group": Scheme(4, group_size=128),          # group-wise scales
}


def get_scheme(name: str, group_size: int | None = None) -> Scheme:
  """The named scheme; `group_size` overrides the group of `int4_group`."""
  if name not in SCHEMES:
    raise ConfigError(f"unknown quantization scheme {name!r}; use one of {', '.join(SCHEMES)}")
  s = SCHEMES[name]
  if group_size is not None and s.group_size is not None:
    if not isinstance(group_size, int) or group_size <= 0 or group_size % 2:
      raise ConfigError(f"group size must be a positive even int, got {group_size!r}")
    s = dataclasses.replace(s, group_size=group_size)
  return s


class QuantizedParam(nnx.Variable):
  """A dense kernel held as a `QuantizedWeight` (inference only: never an optimizer target)."""


@flax.struct.dataclass
class DecodeKernel:
  """An FP kernel [in..., out...] held for decoding (`GLM.decode_weights`): `dense` gives it, like
  a quantized kernel, to the CPU decode kernel when the input has few rows
  (`pallas_kernels.quant_matmul.f32_matmul`), so FP32 and INT8/INT4 decode run like for like.
  Decoding only: the kernel has no gradient."""
  w: jnp.ndarray


def plain_kernels(tree):
  """`tree` with every `DecodeKernel` replaced by the array it holds (the same buffers): decoding
  through XLA's dot instead of the CPU decode kernel."""
  is_kernel = lambda v: isinstance(v, DecodeKernel)
  return jax.tree.map(lambda v: v.w if is_kernel(v) else v, tree, is_leaf=is_kernel)


def dense(x: jnp.ndarray, w, n_in: int = 1) -> jnp.ndarray:
  """Contracts the last `n_in` axes of x with the first `n_in` axes of the kernel w, which is
  an FP array [in..., out...], a `DecodeKernel` holding one, or a `QuantizedWeight` (then
  x @ dequant(w)^T without a dequantized copy of w: `pallas_kernels.quant_matmul.qmatmul`)."""
  if isinstance(w, DecodeKernel):
    lead, out = x.shape[:x.ndim - n_in], w.w.shape[n_in:]
    if x.shape[x.ndim - n_in:] != w.w.shape[:n_in]:
      raise ConfigError(f"input features {x.shape[x.ndim - n_in:]} do not match the kernel's "
                        f"{w.w.shape[:n_in]}")
    k = math.prod(w.w.shape[:n_in])
    return f32_matmul(x.reshape(-1, k), w.w.reshape(k, -1)).reshape(lead + out)
  if not isinstance(w, QuantizedWeight):
    return jnp.tensordot(x, w, n_in)
  lead, k = x.shape[:x.ndim - n_in], math.prod(x.shape[x.ndim - n_in:])
  if k != w.in_features:
    raise ConfigError(f"input features {x.shape[x.ndim - n_in:]} do not match the quantized "
                      f"kernel's {w.in_features}")
  y = qmatmul(x.reshape(-1, k), w)
  return y.reshape(lead + (tuple(w.out_shape) or (w.out_features,)))


@functools.partial(jax.jit, static_argnames=("K", "N", "bits", "group_size", "zero_point"))
def _quantize_layer(wl, K, N, bits, group_size, zero_point):
  return quantize_matrix(wl.reshape(K, N).T, bits, group_size, zero_point)


def quantize_kernel(w, n_in: int, n_batch: int, scheme: Scheme, on_step=None) -> QuantizedWeight:
  """w [batch..., in..., out...] -> QuantizedWeight with codes [batch..., N, K'] where K is the
  product of the input axes and N of the output axes; quantized one batch index (one layer) at a
  time so only one layer's transposed FP copy exists at once."""
  shape = tuple(w.shape)
  bshape, ishape, oshape = shape[:n_batch], shape[n_batch:n_batch + n_in], shape[n_batch + n_in:]
  K, N = math.prod(ishape), math.prod(oshape)
  g = None if scheme.group_size is None or scheme.group_size >= K else scheme.group_size
  one = functools.partial(_quantize_layer, K=K, N=N, bits=scheme.bits, group_size=g,
                          zero_point=scheme.zero_point)
  if isinstance(w, jax.ShapeDtypeStruct):   # an abstract model: shapes only
    p = jax.eval_shape(one, jax.ShapeDtypeStruct(shape[n_batch:], w.dtype))
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(bshape + a.shape, a.dtype),
                        dataclasses.replace(p, out_shape=oshape))
  parts = []
  for idx in (np.ndindex(*bshape) if bshape else [()]):
    parts.append(jax.block_until_ready(one(w[idx])))
    if on_step is not None:
      on_step()
  stack = lambda xs: jnp.stack(xs).reshape(bshape + xs[0].shape) if bshape else xs[0]
  first = parts[0]
  return QuantizedWeight(
      q=stack([p.q for p in parts]), scale=stack([p.scale for p in parts]),
      zero=None if first.zero is None else stack([p.zero for p in parts]),
      bits=first.bits, group_size=first.group_size, in_features=K, out_shape=oshape)


def _kernel_layout(var: nnx.Variable) -> tuple[int, int]:
  """(n_in, n_batch) of a Param marked with `dense_in`; leading "layers" axes are batch axes."""
  axes = getattr(var, "axes", None) or ()
  n_batch = 0
  while n_batch < len(axes) and axes[n_batch] == "layers":
    n_batch += 1
  return int(var.dense_in), n_batch


class QuantizedDense(nnx.Module):
  """The quantized form of `nnx.Linear`: y = x @ dequant(W)^T + b."""

  def __init__(self, kernel: QuantizedWeight, bias: jnp.ndarray | None):
    self.kernel = QuantizedParam(kernel)
    self.bias = None if bias is None else nnx.Param(bias)

  @classmethod
  def from_linear(cls, layer: nnx.Linear, scheme: Scheme) -> "QuantizedDense":
    bias = None if layer.bias is None else layer.bias.get_value()
    return cls(quantize_kernel(layer.kernel.get_value(), 1, 0, scheme), bias)

  def __call__(self, x):
    y = dense(x, self.kernel.get_value(), 1)
    return y if self.bias is None else y + self.bias.get_value()


def _children(module: nnx.Module):
  for name, value in list(vars(module).items()):
    if isinstance(value, (nnx.Module, nnx.Variable)):
      yield name, value
    elif isinstance(value, (list, tuple)):
      for i, v in enumerate(value):
        if isinstance(v, (nnx.Module, nnx.Variable)):
          yield (name, i), v


def _set(module, key, value):
  if isinstance(key, tuple):
    seq = getattr(module, key[0])
    if isinstance(seq, tuple):
      raise ConfigError(f"cannot quantize inside the tuple attribute {key[0]!r}; use a list")
    seq[key[1]] = value
  else:
    setattr(module, key, value)


def quantize(model: nnx.Module, scheme: str | Scheme, on_step=None) -> nnx.Module:
  """Replaces, in place, every dense kernel of `model` by its quantized form and returns the
  model. Kernels are converted one at a time (stacked ones one layer at a time) and the FP
  array is dropped as soon as its codes exist, so peak host memory is about the FP model plus
  one layer. `on_step()` is called after each layer (e.g. to sample memory)."""
  s = get_scheme(scheme) if isinstance(scheme, str) else scheme
  if any(isinstance(v, QuantizedParam) for _, v in nnx.iter_graph(model)):
    raise ConfigError("the model is already quantized; quantize the full-precision model")
  found = 0

  def visit(module):
    nonlocal found
    for key, child in _children(module):
      if isinstance(child, nnx.Linear):
        _set(module, key, QuantizedDense.from_linear(child, s))
        if on_step is not None:
          on_step()
        found += 1
      elif isinstance(child, nnx.Module):
        visit(child)
      elif isinstance(child, nnx.Param) and "dense_in" in child.get_metadata():
        n_in, n_batch = _kernel_layout(child)
        meta = {k: v for k, v in child.get_metadata().items() if k in ("axes", "dense_in")}
        qw = quantize_kernel(child.get_value(), n_in, n_batch, s, on_step)
        _set(module, key, QuantizedParam(qw, **meta))
        found += 1

  visit(model)
  if not found:
    raise ConfigError(f"{type(model).__name__} has no dense kernels to quantize (no nnx.Linear and "
                      "no Param with `dense_in` metadata)")
  return model


def quantization_of(model: nnx.Module) -> dict | None:
  """The scheme of a quantized model ({bits, group_size, zero_point}), None for an FP model."""
  for _, v in nnx.iter_graph(model):
    if isinstance(v, QuantizedParam):
      qw = v.get_value()
      return {"bits": qw.bits, "zero_point": qw.zero is not None,
              "group_size": qw.group_size}
  return None


def live_array_bytes() -> int:
  """Bytes of every live jax array of this process."""
  return sum(a.nbytes for a in jax.live_arrays())


def weight_bytes(model: nnx.Module, kernels_only: bool = False) -> int:
  """Bytes of the model's weights (codes, scales and zeros of quantized kernels included)."""
  total = 0
  for _, v in nnx.iter_graph(model):
    if isinstance(v, QuantizedParam):
      total += v.get_value().nbytes
    elif isinstance(v, nnx.Param) and (not kernels_only or "dense_in" in v.get_metadata()):
      x = v.get_value()
      total += x.size * x.dtype.itemsize
  return total


# --- checkpoints ---------------------------------------------------------------------------

_MARK = "jaxpapers-quantized-weights"


def save_quantized(directory: str | Path, model: nnx.Module, scheme: str | Scheme,
                   extra: dict | None = None, max_inflight_bytes: int | None = None) -> Path:
  """Writes the quantized model's weights (INT4 codes packed, as held) with orbax, plus a JSON
  description; written aside and renamed, so an existing good copy is never half-overwritten.
  `max_inflight_bytes` (> the largest array) bounds the bytes orbax serializes at once (host
  memory of the write); the files are the same either way."""
  import orbax.checkpoint as ocp
  if quantization_of(model) is None:
    raise CheckpointError("save_quantized needs a quantized model; call quantize(model, scheme) first")
  directory = Path(directory).absolute()
  layout = {}
  for path, v in nnx.iter_graph(model):
    if isinstance(v, QuantizedParam):
      qw = v.get_value()
      layout["/".join(map(str, path))] = {"bits": qw.bits, "group_size": qw.group_size,
                                          "in_features": qw.in_features,
                                          "out_shape": list(qw.out_shape)}
  spec = get_scheme(scheme) if isinstance(scheme, str) else scheme
  name = scheme if isinstance(scheme, str) else next(
      (k for k, v in SCHEMES.items() if v.bits == spec.bits and v.zero_point == spec.zero_point
       and (v.group_size is None) == (spec.group_size is None)), "custom")
  meta = {"format": _MARK, "scheme": name, "spec": dataclasses.asdict(spec), "kernels": layout,
          **(extra or {})}
  _, state = nnx.split(model)
  return save_aside(directory, ocp.args.Composite(
      state=ocp.args.StandardSave(nnx.to_pure_dict(state)), meta=ocp.args.JsonSave(meta)),
      max_inflight_bytes)


def save_aside(directory: Path, items, max_inflight_bytes: int | None = None) -> Path:
  """Writes the orbax composite `items` to directory.tmp, then renames it to `directory` (an
  existing good copy is replaced only once the new one is complete). `max_inflight_bytes` bounds
  what the "state" item serializes at once (orbax's save_concurrent_gb)."""
  import orbax.checkpoint as ocp
  tmp = directory.with_name(directory.name + ".tmp")
  if tmp.exists():
    shutil.rmtree(tmp)
  handlers = {} if max_inflight_bytes is None else {"state": ocp.StandardCheckpointHandler(
      save_concurrent_gb=max_inflight_bytes / 1e9), "meta": ocp.JsonCheckpointHandler()}
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler(**handlers)) as ckpt:
    ckpt.save(tmp, items)
  if directory.exists():
    old = directory.with_name(directory.name + ".old")
    directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old)
  else:
    tmp.rename(directory)
  return directory


def _read_meta(directory: Path) -> dict | None:
  f = directory / "meta" / "metadata"
  if not f.exists():
    return None
  try:
    return json.loads(f.read_text())
  except ValueError:
    return None


def check_not_quantized_checkpoint(directory: str | Path) -> None:
  """Raises a clear CheckpointError when `directory` holds quantized weights (so an FP model
  does not try to load them)."""
  meta = _read_meta(Path(directory))
  if meta and meta.get("format") == _MARK:
    raise CheckpointError(
        f"{directory} holds {meta['scheme']} quantized weights; a full-precision model cannot load "
        "them: use jaxpapers.nn.quantized.load_quantized(directory, model)")


def _check_stored_shapes(state_dir: Path, target) -> None:
  """CheckpointError naming the first array whose stored name or shape differs from `target`'s,
  read from the checkpoint's metadata before any restore starts (a failing restore leaves orbax's
  asynchronous reads with unretrieved exceptions behind)."""
  import orbax.checkpoint as ocp
  try:
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as ckpt:
      meta = ckpt.metadata(state_dir)
  except (OSError, ValueError, KeyError) as e:
    raise CheckpointError(f"the quantized checkpoint at {state_dir.parent} is unreadable "
                          f"({str(e).splitlines()[0][:160] if str(e) else type(e).__name__})") from None
  has_shape = lambda x: hasattr(x, "shape")
  name = lambda path: "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                              for k in path)   # dict keys and attributes alike
  flat = lambda tree: {name(k): tuple(v.shape) for k, v in
                       jax.tree_util.tree_flatten_with_path(tree, is_leaf=has_shape)[0]}
  stored, wanted = flat(getattr(meta, "item_metadata", meta)), flat(target)
  for leaf in sorted(set(stored) | set(wanted)):
    if stored.get(leaf) != wanted.get(leaf):
      raise CheckpointError(f"the quantized weights in {state_dir.parent} do not fit this model "
                            f"({leaf}: stored {stored.get(leaf, 'nothing')}, the model needs "
                            f"{wanted.get(leaf, 'nothing')})")


def load_quantized(directory: str | Path, model: nnx.Module) -> nnx.Module:
  """The full-precision `model` (e.g. freshly built from its config) turned into the quantized
  model saved in `directory`: its kernels are replaced by the saved codes (no quantization is
  recomputed)."""
  import orbax.checkpoint as ocp
  directory = Path(directory).absolute()
  if not directory.exists():
    raise CheckpointError(f"no quantized checkpoint at {directory}")
  meta = _read_meta(directory)
  if meta is None or meta.get("format") != _MARK:
    raise CheckpointError(f"{directory} does not hold quantized weights (a full-precision or "
                          "training checkpoint?); load it with load_params, then quantize(model, "
                          "scheme)")
  if quantization_of(model) is not None:
    raise CheckpointError("load_quantized needs the full-precision model built from the config, "
                          "not an already quantized one")
  scheme = Scheme(**meta["spec"])
  graphdef, state = nnx.split(model)
  abstract = quantize(nnx.merge(graphdef, jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)), scheme)
  _, target = nnx.split(abstract)
  target = nnx.to_pure_dict(target)
  _check_stored_shapes(directory / "state", target)
  try:
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckpt:
      out = ckpt.restore(directory, ocp.args.Composite(state=ocp.args.StandardRestore(target)))
  except (ValueError, KeyError, TypeError) as e:
    raise CheckpointError(f"the quantized weights in {directory} do not fit this model "
                          f"({str(e).splitlines()[0][:160]})") from None
  graphdef, state = nnx.split(abstract)
  nnx.replace_by_pure_dict(state, out["state"])
  return nnx.merge(graphdef, state)

