"""Kill points for the fault-injection suite (`experiments/bench/faults.py`, issue 17).

With JAXPAPERS_KILL_AT="<point>:<n>" in its environment, a process SIGKILLs itself the n-th time
it reaches `point(<point>)`, so a kill lands exactly where the suite wants it:

  step    a train step has been dispatched and is running (core.train)
  eval    an evaluation inside the train loop has run, its row not yet written (core.train)
  save    a checkpoint is being written: a thread kills the process as soon as orbax's temporary
          directory exists, before the rename that makes the checkpoint visible (or, if the
          write was too quick to be seen, as it returns) (core.checkpoint)
  report  results.json is written, REPORT.md not yet (core.report)

With JAXPAPERS_FAULT_TRACE=<file>, every point reached is appended to <file> (with `train
<workdir>` where a training run starts), so the suite knows where a run's steps, evaluations and
saves fall. Without either variable (always, outside the suite) `point` returns at once."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

ENV = "JAXPAPERS_KILL_AT"
TRACE = "JAXPAPERS_FAULT_TRACE"
_counts: dict[str, int] = {}


def _kill() -> None:
  os.kill(os.getpid(), signal.SIGKILL)


def _due(name: str, detail: str = "") -> bool:
  trace = os.environ.get(TRACE)
  if trace:
    with open(trace, "a") as f:
      f.write(f"{name} {detail}".rstrip() + "\n")
  spec = os.environ.get(ENV)
  if not spec:
    return False
  want, _, n = spec.partition(":")
  if want != name:
    return False
  _counts[name] = _counts.get(name, 0) + 1
  return _counts[name] == int(n or 1)


def point(name: str, detail: str = "") -> None:
  """SIGKILL this process if JAXPAPERS_KILL_AT names this point and its count is reached."""
  if _due(name, detail):
    _kill()


def kill_while_writing(name: str, directory: str | Path):
  """For a point whose work writes a temporary entry in `directory` (orbax's
  `*.orbax-checkpoint-tmp*`): when due, a thread SIGKILLs the process as soon as one appears.
  Returns `done`, to call when that work has returned: it stops the thread, and if the entry
  came and went between two looks, kills the process then (the write finished, nothing after
  it ran), so the kill never moves on to a later, unrelated write."""
  if not _due(name, str(directory)):
    return lambda: None
  directory, finished = Path(directory), threading.Event()

  def watch():
    while not finished.is_set():
      try:
        if any("tmp" in p.name for p in directory.iterdir()):
          _kill()
      except OSError:
        pass
      time.sleep(0.0005)

  thread = threading.Thread(target=watch, daemon=True)
  thread.start()

  def done():
    finished.set()
    thread.join()
    _kill()
  return done
