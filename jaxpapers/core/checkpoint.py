"""orbax checkpoints of the whole train state (params, optimizer, step, RNG) plus the
data-iterator position, each array with a CRC-32 of its bytes; restore verifies them and falls
back past a corrupt latest checkpoint (set aside as `<step>.corrupt`)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from jaxpapers.core import faults
from jaxpapers.core.errors import CheckpointError, WorkdirError
from jaxpapers.core.workdir import atomic_path

log = logging.getLogger("jaxpapers")

# Exceptions that mean "these bytes do not decode": a damaged or incomplete checkpoint. Anything
# else (MemoryError, an I/O error, ...) says nothing about the checkpoint and sets nothing aside.
_FORMAT_ERRORS = (ValueError, KeyError, IndexError, TypeError, EOFError, FileNotFoundError,
                  NotADirectoryError, IsADirectoryError, zlib.error)
# tensorstore reports every failure as a ValueError; these words mark the ones that are not about
# the bytes ("OS error" is how it quotes errno; a missing file is a format error).
_NOT_FORMAT = ("PERMISSION_DENIED", "UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED",
               "CANCELLED", "ABORTED", "OS error")


def is_corruption(e: BaseException) -> bool:
  """Whether a restore failure means the checkpoint's bytes are bad (decode/format errors).
  orbax reports a failed array read as a bare Exception whose cause is tensorstore's error: that
  cause decides."""
  if type(e) is Exception and (e.__cause__ or e.__context__) is not None:
    return is_corruption(e.__cause__ or e.__context__)
  if not isinstance(e, _FORMAT_ERRORS):
    return False
  msg = str(e)
  return not any(w in msg for w in _NOT_FORMAT) or "No such file" in msg


def _run_draining(coro):
  """orbax's `_run_sync_via_new_loop`, except that when the coroutine fails, the loop first runs
  the reads still in flight to their end before it is closed. orbax closes it at once; tensorstore
  then completes those reads into the closed loop and prints one 'RuntimeError: Event loop is
  closed' traceback for each, after the restore error has been handled."""
  loop = asyncio.new_event_loop()
  try:
    asyncio.set_event_loop(loop)
    try:
      return loop.run_until_complete(coro)
    except BaseException:
      pending = asyncio.all_tasks(loop)
      if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
      raise
  finally:
    asyncio.set_event_loop(None)
    loop.close()


@contextlib.contextmanager
def _draining_restores():
  """Routes orbax's synchronous runs through `_run_draining` (orbax 0.12's private hook; left
  alone if a later orbax lacks it), and quiets orbax's own error log meanwhile."""
  from orbax.checkpoint._src import asyncio_utils
  original = getattr(asyncio_utils, "_run_sync_via_new_loop", None)
  if original is None:
    yield
    return
  absl = logging.getLogger("absl")   # orbax logs each failure again as an ERROR; we report it
  level = absl.level
  asyncio_utils._run_sync_via_new_loop = _run_draining
  absl.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    asyncio_utils._run_sync_via_new_loop = original
    absl.setLevel(level)


