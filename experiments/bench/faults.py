"""Fault injection through the real `jaxpapers` command (issue 17): every experiment that trains,
killed at chosen points, its checkpoints and workdir files damaged, started twice at once, fed
malformed files of every format the project reads and NaN/Inf in data, loss, gradients and
parameters. Prints one JSON line per fault, then the table of fault classes.

  python experiments/bench/faults.py [--preset small|full] [--only EXP[,EXP]] [--seed N]
                                     [--keep DIR] [--json FILE] [--jobs N] [--xla_flags FLAGS]

A fault is `ok` when the behaviour is the one issue 17 asks for: a run killed and rerun (or
resumed past a damaged checkpoint) ends with results equal to an uninterrupted run's in every
figure that two uninterrupted runs agree on (timings and memory readings differ between any two
runs); a finished run is left byte for byte as it was; a user error is one `error:` line on
stderr, exit code 2, no traceback, and (for bad input) no workdir written. `lost` marks a fault
after which a finished run was changed or a resumed run's results differ.

`small` (the default test suite runs it): glm/pretrain killed during a checkpoint save, killed
mid-step with its newest checkpoint damaged, finished runs rerun, NaN gradients, a run of
non-finite steps, and every bad-input class. `full`: every experiment; each gets the faults that need a run (kills, checkpoint damage,
workdir damage, NaN/Inf), some of the kinds in turn over the experiments (glm/pretrain gets
every kind), and every bad-input class.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import lzma
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))          # this checkout's jaxpapers, here and in the subprocesses
ENV = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
ENV.pop("JAXPAPERS_KILL_AT", None)
INPUT_SECONDS = 30   # bad input fails before any work: a run still going after this accepted it


@dataclasses.dataclass(frozen=True)
class Target:
  """An experiment as the suite runs it: the tiny preset plus `overrides` that keep it short and
  make at least one of its training stages checkpoint before its end. `train`: the config
  section the NaN/Inf faults set (None: the experiment's loop has no fault injector); `lr`: the
  learning-rate key the changed-config rerun and the optimizer checks set; `minutes`: what its
  faults took in the full preset of 2026-12-06 (--jobs starts the longest first)."""
  name: str
  overrides: tuple[str, ...]
  train: str | None
  lr: str
  minutes: float


TARGETS = [
    Target("glm/pretrain", ("--config.train.steps=8", "--config.train.ckpt_every=2",
                            "--config.train.eval_every=3"), "train", "train.lr", 21),
    Target("glm/quantize", ("--config.pretrain.train.ckpt_every=2",
                            "--config.pretrain.train.eval_every=3"), "pretrain.train",
           "pretrain.train.lr", 23),
    # its own loop (memory probes and timed steps): no checkpoints, no injector
    Target("gact/memory", ("--config.families=('transformer',)", "--config.levels=('L0','L2.2')"),
           None, "transformer.train.lr", 4.5),
    Target("kgt/queries", ("--config.finetune.steps=4", "--config.finetune.ckpt_every=2"),
           "finetune", "finetune.lr", 16),
    Target("cogvideo/t2v", ("--config.video_train.steps=4", "--config.video_train.ckpt_every=2"),
           "video_train", "video_train.lr", 21),
    Target("gebd/ladder", ("--config.train.ckpt_every=2",), "train", "base.lr", 14),
    # these two resume by finished method and seed (their checkpoints stay off)
    Target("pethead/suite", ("--config.seeds=1", "--config.tasks=('polarity',)",
                             "--config.full_lr_grid=(1e-4,)"), "train", "lr.full", 8),
    Target("retrieval/transfer", ("--config.seeds=1",), "train", "lr.ft", 7),
    Target("mooc/pretrain", ("--config.train.ckpt_every=2",), "train", "finetune.lr", 20),
    # (no data-scaling IDMs: one compiled IDM fewer; a run still takes ~75 s, mostly compiling)
    Target("vpt/pipeline", ("--config.idm.train.steps=4", "--config.idm.train.ckpt_every=2",
                            "--config.idm.scaling=()"), "idm.train", "idm.train.lr", 15),
    Target("iaad/sweep", (), None, "", 2.5),    # no training: a simulation sweep
]

# results.json keys that are readings of this machine, never compared (a part of the key's path
# matches); the full preset also drops the keys on which two uninterrupted runs disagree
VOLATILE = re.compile(r"(^|_)(time|times|seconds|minutes|wall|rss|mfu|peak|gflops?|speedup|ms|"
                      r"per_s|throughput|machine|version|host|date)(_|$)|^resumed_from$")


def volatile(key: str) -> bool:
  return any(VOLATILE.search(part) for part in key.split("."))


@dataclasses.dataclass
class Fault:
  target: str
  cls: str
  what: str
  ok: bool
  exit: int | None
  last_line: str
  traceback: bool
  lost: bool
  seconds: float


@dataclasses.dataclass
class Reference:
  """An uninterrupted run: its workdir, wall time, the kill points it passed, its results
  (flattened) and the keys a faulted run's results must equal."""
  workdir: Path
  wall: float
  trace: list[str]
  results: dict
  compared: set


class Suite:

  def __init__(self, tmp: Path, rng: random.Random):
    self.tmp, self.rng, self.faults, self.not_compared = tmp, rng, [], {}
    self.corpus = tmp / "corpus.txt"
    if not self.corpus.exists():     # (--jobs: the parent writes it before its workers start)
      from importlib import resources
      raw = resources.files("jaxpapers.data").joinpath("assets", "austen.txt.xz").read_bytes()
      part = tmp / f".corpus.{os.getpid()}"
      part.write_text(lzma.decompress(raw).decode("utf-8")[:400_000])
      os.replace(part, self.corpus)

  # ---------------------------------------------------------------- running and recording
  def args(self, t: Target, wd: Path, *extra) -> list[str]:
    data = [f"--config.data.corpus={self.corpus}"] if t.name in ("glm/pretrain", "gact/memory") else []
    data += [f"--config.pretrain.data.corpus={self.corpus}"] if t.name == "glm/quantize" else []
    return ["run", t.name, "--preset", "tiny", "--workdir", str(wd), *data, *t.overrides, *extra]

  def jp(self, args, env=None, wait=True):
    p = subprocess.Popen([sys.executable, "-m", "jaxpapers.cli", *map(str, args)],
                         env=dict(ENV, **(env or {})), cwd=self.tmp, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    if not wait:
      return p
    out, err = p.communicate(timeout=1800)
    return p.returncode, out, err

  def record(self, target, cls, what, code, err, t0, ok, lost=False) -> Fault:
    lines = err.strip().splitlines() or [""]
    f = Fault(target, cls, what, bool(ok), code, lines[-1][:240],
              any("Traceback" in l or "Event loop is closed" in l for l in lines), bool(lost),
              round(time.time() - t0, 1))
    self.faults.append(f)
    print(json.dumps(dataclasses.asdict(f)), flush=True)
    return f

  @staticmethod
  def one_line(code, err) -> bool:
    lines = err.strip().splitlines()
    return code == 2 and bool(lines) and lines[-1].startswith("error: ") and not any(
        "Traceback" in l or "Event loop is closed" in l for l in lines)

  def workdir(self, t: Target, name: str, copy_of: Path | None = None) -> Path:
    wd = self.tmp / f"{t.name.replace('/', '_')}_{name}"
    shutil.rmtree(wd, ignore_errors=True)
    if copy_of is not None:
      shutil.copytree(copy_of, wd)
    return wd

  # ---------------------------------------------------------------- the reference runs
  def reference(self, t: Target, full: bool) -> Reference | None:
    """The uninterrupted run (traced: where its steps, evaluations and saves fall) and, in the
    full preset, a second one started while a third start on its workdir is refused (the
    concurrent-start fault): the keys compared are those the two runs agree on."""
    wd, trace = self.workdir(t, "base"), self.tmp / f"{t.name.replace('/', '_')}_trace.txt"
    trace.unlink(missing_ok=True)
    t0 = time.time()
    code, _, err = self.jp(self.args(t, wd), env={"JAXPAPERS_FAULT_TRACE": str(trace)})
    if code != 0:
      self.record(t.name, "the uninterrupted run", "failed: no fault tried", code, err, t0, False)
      return None
    results = flat(json.loads((wd / "results.json").read_text()))
    ref = Reference(wd, time.time() - t0, trace.read_text().split("\n")[:-1], results,
                    {k for k in results if not volatile(k)})
    if not full:
      return ref
    wd2, t0 = self.workdir(t, "base2"), time.time()
    first = self.jp(self.args(t, wd2), wait=False)
    while first.poll() is None and not (wd2 / ".lock").exists():
      time.sleep(0.02)
    code, _, err = self.jp(self.args(t, wd2))
    first_running = first.poll() is None
    first.communicate()
    self.record(t.name, "concurrent start", "a second run on a workdir in use", code, err, t0,
                first_running and self.one_line(code, err) and first.returncode == 0)
    if first.returncode == 0:
      again = flat(json.loads((wd2 / "results.json").read_text()))
      ref.compared = {k for k in ref.compared if k in again and same(results[k], again[k])}
    self.not_compared[t.name] = sorted(k for k in results if k not in ref.compared)
    return ref

  def same_results(self, ref: Reference, wd: Path) -> tuple[bool, list[str]]:
    path = wd / "results.json"
    if not path.is_file():
      return False, ["no results.json"]
    if not ref.compared:
      return False, ["no figure to compare"]
    got = flat(json.loads(path.read_text()))
    bad = [k for k in sorted(ref.compared) if k not in got or not same(got[k], ref.results[k])]
    return not bad, bad

  # ---------------------------------------------------------------- process faults
  def kill_then_rerun(self, t, ref, cls, what, *, at=None, after=None, damage=None):
    """Kills a fresh run (at the kill point `at`, or `after` seconds), optionally damages what it
    left (`damage(wd)` returns "restart" when the rerun must refuse and need --restart), reruns
    it to the end and compares its results with the reference."""
    wd, t0 = self.workdir(t, "kill"), time.time()
    if at is not None:
      code, _, err = self.jp(self.args(t, wd), env={"JAXPAPERS_KILL_AT": at})
    else:
      p = self.jp(self.args(t, wd), wait=False)
      try:
        p.wait(timeout=after)
      except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
      p.communicate()
      code = p.returncode
    if code != -signal.SIGKILL:
      return self.record(t.name, cls, f"{what} (the run ended before the kill: exit {code})",
                         code, "", t0, False)
    expect = damage(wd) if damage else None
    code, _, err = self.jp(self.args(t, wd))
    seen, refused = err, True
    if expect == "restart":    # only unusable checkpoints: refused once, then --restart
      refused = self.one_line(code, err) and "--restart" in err
      code, _, err = self.jp(self.args(t, wd, "--restart"))
    ok, bad = self.same_results(ref, wd)
    if bad and code == 0:
      what += f" (differs: {', '.join(bad[:3])})"
    if damage is not None:     # the damage was found and set aside
      ok = ok and refused and "unusable checkpoint" in seen
    return self.record(t.name, cls, what, code, err, t0, code == 0 and ok, lost=code == 0 and not ok)

  def process_faults(self, t, ref, i, full=True):
    """SIGKILL during a step, during a checkpoint save (or, where the experiment saves none,
    while the report is written), after an evaluation before its row is written (where it
    evaluates), and one of: while the report is written, at a random time (in turn over the
    experiments; glm/pretrain gets both). The small preset: the kill during a save only."""
    n_steps, n_evals = ref.trace.count("step"), ref.trace.count("eval")
    n_saves = sum(e.startswith("save") for e in ref.trace)
    if not full:
      if n_saves:
        k = self.rng.randint(1, n_saves)
        self.kill_then_rerun(t, ref, "SIGKILL during a checkpoint save", f"save {k} of {n_saves}",
                             at=f"save:{k}")
      return
    if n_steps:
      k = self.rng.randint(1, n_steps)
      self.kill_then_rerun(t, ref, "SIGKILL during a step", f"step {k} of {n_steps}", at=f"step:{k}")
    kinds = ["save", *(["report", "random"] if i == 0 else [("report", "random")[i % 2]])]
    if not n_saves:     # (no checkpoint saves: the report instead, once)
      kinds = ["report", *(["random"] if "random" in kinds else [])]
    for kind in kinds:
      if kind == "save":
        k = self.rng.randint(1, n_saves)
        self.kill_then_rerun(t, ref, "SIGKILL during a checkpoint save", f"save {k} of {n_saves}",
                             at=f"save:{k}")
      elif kind == "report":
        self.kill_then_rerun(t, ref, "SIGKILL while the report is written", "after results.json",
                             at="report:1")
      else:
        s = round(self.rng.uniform(0.15, 0.9) * ref.wall, 1)
        self.kill_then_rerun(t, ref, "SIGKILL at a random time", f"after {s} s of {ref.wall:.0f}",
                             after=s)
    if n_evals:
      k = self.rng.randint(1, n_evals)
      self.kill_then_rerun(t, ref, "SIGKILL after an evaluation, before its row is written",
                           f"evaluation {k} of {n_evals}", at=f"eval:{k}")

  # ---------------------------------------------------------------- checkpoint faults
  @staticmethod
  def resumable_kill(ref) -> int | None:
    """The step after which a rerun restores a checkpoint: the first step that follows two saves
    within the same training run (so an older checkpoint is there to fall back to), else the
    first that follows one, else None."""
    n, saves, first = 0, 0, None
    for e in ref.trace:
      if e.startswith("train"):
        saves = 0
      elif e.startswith("save"):
        saves += 1
      elif e == "step":
        n += 1
        if saves >= 2:
          return n
        if saves == 1 and first is None:
          first = n
    return first

  def checkpoint_faults(self, t, ref, full, i):
    k = self.resumable_kill(ref)
    if k is None:
      return

    def latest(wd):
      return max((d for d in wd.rglob("checkpoints/*") if d.name.isdigit() and d.is_dir()),
                 key=lambda d: d.stat().st_mtime)

    def biggest_file(wd):
      return max((f for f in latest(wd).rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)

    def then_fallback(edit):
      def damage(wd):
        expect = None if any(x.name.isdigit() and x != latest(wd) for x in latest(wd).parent.iterdir()) \
            else "restart"
        edit(wd)
        return expect
      return damage

    def flip(wd):
      f = biggest_file(wd)
      raw = bytearray(f.read_bytes())
      mid = len(raw) // 2
      raw[mid:mid + 64] = bytes(x ^ 0xA5 for x in raw[mid:mid + 64])
      f.write_bytes(bytes(raw))

    def truncate(wd):
      f = biggest_file(wd)
      f.write_bytes(f.read_bytes()[:max(1, f.stat().st_size // 3)])

    def meta(wd):
      for f in latest(wd).rglob("*"):
        if f.is_file() and f.parent.name == "meta":
          f.write_text(f.read_text()[:-20] + "garbage")

    def everything(wd):
      for d in wd.rglob("checkpoints/*"):
        for f in d.rglob("*"):
          if f.is_file() and f.parent.name == "d":
            with f.open("r+b") as h:
              h.truncate(7)
      return "restart"

    faults = [("bit flip in a checkpoint", "64 bytes of the largest array file", then_fallback(flip)),
              ("truncated checkpoint file", "largest array file cut to a third", then_fallback(truncate)),
              ("deleted checkpoint file", "largest array file removed",
               then_fallback(lambda wd: biggest_file(wd).unlink())),
              ("damaged checkpoint metadata", "the checksums' JSON cut short", then_fallback(meta)),
              ("every checkpoint unreadable", "all array files cut to 7 bytes", everything)]
    chosen = faults[:1] if not full else faults if i == 0 else faults[:1] + [faults[1 + i % 4]]
    for cls, what, damage in chosen:
      self.kill_then_rerun(t, ref, cls, f"{what}, killed at step {k}", at=f"step:{k}", damage=damage)

  # ---------------------------------------------------------------- workdir faults
  def workdir_faults(self, t, ref, full):
    def snapshot(wd):
      return {str(f.relative_to(wd)): f.read_bytes() for f in sorted(wd.rglob("*")) if f.is_file()
              and "xla_cache" not in f.parts}

    wd, t0 = self.workdir(t, "rerun", ref.workdir), time.time()
    before = snapshot(wd)
    code, out, err = self.jp(self.args(t, wd))
    changed = snapshot(wd) != before
    self.record(t.name, "rerun of a finished run", "same config", code, err, t0,
                code == 0 and "nothing to do" in out and not changed, lost=changed)
    if t.lr:
      t0 = time.time()
      code, out, err = self.jp(self.args(t, wd, f"--config.{t.lr}=0.0123"))
      changed = snapshot(wd) != before
      self.record(t.name, "rerun of a finished run, config changed", "another lr", code, err, t0,
                  self.one_line(code, err) and not changed, lost=changed)
    if not full:
      return

    def unfinished(name):
      wd = self.workdir(t, name, ref.workdir)
      for f in ("finished.json", "results.json", "REPORT.md", "report.json"):
        (wd / f).unlink(missing_ok=True)
      return wd, time.time()

    wd, t0 = unfinished("stale")
    (wd / ".lock").write_text(json.dumps({"pid": dead_pid(), "host": os.uname().nodename}))
    code, _, err = self.jp(self.args(t, wd))
    ok, _ = self.same_results(ref, wd)
    self.record(t.name, "stale lock of a dead process", "taken over", code, err, t0,
                code == 0 and ok and "stale lock" in err, lost=code == 0 and not ok)
    for cls, name, edit in (("lock file not ours", ".lock", lambda s: "not a lock"),
                            ("truncated config.json", "config.json", lambda s: s[:len(s) // 2]),
                            ("truncated finished.json", "finished.json", lambda s: s[:len(s) // 2])):
      wd, t0 = self.workdir(t, "edit", ref.workdir), time.time()
      if name != "finished.json":
        (wd / "finished.json").unlink()
      path = wd / name
      path.write_text(edit(path.read_text() if path.exists() else ""))
      code, _, err = self.jp(self.args(t, wd))
      self.record(t.name, cls, name, code, err, t0, self.one_line(code, err))
    metrics = sorted(ref.workdir.rglob("metrics.jsonl"))
    if not metrics:
      return
    rel = metrics[-1].relative_to(ref.workdir)
    wd, t0 = unfinished("metrics")           # a kill mid-write: the last line cut short
    with (wd / rel).open("a") as f:
      f.write('{"step": 99999, "lo')
    code, _, err = self.jp(self.args(t, wd))
    ok, _ = self.same_results(ref, wd)
    self.record(t.name, "metrics.jsonl cut by a kill", str(rel), code, err, t0, code == 0 and ok,
                lost=code == 0 and not ok)
    wd, t0 = unfinished("metrics1")          # rows lost: the report cannot cover the run
    lines = (wd / rel).read_text().splitlines()
    (wd / rel).write_text("\n".join(lines[:len(lines) // 2]) + "\n")
    code, _, err = self.jp(self.args(t, wd))
    ok, _ = self.same_results(ref, wd)
    self.record(t.name, "metrics.jsonl rows lost", str(rel), code, err, t0,
                self.one_line(code, err) or (code == 0 and ok), lost=code == 0 and not ok)
    wd, t0 = unfinished("metrics2")
    lines = (wd / rel).read_text().splitlines()
    (wd / rel).write_text("\n".join(lines[:1] + ["garbage"] + lines[1:]) + "\n")
    code, _, err = self.jp(self.args(t, wd))
    ok, _ = self.same_results(ref, wd)
    self.record(t.name, "metrics.jsonl damaged mid-file", str(rel), code, err, t0,
                self.one_line(code, err) or (code == 0 and ok), lost=code == 0 and not ok)

  # ---------------------------------------------------------------- non-finite values
  def nonfinite_faults(self, t, ref, full, i):
    """NaN/Inf at step 1 in the loss, a gradient leaf, the updated parameters or the batch: the
    step is skipped with a warning naming the place, the run finishes; then NaN at every step:
    the cap on consecutive skips stops the run in one line."""
    if t.train is None:
      return
    kinds = [("loss", "nan", "non-finite loss"), ("grad", "nan", "non-finite gradient leaf"),
             ("grad", "inf", "non-finite gradient leaf"),
             ("param", "nan", "non-finite updated parameters"), ("data", "nan", "non-finite")]
    kinds = kinds[1:2] if not full else kinds if i == 0 else [kinds[i % 5]]
    for into, value, named in kinds:
      wd, t0 = self.workdir(t, "nan"), time.time()
      code, _, err = self.jp(self.args(t, wd, f"--config.{t.train}.inject_nan_step=1",
                                       f"--config.{t.train}.inject_nan_into={into}",
                                       f"--config.{t.train}.inject_value={value}"))
      place = {"loss": "the loss", "grad": "a gradient", "param": "the updated parameters",
               "data": "a batch"}[into]
      if into == "data" and self.one_line(code, err) and "no floating array" in err:
        continue      # integer batches only (token ids): no batch value can be NaN
      skipped = f"{named}" in err and "at step 1" in err and "batch skipped" in err
      self.record(t.name, f"{'NaN' if value == 'nan' else 'Inf'} in {place}",
                  "at step 1: skipped, the place named", code, err, t0, code == 0 and skipped)
    wd, t0 = self.workdir(t, "nan"), time.time()
    code, _, err = self.jp(self.args(t, wd, f"--config.{t.train}.inject_nan_step=0",
                                     f"--config.{t.train}.inject_nan_count=1000000",
                                     f"--config.{t.train}.max_consecutive_skips=2"))
    self.record(t.name, "non-finite steps in a row", "NaN at every step: stopped after 2", code,
                err, t0, self.one_line(code, err) and "in a row" in err)

  # ---------------------------------------------------------------- bad input, in one process
  def in_process(self, target, cls, what, args, wd=None) -> Fault:
    """Runs `jaxpapers ARGS` in this process (bad input fails before any work, so no subprocess
    is needed; a run still going after INPUT_SECONDS accepted it): exit 2, one error line, no
    traceback, and no workdir written."""
    from jaxpapers import cli
    t0, err = time.time(), io.StringIO()

    def accepted(*_):
      raise Accepted()
    signal.signal(signal.SIGALRM, accepted)
    signal.alarm(INPUT_SECONDS)
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
      try:
        code = cli.main([str(a) for a in args])
      except Accepted:
        err.write(f"(no error within {INPUT_SECONDS} s: the input was accepted and the run went on)\n")
        code = None
      except BaseException as e:  # noqa: BLE001 - a traceback the user would have seen
        import traceback
        err.write("Traceback (most recent call last):\n" + "".join(traceback.format_exception(e)))
        code = 1
      finally:
        signal.alarm(0)
    text = err.getvalue()
    written = wd is not None and Path(wd).exists()
    return self.record(target, cls, what + (" (the workdir was written)" if written else ""), code,
                       text, t0, self.one_line(code, text) and not written)

  def input_faults(self, full, glm_workdir=None):
    from fault_inputs import PWNED, bad_inputs    # noqa: PLC0415 - beside this file
    for target, cls, what, args, wd in bad_inputs(self.tmp, self.corpus, full, TARGETS, glm_workdir):
      f = self.in_process(target, cls, what, args, wd)
      if (self.tmp / "inputs" / PWNED).exists():   # a pickle's code ran: never survived
        f.ok, f.lost = False, True
        (self.tmp / "inputs" / PWNED).unlink()


class Accepted(BaseException):
  """Raised by the alarm in a bad-input run that did not fail."""


def flat(d, prefix=""):
  if isinstance(d, dict):
    return {k: v for key, val in d.items() for k, v in flat(val, f"{prefix}{key}.").items()}
  if isinstance(d, list):
    return {k: v for n, val in enumerate(d) for k, v in flat(val, f"{prefix}{n}.").items()}
  return {prefix[:-1]: d}


def same(a, b) -> bool:
  if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
    return True
  return a == b


def dead_pid() -> int:
  p = subprocess.Popen(["true"])
  p.wait()
  return p.pid


def table(faults: list[Fault]) -> str:
  by = defaultdict(list)
  for f in faults:
    by[f.cls].append(f)
  rows = ["| fault class | tried | survived | data lost | experiments |", "|---|---|---|---|---|"]
  for cls, fs in by.items():
    rows.append(f"| {cls} | {len(fs)} | {sum(f.ok for f in fs)} | {sum(f.lost for f in fs)} | "
                f"{len({f.target for f in fs})} |")
  return "\n".join(rows)


def run_targets(suite: Suite, names, full: bool, inputs: bool = True) -> None:
  glm_workdir = None
  for i, t in enumerate(TARGETS):     # i: which kinds of a rotation this experiment gets
    if t.name not in names:
      continue
    ref = suite.reference(t, full)
    if ref is None:
      continue
    if t.name == "glm/pretrain":
      glm_workdir = ref.workdir
    suite.process_faults(t, ref, i, full)
    suite.checkpoint_faults(t, ref, full, i)
    suite.workdir_faults(t, ref, full)
    suite.nonfinite_faults(t, ref, full, i)
  if inputs:
    suite.input_faults(full, glm_workdir)


def run_jobs(a, names, tmp: Path):
  """A work queue: each experiment is one worker process of this script (same seed, preset and
  folder; no bad-input faults), at most a.jobs at a time, the longest first; their JSON lines
  passed through. Returns their rows and not-compared keys. (Each worker starts its random
  choices from the seed, so kill points differ from a --jobs 1 run's.)"""
  queue = sorted((t for t in TARGETS if t.name in names), key=lambda t: -t.minutes)
  running, done = {}, []
  while queue or running:
    while queue and len(running) < a.jobs:
      t = queue.pop(0)
      slug = t.name.replace("/", "_")
      out, err = tmp / f"job_{slug}.json", tmp / f"job_{slug}.err"
      out.unlink(missing_ok=True)          # (a kept folder: never an earlier worker's rows)
      cmd = [sys.executable, __file__, "--preset", a.preset, "--seed", str(a.seed), "--keep",
             str(tmp), "--only", t.name, "--json", str(out), "--no_inputs",
             f"--xla_flags={a.xla_flags}"]
      with open(err, "w") as f:
        running[t.name] = (subprocess.Popen(cmd, stdout=sys.stdout, stderr=f), out, err)
    time.sleep(1)
    for name in [n for n, (p, *_) in running.items() if p.poll() is not None]:
      done.append((name, *running.pop(name)[1:]))
  rows, not_compared = [], {}
  for name, out, err in done:
    if out.is_file():
      r = json.loads(out.read_text())
      rows += r["rows"]
      not_compared.update(r["not_compared"])
    else:
      rows.append(dataclasses.asdict(Fault(name, "the uninterrupted run", f"worker failed: see {err}",
                                           False, None, "", True, False, 0.0)))
  return rows, not_compared


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--preset", choices=("small", "full"), default="small")
  ap.add_argument("--only", default="", help="comma-separated experiments (default: the preset's)")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--keep", default=None, help="keep the runs in this folder")
  ap.add_argument("--json", default=None, help="write every fault and the summary here")
  ap.add_argument("--jobs", type=int, default=1,
                  help="run the experiments in up to this many processes side by side, one "
                       "process per experiment (each keeps its rotation slot), then merge")
  ap.add_argument("--xla_flags", default="",
                  help="XLA_FLAGS of every `jaxpapers` subprocess (the test suite passes "
                       "--xla_backend_optimization_level=0: the same programs, compiled faster); "
                       "the in-process bad-input faults keep this process's")
  ap.add_argument("--no_inputs", action="store_true", help=argparse.SUPPRESS)   # (--jobs' workers)
  a = ap.parse_args(argv)
  ENV["XLA_FLAGS"] = a.xla_flags
  full = a.preset == "full"
  names = a.only.split(",") if a.only else ([t.name for t in TARGETS] if full else ["glm/pretrain"])
  unknown = set(names) - {t.name for t in TARGETS}
  if unknown:
    ap.error(f"unknown experiment(s) {', '.join(sorted(unknown))}")
  tmp = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="faults_"))
  tmp.mkdir(parents=True, exist_ok=True)
  sys.path.insert(0, str(Path(__file__).parent))
  suite, t_start = Suite(tmp, random.Random(a.seed)), time.time()
  if a.jobs > 1:
    rows, suite.not_compared = run_jobs(a, names, tmp)
    suite.faults = [Fault(**r) for r in rows]
    glm = tmp / "glm_pretrain_base"
    suite.input_faults(full, glm if (glm / "finished.json").is_file() else None)
  else:
    run_targets(suite, names, full, inputs=not a.no_inputs)
  fs = suite.faults
  summary = dict(preset=a.preset, faults=len(fs), classes=len({f.cls for f in fs}),
                 survived=sum(f.ok for f in fs), runs_lost=sum(f.lost for f in fs),
                 tracebacks=sum(f.traceback for f in fs), minutes=round((time.time() - t_start) / 60, 1))
  if not a.no_inputs:       # (a --jobs worker: its parent prints the merged table)
    print(table(fs))
    print(json.dumps(summary))
  if a.json:
    Path(a.json).write_text(json.dumps(dict(summary, rows=[dataclasses.asdict(f) for f in fs],
                                            not_compared=suite.not_compared), indent=1))
  if not a.keep:
    shutil.rmtree(tmp, ignore_errors=True)
  return 0 if summary["survived"] == len(fs) else 1


if __name__ == "__main__":
  sys.exit(main())
