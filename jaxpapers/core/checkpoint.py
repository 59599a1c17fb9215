"""orbax checkpoints of the whole train state (params, optimizer, step, RNG) plus the
data-iterator position; restore falls back past a corrupt latest checkpoint."""
from __future__ import annotations

import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from jaxpapers.core.errors import CheckpointError

log = logging.getLogger("jaxpapers")


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

  def __init__(self, directory: str | Path, keep: int = 3):
    self.directory = Path(directory).absolute()
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=False),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, meta: dict) -> None:
    if not all_finite(state):
      raise CheckpointError(f"refusing to checkpoint a non-finite state at step {step}")
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(
        state, save_args=layer_chunked_save_args(state)),
                                                    meta=ocp.args.JsonSave(meta)), force=True)
    self.manager.wait_until_finished()

  def restore_latest(self, abstract_state):
    """(state, meta) of the newest checkpoint that restores, or None when there is none.

    `abstract_state` holds jax.ShapeDtypeStruct leaves with the target shardings. A checkpoint
    that fails to restore is reported and skipped; if all fail, CheckpointError."""
    steps = self.steps()
    if not steps:
      return None
    errors = []
    want = sorted(tuple(x.shape) for x in jax.tree.leaves(abstract_state))
    for step in reversed(steps):
      try:
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
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
      except Exception as e:  # orbax raises many types for truncated / missing files
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        log.warning("checkpoint at step %d in %s is unreadable (%s); trying an older one",
                    step, self.directory, msg)
        errors.append((step, msg))
        self._set_aside(step)
        continue
      if not all_finite(out["state"]):
        log.warning("checkpoint at step %d holds non-finite values; trying an older one", step)
        errors.append((step, "non-finite values"))
        self._set_aside(step)
        continue
      return out["state"], dict(out["meta"])
    raise CheckpointError(f"no usable checkpoint in {self.directory} (unreadable ones moved to "
                          "*.corrupt): " +
                          "; ".join(f"step {s}: {m}" for s, m in errors))

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
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"jaxpapers_set_aside_{step}")
    self.manager.reload()

  def close(self):
    self.manager.close()
