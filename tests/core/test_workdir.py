"""Runs you can trust (issue 17), end to end through the `jaxpapers` command in subprocesses:
a finished run reruns as a no-op, a killed run resumes into the same report, a second run on a
locked workdir and a workdir whose checkpoints are all unreadable each get one line and exit 2.
One uninterrupted 60-step tiny run is shared by the module; the killed-and-resumed run ends
bitwise equal to it, with the same report."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import chex
import orbax.checkpoint as ocp

from jaxpapers import cli
from jaxpapers.core.checkpoint import Checkpointer
from jp_testutil import REPO, SUBPROCESS_XLA_FLAGS, tiny_glm_args

# evaluation every 10 steps, not every 3; no generation prompts (each compiles a prefill and a
# decode step, and samples are not what these tests are about)
ARGS = ("--config.train.ckpt_every=10", "--config.train.log_every=10", "--config.train.eval_every=10",
        "--config.generate.prompts=()", "--config.train.steps=60")


def _popen(args):
  env = dict(os.environ, XLA_FLAGS=SUBPROCESS_XLA_FLAGS, JAX_PLATFORMS="cpu")
  return subprocess.Popen([sys.executable, "-m", "jaxpapers.cli", *args], env=env, cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(args, timeout=600):
  p = _popen(args)
  out, err = p.communicate(timeout=timeout)
  return p.returncode, out, err


def _one_line(code, err, expected):
  lines = err.strip().splitlines()
  assert code == 2, err[-3000:]
  assert lines[-1].startswith("error: ") and expected in lines[-1], err[-3000:]
  assert not any("Traceback" in l or "Event loop is closed" in l for l in lines), err[-3000:]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, small_corpus):
  wd = tmp_path_factory.mktemp("finished") / "wd"
  code, out, err = _run(tiny_glm_args(small_corpus, wd, *ARGS))
  assert code == 0, err[-3000:]
  return wd


def _copy(finished, tmp_path) -> Path:
  wd = tmp_path / "wd"
  shutil.copytree(finished, wd)
  return wd


def _final_state(workdir):
  ck = Checkpointer(Path(workdir) / "checkpoints", keep=10)
  step = ck.steps()[-1]
  out = ck.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                         meta=ocp.args.JsonRestore()))
  return step, out["state"]


def _rows(wd):   # the training rows (eval rows carry eval/... keys)
  return [r for r in map(json.loads, (wd / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_rerunning_a_finished_run_changes_nothing(capsys, tmp_path, finished, small_corpus):
  wd = _copy(finished, tmp_path)
  before = {p.name: p.read_bytes() for p in wd.iterdir() if p.is_file()}
  assert cli.main(tiny_glm_args(small_corpus, wd, *ARGS)) == 0
  assert f"holds this run, finished; nothing to do. Report: {wd / 'REPORT.md'}" in capsys.readouterr().out
  assert cli.main(tiny_glm_args(small_corpus, wd, *ARGS, "--config.train.lr=0.01")) == 2
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert "holds a finished run whose config differs in train.lr" in err
  assert {p.name: p.read_bytes() for p in wd.iterdir() if p.is_file()} == before


def test_killed_and_resumed_run_reports_as_the_uninterrupted_one(tmp_path, finished, small_corpus):
  """SIGKILL after the checkpoint at step 20 (the run has logged further), rerun: it takes over
  the dead run's lock, resumes, ends with parameters, optimizer state, step and RNG bitwise equal
  to the uninterrupted run's, and results.json's training figures, the loss plot's data and
  metrics.jsonl equal the uninterrupted run's."""
  wd = tmp_path / "wd"
  run = _popen(tiny_glm_args(small_corpus, wd, *ARGS))
  ckdir = wd / "checkpoints"
  deadline = time.time() + 300
  while time.time() < deadline and run.poll() is None:
    if ckdir.exists() and any(p.name.isdigit() and int(p.name) >= 20 for p in ckdir.iterdir()):
      break
    time.sleep(0.02)
  assert run.poll() is None, "the run finished before it could be killed"
  run.send_signal(signal.SIGKILL)
  run.communicate()
  killed_at = max(int(p.name) for p in ckdir.iterdir() if p.name.isdigit())
  assert killed_at < 60 and (wd / ".lock").exists() and not (wd / "results.json").exists()
  with (wd / "metrics.jsonl").open("a") as f:
    f.write('{"step": 39, "lo')                                       # cut short by the kill
  code, out, err = _run(tiny_glm_args(small_corpus, wd, *ARGS))
  assert code == 0, err[-3000:]
  assert "taking over the stale lock" in err and "resumed from the checkpoint" in err
  assert not (wd / ".lock").exists()
  ref, got = (json.loads((d / "results.json").read_text()) for d in (finished, wd))
  assert got["resumed_from"] >= killed_at
  (s_ref, st_ref), (s_run, st_run) = _final_state(finished), _final_state(wd)
  assert s_ref == s_run == 60
  chex.assert_trees_all_equal(st_ref, st_run)                        # bitwise
  for key in ("final_loss", "skipped_steps", "steps", "val_loss", "val_ppl"):
    assert got[key] == ref[key], key
  assert [r["step"] for r in _rows(wd)] == list(range(1, 61))          # each step once
  assert [r["loss"] for r in _rows(wd)] == [r["loss"] for r in _rows(finished)]
  evals = lambda d: [r for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())
                     if "loss" not in r]
  assert evals(wd) == evals(finished)                                 # eval rows once each too


