"""Streaming post-training quantization: an FP checkpoint on disk becomes a quantized checkpoint
one layer at a time, never holding the FP model (GLM-130B §5 quantizes a 130B model whose FP16
weights alone need 260 GB; here the host holds the quantized model plus about one FP layer).

Sources (`src`):
  - a training checkpoint: a step directory written by `core.checkpoint.Checkpointer` (item
    "state" = TrainState; only its `params` arrays are read, never `opt_state`), the checkpoints
    directory holding such steps (the newest is used), or a workdir with `checkpoints/`;
  - an FP params checkpoint written by `save_fp_params`: an orbax composite whose item "params" is
    `nnx.to_pure_dict` of the model's `nnx.Param`s and whose item "meta" is
    {"format": "jaxpapers-fp-params", ...}.
Each stored array is opened alone with tensorstore (orbax's zarr arrays inside its OCDBT key-value
store) and a stacked kernel [L, ...] is read one chunk along the layer axis at a time. Both writers
store "layers"-leading arrays one layer per chunk (`core.checkpoint.layer_chunked_save_args`), so
one read is one layer; an older checkpoint whose chunk spans k layers is read k layers at a time
(the stats say so). Each layer is quantized by `nn.quantized.quantize_kernel`, the function
`quantize` uses, so the codes are bitwise those of `quantize(model loaded in full, scheme)`; the
result is written by `save_quantized`, so `load_quantized(dst, model)` reads it.

Command line (a child process, e.g. to measure its peak RSS):
  python -m jaxpapers.nn.quantize_stream --src SRC --dst DST --scheme int4_absmax \\
      --model package.module:factory --model-args '{"...": ...}' [--report out.json] [--baseline]
where factory(**model_args) returns the (abstract or concrete) FP model.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxpapers.core.checkpoint import layer_chunked_save_args
from jaxpapers.core.errors import CheckpointError, ConfigError, JaxpapersError
from jaxpapers.core.memory import return_freed_memory_to_os, trim_heap
from jaxpapers.nn import quantized as Q

FP_MARK = "jaxpapers-fp-params"


# --- the FP params format -------------------------------------------------------------------

def save_fp_params(directory: str | Path, model: nnx.Module, extra: dict | None = None) -> Path:
  """Writes the model's `nnx.Param`s (as `nnx.to_pure_dict`) with orbax, stacked arrays one layer
  per chunk, plus item "meta" {"format": "jaxpapers-fp-params", "params", "bytes", **extra};
  written aside and renamed like `save_quantized`. `quantize_checkpoint` reads it."""
  import orbax.checkpoint as ocp
  if Q.quantization_of(model) is not None:
    raise CheckpointError("save_fp_params needs a full-precision model, this one is quantized")
  state = nnx.state(model, nnx.Param)
  leaves = jax.tree.leaves(state)
  meta = {"format": FP_MARK, "params": int(sum(x.size for x in leaves)),
          "bytes": int(sum(x.size * x.dtype.itemsize for x in leaves)), **(extra or {})}
  save_args = nnx.to_pure_dict(layer_chunked_save_args(state))
  return Q.save_aside(Path(directory).absolute(), ocp.args.Composite(
      params=ocp.args.StandardSave(nnx.to_pure_dict(state), save_args=save_args),
      meta=ocp.args.JsonSave(meta)))


# --- reading one array, one chunk of layers at a time ---------------------------------------

def _first_line(e: Exception) -> str:
  line = (str(e).splitlines() or [type(e).__name__])[0]
  return line.split(" [tensorstore_spec=")[0][:240]


def _read_json(path: Path):
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return None


class _Source:
  """One orbax item directory holding FP params: `names` maps a model Param path (tuple of str)
  to the stored array's name; `kind` is "training" or "fp_params"."""

  def __init__(self, src: str | Path):
    p = Path(src).absolute()
    if not p.exists():
      raise CheckpointError(f"no checkpoint at {p}")
    p = self._step_dir(p)
    meta = _read_json(p / "meta" / "metadata") if (p / "meta").is_dir() else None
    if isinstance(meta, dict) and meta.get("format") == Q._MARK:
      raise CheckpointError(f"{p} already holds {meta.get('scheme')} quantized weights; quantize "
                            "from the full-precision checkpoint")
    if (p / "state").is_dir():
      self.kind, self.item, prefix, suffix = "training", p / "state", ("params",), ("value",)
    elif isinstance(meta, dict) and meta.get("format") == FP_MARK and (p / "params").is_dir():
      self.kind, self.item, prefix, suffix = "fp_params", p / "params", (), ()
    else:
      raise CheckpointError(
          f"{p} holds no FP checkpoint (a Checkpointer step with a 'state' item, a checkpoints "
          "directory of such steps, or the output of save_fp_params)")
    self.path, self.step = p, int(p.name) if self.kind == "training" and p.name.isdigit() else None
    md = _read_json(self.item / "_METADATA")
    if not isinstance(md, dict) or not isinstance(md.get("tree_metadata"), dict):
      raise CheckpointError(f"the checkpoint at {p} is corrupt: {self.item.name}/_METADATA is "
                            "missing or unreadable")
    self.use_ocdbt = bool(md.get("use_ocdbt", True))
    self.use_zarr3 = bool(md.get("use_zarr3", False))
    names = {}
    for entry in md["tree_metadata"].values():
      keys = tuple(str(k["key"]) for k in entry.get("key_metadata", ()))
      if keys[:len(prefix)] == prefix:
        path = keys[len(prefix):]
        if suffix and path[-len(suffix):] == suffix:
          path = path[:-len(suffix)]
        names[path] = ".".join(keys)
    self.names = names
    import tensorstore as ts
    self._ts = ts
    self._context = ts.Context({"cache_pool": {"total_bytes_limit": 0}})

  @staticmethod
  def _step_dir(p: Path) -> Path:
    """A workdir or a checkpoints directory -> its newest step directory."""
    if (p / "checkpoints").is_dir() and not (p / "state").is_dir() and not (p / "params").is_dir():
      p = p / "checkpoints"
    steps = sorted((int(d.name) for d in p.iterdir()
                    if d.name.isdigit() and (d / "state").is_dir()), reverse=True)
    if steps and not (p / "state").is_dir() and not (p / "params").is_dir():
      return p / str(steps[0])
    return p

  def open(self, path: tuple):
    name = self.names[path]
    if self.use_ocdbt:
      kvstore = {"driver": "ocdbt", "base": f"file://{self.item}/", "path": name}
    else:
      kvstore = {"driver": "file", "path": f"{self.item}/{name}/"}
    spec = {"driver": "zarr3" if self.use_zarr3 else "zarr", "kvstore": kvstore}
    try:
      return self._ts.open(spec, open=True, read=True, context=self._context).result()
    except Exception as e:  # tensorstore raises ValueError / its own errors on a damaged store
      raise CheckpointError(f"the checkpoint at {self.path} is corrupt: cannot open {name} "
                            f"({_first_line(e)})") from None