def _leaf_bytes(x) -> np.ndarray:
  """The bytes of a leaf this process holds: the whole array, or (an array spread over several
  processes) its addressable shards of replica 0 in index order."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    shards = sorted((s for s in x.addressable_shards if s.replica_id == 0),
                    key=lambda s: [sl.start or 0 for sl in s.index])
    parts = [np.ascontiguousarray(jax.device_get(s.data)).reshape(-1).view(np.uint8) for s in shards]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint8)
  return np.ascontiguousarray(jax.device_get(x)).reshape(-1).view(np.uint8)


def checksums(tree) -> dict[str, str]:
  """{leaf path: CRC-32 of the leaf's bytes}; with several processes, of each process's part,
  gathered, so every process sees (and judges) the same table."""
  items = jax.tree_util.tree_flatten_with_path(tree)[0]
  crcs = np.array([zlib.crc32(_leaf_bytes(x)) for _, x in items], np.uint32)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    crcs = np.asarray(multihost_utils.process_allgather(crcs)).T   # [leaves, processes]
  return {jax.tree_util.keystr(p): "-".join(f"{int(c):08x}" for c in np.atleast_1d(v))
          for (p, _), v in zip(items, crcs)}


FILE_TABLES = ".files"   # <checkpoints>/.files/<step>.json: each checkpoint's files as saved


def file_table(step_dir: Path) -> dict[str, list[int]]:
  """{path relative to step_dir: [size, CRC-32]} of every file of a checkpoint."""
  out = {}
  for f in sorted(step_dir.rglob("*")):
    if f.is_file():
      crc = 0
      with open(f, "rb") as fh:
        while chunk := fh.read(1 << 20):
          crc = zlib.crc32(chunk, crc)
      out[str(f.relative_to(step_dir))] = [f.stat().st_size, crc]
  return out


def has_checkpoints(directory: str | Path) -> bool:
  """Whether `directory` holds a step directory (without creating anything)."""
  d = Path(directory)
  return d.is_dir() and any(p.name.isdigit() for p in d.iterdir())


@jax.jit
def _leaves_finite(leaves):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(l)) for l in leaves]))


def all_finite(tree) -> bool:
  """True when every floating leaf is finite (one compiled check per tree structure)."""
  leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  return bool(_leaves_finite(leaves)) if leaves else True


def layer_chunked_save_args(tree):
  """orbax SaveArgs for `tree`: each leaf of an nnx.Variable whose `axes` start with "layers" (a
  stacked-layer array) is stored one layer per chunk (shard_axes=(0,)), so a reader can fetch
  w[l] alone without decoding the other layers (`nn.quantize_stream`); other leaves keep orbax's
  default (one chunk per shard). Values are unchanged; only the storage chunking differs."""
  from flax import nnx

  def one(x):
    if isinstance(x, nnx.Variable):
      axes = tuple(x.get_metadata().get("axes") or ())
      arg = ocp.SaveArgs(shard_axes=(0,)) if axes[:1] == ("layers",) else ocp.SaveArgs()
      return x.replace(jax.tree.map(lambda _: arg, x.get_value()))
    return ocp.SaveArgs()
  return jax.tree.map(one, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def _numel(shape) -> int:
  n = 1
  for d in shape:
    n *= d
  return n


class Checkpointer:
  """Keeps the last `keep` checkpoints under `directory`; writes are atomic (orbax renames a
  finished temporary directory), so a killed run never leaves a half-written 'latest'."""

  def __init__(self, directory: str | Path, keep: int = 3, create: bool = True):
    self.directory = Path(directory).absolute()
    self.keep, self.create = keep, create
    self.manager = self._manager()

  def _manager(self):
    return ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=self.keep, create=self.create,
                                             enable_async_checkpointing=False),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})

  def corrupt(self) -> list[str]:
    """Names of the checkpoints set aside as unusable."""
    if not self.directory.is_dir():
      return []
    return sorted(p.name for p in self.directory.iterdir() if ".corrupt" in p.name)

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, meta: dict) -> None:
    if not all_finite(state):
      raise CheckpointError(f"refusing to checkpoint a non-finite state at step {step}")
    meta = dict(meta, checksums=checksums(state))
    if jax.process_index() == 0:    # a table of an earlier checkpoint of this step (set aside)
      (self.directory / FILE_TABLES / f"{step}.json").unlink(missing_ok=True)
    saved = faults.kill_while_writing("save", self.directory)
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(
        state, save_args=layer_chunked_save_args(state)),
                                                    meta=ocp.args.JsonSave(meta)), force=True)
    self.manager.wait_until_finished()
    if jax.process_index() == 0:
      self._write_file_table(step)
    saved()

  def _write_file_table(self, step: int) -> None:
    """The files of checkpoint `step` as written, so that a later restore failure can tell
    damaged bytes (corruption) from anything else (see `_damage`); tables of checkpoints no
    longer kept are removed. Process 0 reads the checkpoint back once to make it (a CRC-32 pass
    over its bytes, about a second per GB)."""
    tables = self.directory / FILE_TABLES
    tables.mkdir(exist_ok=True)
    tmp = tables / f".{step}.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(file_table(self.directory / str(step))))
    os.replace(tmp, tables / f"{step}.json")
    kept = {str(s) for s in self.steps()}
    for t in tables.glob("*.json"):
      if t.stem not in kept:
        t.unlink(missing_ok=True)

  def _damage(self, step: int) -> str | None:
    """How checkpoint `step`'s files differ from the table written with it: "" when they are as
    saved, None when there is no readable table (a checkpoint of an older version, or a run
    killed between the save and its table)."""
    try:
      want = json.loads((self.directory / FILE_TABLES / f"{step}.json").read_text())
      have = file_table(self.directory / str(step))
    except (OSError, ValueError):      # no table, or files that cannot be read now: the error decides
      return None
    missing = sorted(set(want) - set(have))
    changed = sorted(f for f in set(want) & set(have) if want[f] != have[f])
    if missing:
      return f"{len(missing)} file(s) missing, e.g. {missing[0]}"
    if changed:
      return f"{len(changed)} file(s) changed since the save, e.g. {changed[0]}"
    return ""

  def restore_latest(self, abstract_state, allow_fresh: bool = False):
    """(state, meta) of the newest checkpoint that restores and verifies, or None when there is
    none.

    `abstract_state` holds jax.ShapeDtypeStruct leaves with the target shardings. A corrupt
    checkpoint (a checksum that differs, non-finite values, or a read that fails on files that
    differ from the table saved with them) is reported, set aside as `<step>.corrupt` and
    skipped; if all are corrupt, CheckpointError. A read that fails on files as saved (out of
    memory, an I/O error, an API or sharding error) is a CheckpointError that sets nothing aside;
    without a table (older checkpoints) the kind of error decides (`is_corruption`). With only
    set-aside checkpoints left, CheckpointError unless `allow_fresh`."""
    steps = self.steps()
    if not steps:
      if self.corrupt() and not allow_fresh:
        raise CheckpointError(
            f"{self.directory} holds only unusable checkpoints ({', '.join(self.corrupt())}); "
            "rerun with --restart to train from step 0 (they are kept)")
      return None
    errors = []
    want = sorted(tuple(x.shape) for x in jax.tree.leaves(abstract_state))
    for step in reversed(steps):
      try:
        with _draining_restores():
          saved = self.manager.item_metadata(step)["state"]
        have = sorted(tuple(x.shape) for x in jax.tree.leaves(getattr(saved, "tree", saved)))
      except Exception:  # unreadable metadata: a corrupt checkpoint, handled below
        have = None
      if have and have != want:
        raise CheckpointError(
            f"the checkpoint at step {step} in {self.directory} was written for a different model "
            f"or optimizer ({len(have)} arrays, {sum(map(_numel, have)):,} values; this config has "
            f"{len(want)}, {sum(map(_numel, want)):,}); use a new --workdir or the run's own config")
      try:
        with _draining_restores():
          out = self.manager.restore(step, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        problem = self._verify(out)
      except Exception as e:  # noqa: BLE001 - sorted into corruption or not just below
        cause = (e.__cause__ or e.__context__) if type(e) is Exception else None
        msg = " ".join(str(cause or e).split())[:200] or type(e).__name__
        damage = self._damage(step)      # its files against the table saved with it, if any
        if not (is_corruption(e) if damage is None else damage):
          self._reset()
          why = "its files are as saved" if damage == "" else "not a sign of corruption"
          raise CheckpointError(
              f"could not read the checkpoint at step {step} in {self.directory} "
              f"({type(e).__name__}: {msg}); {why}, so nothing was set aside: "
              "fix the cause and rerun") from None
        problem = f"unreadable: {msg}" + (f" ({damage})" if damage else "")
      if problem is None:
        return out["state"], {k: v for k, v in out["meta"].items() if k != "checksums"}
      log.warning("checkpoint at step %d in %s is %s; trying an older one", step, self.directory,
                  problem)
      errors.append((step, problem))
      self._set_aside(step)
    raise CheckpointError(f"no usable checkpoint in {self.directory} (corrupt ones moved to "
                          "*.corrupt; --restart trains from step 0): " +
                          "; ".join(f"step {s}: {m}" for s, m in errors))

  @staticmethod
  def _verify(out) -> str | None:
    """Why a restored checkpoint is unusable, or None."""
    meta = out["meta"]
    want = meta.get("checksums") if isinstance(meta, dict) else None
    if want is None:
      log.warning("this checkpoint carries no checksums (written by an older version): its "
                  "values are checked for non-finite entries only")
    else:
      have = checksums(out["state"])
      bad = [k for k in have if want.get(k) != have[k]]
      if bad or set(want) != set(have):
        return (f"corrupt: the checksum of {bad[0] if bad else 'its array list'} differs from "
                f"the one saved ({len(bad)} array(s))")
    if not all_finite(out["state"]):
      return "corrupt: it holds non-finite values"
    return None

  def _reset(self) -> None:
    """A fresh manager: one whose restore failed may hold a broken event loop or thread pool."""
    try:
      self.manager.close()
    except Exception:  # noqa: BLE001
      pass
    self.manager = self._manager()

  def _set_aside(self, step: int) -> None:
    """Renames an unusable checkpoint to <step>.corrupt (kept for inspection, never reused);
    process 0 renames, the others wait for it."""
    if jax.process_index() == 0:
      src = self.directory / str(step)
      dst, n = self.directory / f"{step}.corrupt", 1
      while dst.exists():
        dst, n = self.directory / f"{step}.corrupt{n}", n + 1
      if src.exists():
        src.rename(dst)
        log.warning("moved the unusable checkpoint %s to %s", src, dst)
      (self.directory / FILE_TABLES / f"{step}.json").unlink(missing_ok=True)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"jaxpapers_set_aside_{step}")
    self._reset()

  def close(self):
    self.manager.close()


def save_params_npz(path: Path, model: nnx.Module) -> None:
  """A model's parameters as an .npz (one array per leaf, in tree order), written atomically."""
  leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
  with atomic_path(path) as tmp:
    np.savez(tmp, *[np.asarray(x) for x in leaves])


def load_params_npz(path: Path, model: nnx.Module) -> None:
  """Parameters saved by save_params_npz into `model` (same architecture), in place."""
  state = nnx.state(model, nnx.Param)
  leaves, tree = jax.tree.flatten(state)
  try:
    with np.load(path) as f:
      saved = [f[f"arr_{i}"] for i in range(len(f.files))]
  except (OSError, ValueError) as e:
    raise WorkdirError(f"{path}: cannot read the saved parameters ({e}); use a new --workdir") from e
  if len(saved) != len(leaves) or any(a.shape != b.shape for a, b in zip(saved, leaves)):
    raise WorkdirError(f"{path} holds another architecture's parameters; use a new --workdir")
  nnx.update(model, jax.tree.unflatten(tree, [jnp.asarray(a) for a in saved]))
