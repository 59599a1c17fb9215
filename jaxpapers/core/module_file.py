"""A small model's whole state (parameters and statistics) in one .npz file, written atomically;
for models trained outside `core.train` (e.g. a tokenizer, an evaluation classifier) that a run
keeps so that a resumed run and later commands reuse them instead of training them again."""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
from flax import nnx

from jaxpapers.core.errors import CheckpointError


def _flat(model: nnx.Module) -> dict[str, np.ndarray]:
  flat = nnx.to_flat_state(nnx.state(model))
  return {"/".join(map(str, path)): np.asarray(var.get_value()) for path, var in flat}


def save_module(path: str | Path, model: nnx.Module) -> None:
  """Every variable of `model` into `path` (npz: each array with its zip CRC-32), atomically."""
  path = Path(path)
  buf = io.BytesIO()
  np.savez(buf, **_flat(model))
  tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
  with open(tmp, "wb") as f:
    f.write(buf.getvalue())
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def load_module(path: str | Path, model: nnx.Module) -> nnx.Module:
  """`model` (a freshly built one of the same configuration) with the state saved in `path`;
  a corrupt file, or one of another model, is one CheckpointError naming it."""
  path = Path(path)
  want = _flat(model)
  try:
    with np.load(path) as z:
      got = {k: z[k] for k in z.files}
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise CheckpointError(f"{path} is unreadable or corrupt ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else 'no detail'})") from None
  if set(got) != set(want) or any(got[k].shape != want[k].shape for k in want):
    diff = sorted(set(got) ^ set(want)) or [k for k in want if got[k].shape != want[k].shape]
    raise CheckpointError(f"{path} does not hold this model's state (differs at {diff[0]!r}): "
                          "it is another model's or another configuration's")
  state = nnx.state(model)
  flat = nnx.to_flat_state(state)
  for p, var in flat:
    var.set_value(got["/".join(map(str, p))].astype(want["/".join(map(str, p))].dtype))
  nnx.update(model, nnx.from_flat_state(flat))
  return model
