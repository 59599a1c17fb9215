"""A run's workdir: atomic file writes, JSON reads that fail in one line, the lock that keeps a
second run out, and whether the run there has finished."""
from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import socket
from pathlib import Path

from jaxpapers.core.errors import WorkdirError

log = logging.getLogger("jaxpapers")

LOCK = ".lock"


def atomic_write_text(path: str | Path, text: str) -> None:
  """Writes `text` to a temporary file beside `path`, flushes it, then renames it over `path`:
  a reader sees the old file or the new one, never a truncated one."""
  path = Path(path)
  tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | Path):
  """A temporary path beside `path` for a library to write (a figure, a GIF, an .npz), renamed
  over `path` when the block ends, removed if it fails: readers see the old file or the whole new
  one. The temporary keeps `path`'s suffix (writers choose the format by it)."""
  path = Path(path)
  tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)


def atomic_write_json(path: str | Path, obj, **kw) -> None:
  atomic_write_text(path, json.dumps(obj, **kw) + "\n")


def read_json(path: str | Path):
  """The JSON in `path`; a truncated or malformed file is one WorkdirError naming it."""
  path = Path(path)
  try:
    return json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise WorkdirError(f"{path} is not valid JSON ({e.__class__.__name__} at {getattr(e, 'pos', '?')}: "
                       "truncated or edited?); restore it or use a new --workdir") from None


FINISHED = "finished.json"


def finished_config(workdir: str | Path) -> dict | None:
  """The config of the run that finished in workdir (written by `mark_finished` once its report
  is out), or None when none has."""
  path = Path(workdir) / FINISHED
  return read_json(path)["config"] if path.is_file() else None


def mark_finished(workdir: str | Path, config: dict) -> None:
  atomic_write_json(Path(workdir) / FINISHED, {"config": config, "report": "REPORT.md"}, indent=1)


# top-level config sections that define the model and its data: a resumed run must keep them
FIXED_SECTIONS = ("experiment", "seed", "model", "data", "objective", "mesh")


def check_rerun(workdir: str | Path, config: dict, write: bool = True) -> str:
  """Decides what a run of `config` in workdir does, and (write=True) records its config.json.

  'finished': the same config already finished there: nothing to do. 'run': train (fresh, or
  resuming). ConfigError when it would change what a resumed run's model or data are, or change
  a finished run (only a larger train.steps continues one). A config that changes other keys of
  a resumed run is recorded, the previous one kept as config.<n>.json. Written atomically."""
  from jaxpapers.core.config import differing_keys
  from jaxpapers.core.errors import ConfigError
  workdir = Path(workdir)
  path = workdir / "config.json"
  old = read_json(path) if path.exists() else None
  if old is not None and (workdir / "checkpoints").is_dir():
    fixed = [k for k in differing_keys(old, config) if k.split(".")[0] in FIXED_SECTIONS]
    if fixed:
      raise ConfigError(f"{workdir} holds a run whose {fixed[0]} differs ({len(fixed)} key(s): "
                        f"{', '.join(fixed[:4])}); use a new --workdir")
  done = finished_config(workdir)
  if done is not None:
    changed = differing_keys(done, config)
    if not changed:
      return "finished"
    if changed != ["train.steps"] or config["train"]["steps"] <= done["train"]["steps"]:
      raise ConfigError(f"{workdir} holds a finished run whose config differs in "
                        f"{', '.join(changed[:4])}; it is kept as it is: use a new --workdir "
                        "(only a larger --config.train.steps continues a finished run)")
  changed = differing_keys(old, config) if old is not None else []
  if changed and write:
    n = 1
    while (workdir / f"config.{n}.json").exists():
      n += 1
    atomic_write_text(workdir / f"config.{n}.json", path.read_text())
    log.warning("config changed in %s; the previous one is kept as config.%d.json",
                ", ".join(changed[:4]), n)
  if write:
    atomic_write_json(path, config, indent=2, sort_keys=True)
  return "run"


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:   # exists, owned by someone else
    return True
  return True