def test_the_issues_user_errors_through_the_real_command(tmp_path, finished, small_corpus):
  """Issue 17's rows whose exit code and stderr matter, each through `python -m jaxpapers.cli`
  (the in-process tests check the same messages; this checks the process: exit status 2, one
  error line, no traceback from anywhere, nothing written)."""
  bad_cfg = tmp_path / "bad.py"
  bad_cfg.write_text("def get_config(arg):\n  return {\n")
  cut = tmp_path / "cut"
  (cut / "checkpoints").mkdir(parents=True)
  (cut / "config.json").write_text('{"experiment": "glm/pret')
  empty = tmp_path / "empty"        # a run's workdir that holds no checkpoint yet
  empty.mkdir()
  shutil.copy(finished / "config.json", empty / "config.json")
  # one case per place a process can fail: the config's import, the workdir's files, a config
  # value, a data file, generation's flags, a workdir without a checkpoint, a prompt refused after
  # the model and tokenizer are built. Other messages of these classes are checked in process
  # (tests/core/test_reliability.py: mesh shape, max_new_tokens); the fault suite runs them all
  # for exit code, one line, no traceback and no workdir written (tests/core/test_faults.py).
  long_prompt = " ".join(["It is a truth universally acknowledged"] * 10)
  cases = [
      (["run", f"--config={bad_cfg}:quick", "--workdir", str(tmp_path / "w1")], "fails to import: SyntaxError"),
      (tiny_glm_args(small_corpus, cut), "config.json is not valid JSON"),
      (tiny_glm_args(small_corpus, tmp_path / "w2", "--config.train.lr=inf"), "--config.train.lr must be a finite positive number"),
      (tiny_glm_args(tmp_path / "missing.txt", tmp_path / "w4"), "corpus file not found"),
      (["generate", "--workdir", str(empty), "--prompt", "x"], "holds no checkpoint yet"),
      (["generate", "--workdir", str(finished), "--prompt", long_prompt], "shorten the prompt"),
      (["generate", "--workdir", str(finished), "--prompt", "x", "--top_p", "0"], "top_p"),
  ]
  before = sorted(p.name for p in finished.rglob("*"))
  for args, expected in cases:
    code, _, err = _run(args)
    _one_line(code, err, expected)
  for w in ("w1", "w2", "w4"):
    assert not (tmp_path / w).exists(), w
  assert [p.name for p in empty.iterdir()] == ["config.json"]
  assert sorted(p.name for p in finished.rglob("*")) == before


def test_a_second_real_run_on_a_busy_workdir_is_refused(tmp_path, small_corpus):
  """Two `jaxpapers run` processes on one workdir: the second stops in one line naming the first
  (whose run goes on; it is killed here only to end the test)."""
  wd = tmp_path / "wd"
  first = _popen(tiny_glm_args(small_corpus, wd, *ARGS[:-1], "--config.train.steps=100000"))
  try:
    deadline = time.time() + 300
    while not (wd / ".lock").exists() and first.poll() is None and time.time() < deadline:
      time.sleep(0.05)
    assert first.poll() is None and (wd / ".lock").exists()
    code, _, err = _run(tiny_glm_args(small_corpus, wd, *ARGS[:-1], "--config.train.steps=100000"))
    _one_line(code, err, f"is in use by another run, which holds its lock (its record: pid {first.pid} on "
                         f"{socket.gethostname()}); wait for it to end")
    assert first.poll() is None
  finally:
    first.kill()
    first.communicate()


def test_a_second_run_on_a_locked_workdir(capsys, tmp_path, small_corpus):
  wd = tmp_path / "wd"
  wd.mkdir()
  holder = subprocess.Popen(["sleep", "120"])
  try:
    (wd / ".lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
    code = cli.main(tiny_glm_args(small_corpus, wd, *ARGS))
    _one_line(code, capsys.readouterr().err,
              f"is in use by another run (pid {holder.pid} on {socket.gethostname()})")
    assert sorted(p.name for p in wd.iterdir()) == [".lock"]         # nothing written
  finally:
    holder.kill()
    holder.wait()


def test_unreadable_checkpoints_stop_the_run_then_need_restart(capsys, tmp_path, finished, small_corpus):
  wd = _copy(finished, tmp_path)
  for f in (wd / "checkpoints").rglob("*"):
    if f.is_file() and f.parent.name == "d":                          # every array data file
      with f.open("r+b") as h:
        h.truncate(7)
  code, out, err = _run(tiny_glm_args(small_corpus, wd, *ARGS[:-1], "--config.train.steps=70"))
  _one_line(code, err, "no usable checkpoint in")
  assert sorted(p.name for p in (wd / "checkpoints").iterdir() if p.name != ".files") == ["40.corrupt", "50.corrupt", "60.corrupt"]
  code = cli.main(tiny_glm_args(small_corpus, wd, *ARGS[:-1], "--config.train.steps=70"))
  _one_line(code, capsys.readouterr().err, "holds only unusable checkpoints (40.corrupt, 50.corrupt, 60.corrupt); "
                       "rerun with --restart")
  # the command line's --restart: trains from step 0 and keeps the set-aside checkpoints
  assert cli.main(tiny_glm_args(small_corpus, wd, *ARGS[:-1], "--config.train.steps=70", "--restart")) == 0
  assert [r["step"] for r in map(json.loads, (wd / "metrics.jsonl").read_text().splitlines())
          if "loss" in r] == list(range(1, 71))
  assert {"40.corrupt", "50.corrupt", "60.corrupt", "70"} <= {p.name for p in (wd / "checkpoints").iterdir()}


def test_generate_refuses_a_prompt_longer_than_the_context(capsys, finished):
  prompt = " ".join(["It is a truth universally acknowledged"] * 10)
  assert cli.main(["generate", "--workdir", str(finished), "--prompt", prompt]) == 2
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert "the model's context is 32 tokens (objective.seq_len): shorten the prompt" in err