def _read(store, index) -> np.ndarray:
  """store[index] read from disk (tests wrap this to count what is read)."""
  return np.asarray(store[index].read().result())


def _read_checked(src: _Source, store, index, name: str, stats: dict) -> np.ndarray:
  try:
    x = _read(store, index)
  except Exception as e:
    raise CheckpointError(f"the checkpoint at {src.path} is corrupt: cannot read {name} "
                          f"({_first_line(e)})") from None
  stats["bytes_read"] += x.nbytes
  stats["max_read_bytes"] = max(stats["max_read_bytes"], x.nbytes)
  stats["reads"] += 1
  return x


def _layers_per_chunk(store) -> int:
  chunk = store.chunk_layout.read_chunk.shape
  return int(chunk[0]) if chunk and chunk[0] else int(store.shape[0])


def _stream_kernel(src, store, name, n_in, n_batch, scheme, dtype, on_step, stats):
  """The QuantizedWeight of the stored kernel, quantized one layer (batch index) at a time;
  only the codes and scales are kept."""
  shape = tuple(store.shape)
  if not n_batch:
    w = _read_checked(src, store, (), name, stats).astype(dtype, copy=False)
    qw = Q.quantize_kernel(w, n_in, 0, scheme)
    del w
    if on_step is not None:
      on_step()
    return qw
  bshape = shape[:n_batch]
  one = Q.quantize_kernel(jax.ShapeDtypeStruct(shape[n_batch:], dtype), n_in, 0, scheme)
  fields = [k for k in ("q", "scale", "zero") if getattr(one, k) is not None]
  bufs = {k: jnp.zeros(bshape + getattr(one, k).shape, getattr(one, k).dtype) for k in fields}
  step = _layers_per_chunk(store)
  stats["layers_per_read"] = max(stats["layers_per_read"], step)
  for l0 in range(0, bshape[0], step):
    block = _read_checked(src, store, slice(l0, min(l0 + step, bshape[0])), name, stats)
    block = block.astype(dtype, copy=False)
    for idx in np.ndindex(*block.shape[:n_batch]):
      part = Q.quantize_kernel(block[idx], n_in, 0, scheme)
      at = tuple(np.int32(i) for i in (l0 + idx[0],) + idx[1:])
      for k in fields:
        bufs[k] = _put(bufs[k], getattr(part, k), at)
      jax.block_until_ready(bufs)
      del part
      if on_step is not None:
        on_step()
    del block
  return Q.QuantizedWeight(q=bufs["q"], scale=bufs["scale"], zero=bufs.get("zero"),
                           bits=one.bits, group_size=one.group_size, in_features=one.in_features,
                           out_shape=one.out_shape)