class Lock:
  """An exclusive lock on a workdir: the file `.lock`, locked with flock(2) while a run holds it
  and holding the holder's pid and host. The kernel releases the flock when its process dies,
  so two runs can never both hold it, not even when both find the same stale file: the one that
  gets the flock decides alone. A record this program wrote under the flock ("flock": 1) whose
  flock nobody holds is stale, whatever its pid (after a restart a pid may be reused, even our
  own); it is taken over with a warning. A live holder of the flock, a record of another host (its
  lock may not be visible from here), an older record naming a live process, or a file this
  program did not write makes `acquire` raise WorkdirError."""

  def __init__(self, workdir: str | Path):
    self.path = Path(workdir) / LOCK
    self.held = False
    self._fd = None

  def _record(self, text: str) -> dict:
    try:
      rec = json.loads(text)
      return {"pid": int(rec["pid"]), "host": str(rec["host"]), "flock": bool(rec.get("flock"))}
    except (ValueError, KeyError, TypeError):
      raise WorkdirError(f"{self.path} is not a lock this program wrote; if no run uses "
                         f"{self.path.parent}, delete it") from None

  def acquire(self) -> "Lock":
    import fcntl  # noqa: PLC0415 (POSIX only, as the rest of the run machinery)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "flock": 1}
    for _ in range(3):
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        try:
          fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
          try:
            rec = self._record(self.path.read_text())
            who = f"its record: pid {rec['pid']} on {rec['host']}"
          except (OSError, WorkdirError):
            who = "its record is being written"
          raise WorkdirError(f"{self.path.parent} is in use by another run, which holds its lock "
                             f"({who}); wait for it to end") from None
        try:
          same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
          same = False
        if not same:                     # released (unlinked) between our open and our flock
          os.close(fd)
          continue
        text = os.read(fd, 4096).decode("utf-8", "replace")
        if text.strip():
          rec = self._record(text)
          if rec["host"] != me["host"] or (not rec["flock"] and _alive(rec["pid"])):
            raise WorkdirError(f"{self.path.parent} is in use by another run (pid {rec['pid']} on "
                               f"{rec['host']}); wait for it, or delete {self.path} if that "
                               "process is gone")
          log.warning("taking over the stale lock %s of pid %d on %s (no longer running)",
                      self.path, rec["pid"], rec["host"])
        data = json.dumps(me).encode()
        os.ftruncate(fd, 0)
        if os.pwrite(fd, data, 0) != len(data):
          raise OSError(f"short write to {self.path}")
      except BaseException:
        os.close(fd)                     # (an error leaves no flock held by this process)
        raise
      self._fd, self.held = fd, True
      return self
    raise WorkdirError(f"could not lock {self.path.parent}: other runs took and released the lock meanwhile")

  def release(self) -> None:
    if self.held:
      try:
        self.path.unlink(missing_ok=True)     # while still locked: an opener of it retries
      finally:
        os.close(self._fd)
        self._fd, self.held = None, False

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


_validating = contextvars.ContextVar("jaxpapers_validating", default=None)


def validating_workdir() -> Path | None:
  """The workdir of the run whose config is being validated (`jaxpapers run` sets it), so that a
  check can skip what an earlier start of the same run already checked and wrote there."""
  return _validating.get()


@contextlib.contextmanager
def validating(workdir: str | Path):
  token = _validating.set(Path(workdir))
  try:
    yield
  finally:
    _validating.reset(token)


_fresh_start = contextvars.ContextVar("jaxpapers_fresh_start", default=False)


def fresh_start_allowed() -> bool:
  """Whether the user asked (`jaxpapers run --restart`) to start from step 0 although the
  workdir holds only unusable (`*.corrupt`) checkpoints."""
  return _fresh_start.get()


@contextlib.contextmanager
def fresh_start(allowed: bool):
  """`fresh_start_allowed()` is `allowed` inside the block."""
  token = _fresh_start.set(bool(allowed))
  try:
    yield
  finally:
    _fresh_start.reset(token)


def cached_result(path: str | Path, fn, fingerprint: dict):
  """(result, extra) of a sub-run: read from `path` when an earlier (killed or finished) run with
  the same `fingerprint` (a JSON-able config dict) wrote it, extra None; else `fn()` -> (result
  dict, extra), the result written atomically with its fingerprint. A result of another
  fingerprint is a WorkdirError (never mixed, never overwritten)."""
  from jaxpapers.core.config import differing_keys
  path = Path(path)
  want = json.loads(json.dumps(fingerprint))
  if path.is_file():
    r = read_json(path)
    if r.get("config") != want:
      diff = differing_keys(r.get("config") or {}, want)
      raise WorkdirError(f"{path} was made with another config (differs in "
                         f"{', '.join(diff[:4]) or 'its record'}); use a new --workdir")
    return r, None
  result, extra = fn()
  path.parent.mkdir(parents=True, exist_ok=True)
  atomic_write_json(path, dict(result, config=want))
  return result, extra


def persistent_compilation_cache(path: str | Path) -> None:
  """XLA's persistent compilation cache in `path` (a run that compiles the same train steps for
  every method and seed compiles each once, and never again on resume); a cache the user
  configured is kept."""
  import jax
  if jax.config.jax_compilation_cache_dir is None:
    Path(path).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
