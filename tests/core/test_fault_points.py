"""core.faults, the kill points the fault suite uses: each fires exactly at its n-th arrival, the
save watcher kills while orbax's temporary entry exists (or as the write returns, never later),
and without the variables nothing happens. Each case runs in a subprocess (a kill is a SIGKILL)."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(code: str, tmp_path, **env) -> subprocess.CompletedProcess:
  e = dict(os.environ, PYTHONPATH=str(ROOT))
  e.pop("JAXPAPERS_KILL_AT", None)
  e.pop("JAXPAPERS_FAULT_TRACE", None)
  return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=dict(e, **env),
                        capture_output=True, text=True, timeout=60)


POINTS = """
  from jaxpapers.core import faults
  for i in range(1, 5):
    faults.point("step")
    print("after step", i, flush=True)
    faults.point("eval")
  print("end", flush=True)
"""


def test_a_point_kills_at_its_nth_arrival_and_no_other(tmp_path):
  p = run(POINTS, tmp_path, JAXPAPERS_KILL_AT="step:3")
  assert p.returncode == -signal.SIGKILL
  assert p.stdout.splitlines() == ["after step 1", "after step 2"]
  p = run(POINTS, tmp_path, JAXPAPERS_KILL_AT="eval:1")
  assert p.returncode == -signal.SIGKILL and p.stdout.splitlines() == ["after step 1"]


def test_without_the_variables_points_do_nothing_and_the_trace_records_them(tmp_path):
  p = run(POINTS, tmp_path)
  assert p.returncode == 0 and p.stdout.splitlines()[-1] == "end"
  assert not list(tmp_path.iterdir())
  p = run(POINTS, tmp_path, JAXPAPERS_FAULT_TRACE=str(tmp_path / "trace"))
  assert p.returncode == 0
  assert (tmp_path / "trace").read_text().split() == ["step", "eval"] * 4


SAVE = """
  import time
  from pathlib import Path
  from jaxpapers.core import faults
  d = Path("ckpt"); d.mkdir()
  done = faults.kill_while_writing("save", d)
  if {write_tmp}:
    (d / "3.orbax-checkpoint-tmp-1").mkdir()
    time.sleep(5)                 # the watcher must kill while the entry is there
    print("tmp entry survived", flush=True)
  done()
  print("after the save", flush=True)
  faults.point("save")            # the next arrival at a point of that name
  print("end", flush=True)
"""


def test_the_save_watcher_kills_while_the_temporary_entry_exists(tmp_path):
  p = run(SAVE.format(write_tmp=True), tmp_path, JAXPAPERS_KILL_AT="save:1")
  assert p.returncode == -signal.SIGKILL and p.stdout == ""
  assert (tmp_path / "ckpt" / "3.orbax-checkpoint-tmp-1").is_dir()


def test_a_save_too_quick_to_be_seen_is_killed_as_it_returns_not_later(tmp_path):
  p = run(SAVE.format(write_tmp=False), tmp_path, JAXPAPERS_KILL_AT="save:1")
  assert p.returncode == -signal.SIGKILL and p.stdout == ""


def test_a_save_not_due_is_not_watched_and_counts_as_an_arrival(tmp_path):
  p = run(SAVE.format(write_tmp=True), tmp_path, JAXPAPERS_KILL_AT="save:2")
  assert p.returncode == -signal.SIGKILL
  assert p.stdout.splitlines() == ["tmp entry survived", "after the save"]