def _release_pass_memory() -> None:
  """Before the write: drops the pass's compiled kernels and hands freed heap pages back to the
  OS (glibc malloc_trim), so the write's buffers do not stack on top of them (measured on the
  48-layer GLM of glm.quantize_memory: peak RSS 843 -> 784 MB in process)."""
  Q._quantize_layer.clear_cache()
  _put.clear_cache()
  trim_heap()


@functools.partial(jax.jit, donate_argnums=0)
def _put(buf, part, at):
  """buf[at] = part, in place (buf is donated): the stacked codes are filled layer by layer
  without a second copy of them."""
  return jax.lax.dynamic_update_slice(buf, part[(None,) * len(at)], at + (0,) * part.ndim)


def _fp_layouts(model: nnx.Module) -> dict:
  """{Param path: (n_in, n_batch)} of the kernels `quantize` converts (nnx.Linear kernels and
  Params marked `dense_in`)."""
  out = {}
  for path, node in nnx.iter_graph(model):
    if isinstance(node, nnx.Linear):
      out[tuple(map(str, path)) + ("kernel",)] = (1, 0)
    elif isinstance(node, nnx.Param) and "dense_in" in node.get_metadata():
      out[tuple(map(str, path))] = Q._kernel_layout(node)
  return out


def _check_fits(src: _Source, params: dict, stores: dict) -> None:
  model_keys, ckpt_keys = set(params), set(src.names)
  problems = [f"it has no {'/'.join(k)!s}" for k in sorted(model_keys - ckpt_keys)]
  problems += [f"it holds {'/'.join(k)} which the model has not"
               for k in sorted(ckpt_keys - model_keys)]
  for k in sorted(model_keys & ckpt_keys):
    have, want = tuple(stores[k].shape), tuple(params[k].get_value().shape)
    if have != want:
      problems.append(f"{'/'.join(k)} is {list(have)} on disk, {list(want)} in the model")
  if problems:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise CheckpointError(f"the checkpoint at {src.path} does not fit this model: "
                          f"{problems[0]}{more}")


