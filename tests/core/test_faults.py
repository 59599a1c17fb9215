"""The fault-injection suite's small preset (issue 17): glm/pretrain killed during a checkpoint
save, killed mid-step with its newest checkpoint damaged, finished runs rerun, NaN gradients and a run of non-finite steps, and
every bad-input class (malformed files of every format the project reads, config files and
overrides that fail, bad generation requests), all through the real `jaxpapers` command. Every
fault must end as issue 17 asks: results equal to the uninterrupted run's, a finished run left as
it was, or one error line with exit code 2, no traceback and no workdir written."""
import json
import subprocess
import sys
from pathlib import Path

from jp_testutil import SUBPROCESS_XLA_FLAGS

REPO = Path(__file__).resolve().parents[2]


def test_small_fault_suite_survives_every_fault(tmp_path):
  out = tmp_path / "faults.json"
  p = subprocess.run([sys.executable, str(REPO / "experiments/bench/faults.py"), "--preset", "small",
                      "--json", str(out), "--keep", str(tmp_path / "runs"),
                      f"--xla_flags={SUBPROCESS_XLA_FLAGS}"],
                     capture_output=True, text=True, timeout=900, cwd=REPO)
  assert out.exists(), p.stderr[-3000:]
  r = json.loads(out.read_text())
  failed = [row for row in r["rows"] if not row["ok"]]
  assert not failed, json.dumps(failed, indent=1)
  assert p.returncode == 0
  assert r["faults"] >= 75 and r["classes"] >= 20, r
  assert r["runs_lost"] == 0 and r["tracebacks"] == 0
  classes = {row["cls"] for row in r["rows"]}
  for must in ("SIGKILL during a checkpoint save", "bit flip in a checkpoint", "rerun of a finished run", "NaN in a gradient",
               "non-finite steps in a row", "BetaE query pickles", "GEBD annotation pickles",
               "network trace CSV", "task JSONL", "config file that does not load"):
    assert must in classes, must