def quantize_checkpoint(src: str | Path, dst: str | Path, abstract_model: nnx.Module,
                        scheme: str | Q.Scheme, *, extra: dict | None = None,
                        on_step=None) -> dict:
  """Quantizes the FP checkpoint `src` (see the module docstring) into the quantized checkpoint
  `dst` (the format of `save_quantized`: `load_quantized(dst, model)` loads it), one layer at a
  time: a stacked kernel's layer slice is read alone, quantized by `quantize_kernel` and dropped;
  only codes and scales are kept. Other Params (embeddings, norms, biases) are copied in FP.
  `abstract_model` is the FP model, typically `nnx.eval_shape(lambda: Model(cfg, rngs=...))`:
  its shapes and `dense_in` metadata say which arrays are kernels; its non-Param state, if any,
  must be concrete. `on_step()` is called after each quantized layer. Returns what was read:
  {kind, step, arrays_read, reads, bytes_read, max_read_bytes, layers_per_read, kernels,
  quantized_bytes, seconds}."""
  t0 = time.perf_counter()
  s = Q.get_scheme(scheme) if isinstance(scheme, str) else scheme
  if Q.quantization_of(abstract_model) is not None:
    raise ConfigError("quantize_checkpoint needs the full-precision model, not a quantized one")
  source = _Source(src)
  graphdef, fp_state = nnx.split(abstract_model)
  params = {tuple(map(str, p)): v
            for p, v in nnx.to_flat_state(nnx.state(abstract_model, nnx.Param))}
  stores = {k: source.open(k) for k in params if k in source.names}
  _check_fits(source, params, stores)
  layouts = _fp_layouts(abstract_model)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), fp_state)
  qgraph, qstate = nnx.split(Q.quantize(nnx.merge(graphdef, abstract), s))
  stats = {"kind": source.kind, "step": source.step, "arrays_read": 0, "reads": 0, "bytes_read": 0,
           "max_read_bytes": 0, "layers_per_read": 1, "kernels": 0}
  flat_q = nnx.to_flat_state(qstate)
  other = {tuple(map(str, p)): v for p, v in nnx.to_flat_state(fp_state)}
  for path, var in flat_q:
    key = tuple(map(str, path))
    name = "/".join(key)
    if isinstance(var, Q.QuantizedParam):
      n_in, n_batch = layouts[key]
      dtype = params[key].get_value().dtype
      var.set_value(_stream_kernel(source, stores[key], name, n_in, n_batch, s, dtype,
                                   on_step, stats))
      stats["kernels"] += 1
    elif key in params:
      x = _read_checked(source, stores[key], (), name, stats)
      var.set_value(jnp.asarray(x.astype(params[key].get_value().dtype, copy=False)))
      del x
    else:
      value = other[key].get_value()
      if isinstance(value, jax.ShapeDtypeStruct):
        raise ConfigError(f"{name} is not an nnx.Param, so no FP checkpoint holds it; build the "
                          "model with concrete values for its non-Param state")
      var.set_value(value)
    stats["arrays_read"] += key in params
  model_q = nnx.merge(qgraph, qstate)
  del stores, source
  _release_pass_memory()
  # written one large array at a time: orbax otherwise serializes every array at once, and its
  # encoded copies (measured: about 0.7 of the quantized bytes) would top the pass's peak
  largest = max(x.nbytes for x in jax.tree.leaves(qstate))
  Q.save_quantized(Path(dst), model_q, s if not isinstance(scheme, str) else scheme, extra,
                   max_inflight_bytes=largest + (1 << 20))
  stats["quantized_bytes"] = Q.weight_bytes(model_q)
  stats["seconds"] = time.perf_counter() - t0
  return stats


# --- command line ---------------------------------------------------------------------------

def peak_rss_self() -> int:
  """This process's peak resident set size so far (VmHWM; 0 where /proc is unavailable)."""
  try:
    for line in Path("/proc/self/status").read_text().splitlines():
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  return 0


def _factory(spec: str):
  mod, _, fn = spec.partition(":")
  try:
    return getattr(importlib.import_module(mod), fn)
  except (ImportError, AttributeError, ValueError):
    raise ConfigError(f"--model must be package.module:function, got {spec!r}") from None


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog="python -m jaxpapers.nn.quantize_stream",
                               description="FP checkpoint -> quantized checkpoint, layer by layer")
  ap.add_argument("--src", required=True)
  ap.add_argument("--dst", required=True)
  ap.add_argument("--scheme", default="int4_absmax")
  ap.add_argument("--group-size", type=int, default=None)
  ap.add_argument("--model", required=True, help="package.module:function returning the FP model")
  ap.add_argument("--model-args", default="{}", help="JSON keyword arguments of --model")
  ap.add_argument("--report", default=None, help="write the stats (and VmHWM) here as JSON")
  ap.add_argument("--baseline", action="store_true",
                  help="import, start jax and build the abstract model, but do not quantize")
  a = ap.parse_args(argv)
  return_freed_memory_to_os()
  try:
    scheme = Q.get_scheme(a.scheme, a.group_size)
    model = _factory(a.model)(**json.loads(a.model_args))
    jax.block_until_ready(jnp.zeros(()))   # the backend is up in both modes
    if a.baseline:
      out = {"baseline": True}
    else:
      out = quantize_checkpoint(a.src, a.dst, model, scheme if a.group_size else a.scheme)
  except JaxpapersError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  out["vmhwm_bytes"] = peak_rss_self()
  text = json.dumps(out)
  if a.report:
    Path(a.report).write_text(text + "\n")
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
