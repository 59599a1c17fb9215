"""Fault injection through the real `jaxpapers` command (issue 17): every experiment that trains,
killed at chosen points, its checkpoints and workdir files damaged, started twice at once, fed
malformed files of every format the project reads and NaN/Inf in data, loss, gradients and
parameters. Prints one JSON line per fault, then the table of fault classes.

  python experiments/bench/faults.py [--preset small|full] [--only EXP[,EXP]] [--seed N]
                                     [--keep DIR] [--json FILE]

A fault is `ok` when the behaviour is the one issue 17 asks for: a run killed and rerun (or
resumed past a damaged checkpoint) ends with results equal to an uninterrupted run's in every
figure that two uninterrupted runs agree on (timings and memory readings differ between any two
runs); a finished run is left byte for byte as it was; a user error is one `error:` line on
stderr, exit code 2, no traceback, and (for bad input) no workdir written. `lost` marks a fault
after which a finished run was changed or a resumed run's results differ.

`small` (the default test suite runs it): glm/pretrain, one fault of each kind that needs a run
and every bad-input class. `full`: every experiment, every class (>= 200 faults, ~1 h on 2 cores).
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
import pickle
import random
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
TRACE = "JAXPAPERS_FAULT_TRACE"


@dataclasses.dataclass(frozen=True)
class Target:
  """An experiment as the suite runs it: the tiny preset plus `overrides` that keep it short and
  make at least one of its training stages checkpoint before its end; `train` names the config
  section the NaN/Inf faults use; `lr` the learning rate the changed-config rerun and the
  optimizer checks set (default: the train section's)."""
  name: str
  overrides: tuple[str, ...]
  train: str
  lr_key: str = ""

  @property
  def lr(self) -> str:
    return self.lr_key or f"{self.train}.lr"


TARGETS = [
    Target("glm/pretrain", ("--config.train.steps=8", "--config.train.ckpt_every=2",
                            "--config.train.eval_every=3"), "train"),
    Target("glm/quantize", ("--config.pretrain.train.ckpt_every=2",
                            "--config.pretrain.train.eval_every=3"), "pretrain.train"),
    Target("gact/memory", ("--config.families=('transformer',)", "--config.levels=('L0','L2.2')"),
           "train"),
    Target("kgt/queries", ("--config.finetune.steps=4", "--config.finetune.ckpt_every=2"), "finetune"),
    Target("cogvideo/t2v", ("--config.video_train.steps=4", "--config.video_train.ckpt_every=2"),
           "video_train"),
    Target("gebd/ladder", ("--config.train.ckpt_every=2",), "train", "base.lr"),
    # these two resume by finished method and seed (their checkpoints stay off)
    Target("pethead/suite", ("--config.seeds=1", "--config.tasks=('polarity',)",
                             "--config.full_lr_grid=(1e-4,)"), "train", "lr.full"),
    Target("retrieval/transfer", ("--config.seeds=1",), "train", "lr.ft"),
    Target("mooc/pretrain", ("--config.train.ckpt_every=2",), "train", "finetune.lr"),
    Target("vpt/pipeline", ("--config.idm.train.steps=4", "--config.idm.train.ckpt_every=2"),
           "idm.train"),
    Target("iaad/sweep", (), ""),
]

# results.json keys two uninterrupted runs may disagree on are found by running twice; these words
# mark readings that are never compared even when the two runs happened to agree
VOLATILE = ("time", "per_s", "tokens_s", "speed", "mfu", "rss", "wall", "second", "minute", "peak",
            "gflop", "machine", "version", "host", "date", "_ms", "ms_", "throughput",
            "resumed")   # resumed_from: where the run restarted, the one figure a resume changes


INPUT_SECONDS = 30   # bad input fails before any work: a run still going after this accepted it


class Accepted(BaseException):
  """Raised by the alarm in a bad-input run that did not fail."""


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
  s: float


class Suite:

  def __init__(self, tmp: Path, rng: random.Random):
    self.tmp, self.rng, self.faults, self.unstable = tmp, rng, [], {}
    self.corpus = tmp / "corpus.txt"
    from importlib import resources
    raw = resources.files("jaxpapers.data").joinpath("assets", "austen.txt.xz").read_bytes()
    self.corpus.write_text(lzma.decompress(raw).decode("utf-8")[:400_000])

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

  def record(self, target, cls, what, code, err, t0, ok, lost=False):
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

  def copy(self, src: Path, name: str) -> Path:
    wd = self.tmp / name
    shutil.rmtree(wd, ignore_errors=True)
    shutil.copytree(src, wd)
    return wd

  # ---------------------------------------------------------------- the reference runs
  def base(self, t: Target, full: bool):
    """The uninterrupted run and (full) a second one under a concurrent start: the reference
    results, the keys compared (those the two runs agree on; small: every key but VOLATILE's),
    the trace of kill points, the files of the finished run."""
    key = t.name.replace("/", "_")
    wd, trace = self.tmp / f"{key}_base", self.tmp / f"{key}_trace.txt"
    shutil.rmtree(wd, ignore_errors=True)
    trace.unlink(missing_ok=True)
    t0 = time.time()
    code, _, err = self.jp(self.args(t, wd), env={TRACE: str(trace)})
    wall = time.time() - t0
    self.record(t.name, "uninterrupted run", "the reference run", code, err, t0, code == 0)
    if code != 0:
      return None
    r1 = flat(json.loads((wd / "results.json").read_text()))
    b = dict(wd=wd, wall=wall, trace=trace.read_text().split("\n")[:-1], ref=r1,
             stable={k for k in r1 if not any(w in k.lower() for w in VOLATILE)})
    if not full:
      return b
    # a second start while the first runs: refused in one line; the first finishes
    wd2, t0 = self.tmp / f"{key}_base2", time.time()
    shutil.rmtree(wd2, ignore_errors=True)
    a = self.jp(self.args(t, wd2), wait=False)
    while a.poll() is None and not (wd2 / ".lock").exists():
      time.sleep(0.02)
    code, _, err = self.jp(self.args(t, wd2))
    a_running = a.poll() is None
    a_out, a_err = a.communicate()
    self.record(t.name, "concurrent start", "a second run on a workdir in use", code, err, t0,
                a_running and self.one_line(code, err) and a.returncode == 0)
    r2 = flat(json.loads((wd2 / "results.json").read_text())) if a.returncode == 0 else {}
    b["stable"] = {k for k in b["stable"] if k in r2 and same(r1[k], r2[k])}
    b["unstable"] = sorted(k for k in r1 if k not in b["stable"])
    self.unstable[t.name] = b["unstable"]
    return b

  def same_results(self, b, wd: Path) -> tuple[bool, list[str]]:
    path = wd / "results.json"
    if not path.is_file():
      return False, ["no results.json"]
    got = flat(json.loads(path.read_text()))
    bad = [k for k in sorted(b["stable"]) if k not in got or not same(got[k], b["ref"][k])]
    return not bad, bad

  # ---------------------------------------------------------------- process faults
  def kill_then_rerun(self, t, b, cls, what, *, at=None, after=None, damage=None):
    """Kills a fresh run (at a kill point `at`, or `after` seconds), optionally damages what it
    left (`damage(wd) -> description` of the expected rerun outcome), reruns it to the end and
    compares its results with the reference."""
    wd, t0 = self.tmp / f"{t.name.replace('/', '_')}_kill", time.time()
    shutil.rmtree(wd, ignore_errors=True)
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
    if expect == "restart":    # only unusable checkpoints: refused once, then --restart
      refused = self.one_line(code, err) and "--restart" in err
      code, _, err = self.jp(self.args(t, wd, "--restart"))
      ok, bad = self.same_results(b, wd)
      return self.record(t.name, cls, what, code, err, t0, refused and code == 0 and ok,
                         lost=code == 0 and not ok)
    ok, bad = self.same_results(b, wd)
    if bad and code == 0:
      what += f" (differs: {', '.join(bad[:3])})"
    if damage is not None:     # the damage was found, and the run went back to an older one
      ok = ok and "unusable checkpoint" in err
    return self.record(t.name, cls, what, code, err, t0, code == 0 and ok, lost=code == 0 and not ok)

  def process_faults(self, t, b, i):
    """SIGKILL during a step, and one of: during a checkpoint save, while the report is written,
    at a random time (in turn over the experiments; glm/pretrain gets all, and an evaluation)."""
    tr = b["trace"]
    n_steps, n_saves, n_evals = tr.count("step"), sum(e.startswith("save") for e in tr), tr.count("eval")
    if n_steps:
      k = self.rng.randint(1, n_steps)
      self.kill_then_rerun(t, b, "SIGKILL during a step", f"step point {k} of {n_steps}", at=f"step:{k}")
    kinds = ["save", "report", "random"]
    for kind in kinds if i == 0 else [kinds[i % 3]]:
      if kind == "save" and n_saves:
        k = self.rng.randint(1, n_saves)
        self.kill_then_rerun(t, b, "SIGKILL during a checkpoint save", f"save {k} of {n_saves}",
                             at=f"save:{k}")
      elif kind == "report":
        self.kill_then_rerun(t, b, "SIGKILL while the report is written", "after results.json",
                             at="report:1")
      else:
        s = round(self.rng.uniform(0.15, 0.9) * b["wall"], 1)
        self.kill_then_rerun(t, b, "SIGKILL at a random time", f"after {s} s of {b['wall']:.0f}",
                             after=s)
    if n_evals and i % 2 == 0:
      k = self.rng.randint(1, n_evals)
      self.kill_then_rerun(t, b, "SIGKILL during an evaluation", f"evaluation {k} of {n_evals}",
                           at=f"eval:{k}")

  # ---------------------------------------------------------------- checkpoint faults
  def resumable_kill(self, b):
    """The step point after which a rerun restores a checkpoint: the first step that follows two
    saves within the same training run (so an older checkpoint is there to fall back to), else
    the first that follows one, else None."""
    n, saves, first = 0, 0, None
    for e in b["trace"]:
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

  def checkpoint_faults(self, t, b, full, i=0):
    k = self.resumable_kill(b)
    if k is None:
      return
    latest = lambda wd: max((d for d in wd.rglob("checkpoints/*") if d.name.isdigit() and d.is_dir()),
                            key=lambda d: d.stat().st_mtime)

    def data_file(wd):
      return max((f for f in latest(wd).rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)

    def flip(wd):
      f = data_file(wd)
      b_ = bytearray(f.read_bytes())
      mid = len(b_) // 2
      b_[mid:mid + 64] = bytes(x ^ 0xA5 for x in b_[mid:mid + 64])
      f.write_bytes(bytes(b_))
      return self.fallback_or_restart(wd)

    def truncate(wd):
      f = data_file(wd)
      f.write_bytes(f.read_bytes()[:max(1, f.stat().st_size // 3)])
      return self.fallback_or_restart(wd)

    def delete(wd):
      data_file(wd).unlink()
      return self.fallback_or_restart(wd)

    def meta(wd):
      for f in latest(wd).rglob("*"):
        if f.is_file() and f.parent.name == "meta":
          f.write_text(f.read_text()[:-20] + "garbage")
      return self.fallback_or_restart(wd)

    def everything(wd):
      for d in wd.rglob("checkpoints/*"):
        for f in d.rglob("*"):
          if f.is_file() and f.parent.name == "d":
            with f.open("r+b") as h:
              h.truncate(7)
      return "restart"

    faults = [("bit flip in a checkpoint", "64 bytes of the largest array file", flip),
              ("truncated checkpoint file", "largest array file cut to a third", truncate),
              ("deleted checkpoint file", "largest array file removed", delete),
              ("damaged checkpoint metadata", "the checksums' JSON cut short", meta),
              ("every checkpoint unreadable", "all array files cut to 7 bytes", everything)]
    chosen = faults if i == 0 else faults[:1] + [faults[1 + i % 4]]
    for cls, what, fn in (chosen if full else faults[:1]):
      self.kill_then_rerun(t, b, cls, what, at=f"step:{k}", damage=fn)

  @staticmethod
  def fallback_or_restart(wd):
    """A damaged latest checkpoint is set aside; the rerun resumes from an older one of the
    same directory, or, when it was the only one, needs --restart."""
    d = max((d for d in wd.rglob("checkpoints/*") if d.name.isdigit() and d.is_dir()),
            key=lambda d: d.stat().st_mtime)
    others = [x for x in d.parent.iterdir() if x.name.isdigit() and x != d]
    return None if others else "restart"

  # ---------------------------------------------------------------- workdir faults
  def workdir_faults(self, t, b, full):
    def snapshot(wd):
      return {str(f.relative_to(wd)): f.read_bytes() for f in sorted(wd.rglob("*")) if f.is_file()
              and "xla_cache" not in f.parts}

    wd, t0 = self.copy(b["wd"], f"{t.name.replace('/', '_')}_rerun"), time.time()
    before = snapshot(wd)
    code, out, err = self.jp(self.args(t, wd))
    self.record(t.name, "rerun of a finished run", "same config", code, err, t0,
                code == 0 and "nothing to do" in out and snapshot(wd) == before,
                lost=snapshot(wd) != before)
    if t.train:
      t0 = time.time()
      code, out, err = self.jp(self.args(t, wd, f"--config.{t.lr}=0.0123"))
      self.record(t.name, "rerun of a finished run, config changed", "another lr", code, err, t0,
                  self.one_line(code, err) and snapshot(wd) == before, lost=snapshot(wd) != before)

    def unfinished(name):
      wd = self.copy(b["wd"], f"{t.name.replace('/', '_')}_{name}")
      for f in ("finished.json", "results.json", "REPORT.md", "report.json"):
        (wd / f).unlink(missing_ok=True)
      return wd, time.time()

    if not full:
      return
    wd, t0 = unfinished("stale")
    (wd / ".lock").write_text(json.dumps({"pid": dead_pid(), "host": os.uname().nodename}))
    code, _, err = self.jp(self.args(t, wd))
    ok, _ = self.same_results(b, wd)
    self.record(t.name, "stale lock of a dead process", "taken over", code, err, t0,
                code == 0 and ok and "stale lock" in err, lost=code == 0 and not ok)
    cases = [("lock file not ours", ".lock", lambda s: "not a lock"),
             ("truncated config.json", "config.json", lambda s: s[:len(s) // 2])]
    if full:
      cases += [("truncated finished.json", "finished.json", lambda s: s[:len(s) // 2])]
    for cls, name, edit in cases:
      wd, t0 = self.copy(b["wd"], f"{t.name.replace('/', '_')}_edit"), time.time()
      if name != "finished.json":
        (wd / "finished.json").unlink()
      path = wd / name
      path.write_text(edit(path.read_text() if path.exists() else ""))
      code, _, err = self.jp(self.args(t, wd))
      self.record(t.name, cls, name, code, err, t0, self.one_line(code, err))
    metrics = sorted(b["wd"].rglob("metrics.jsonl"))
    if metrics and full:
      rel = metrics[-1].relative_to(b["wd"])
      wd, t0 = unfinished("metrics")
      lines = (wd / rel).read_text().splitlines()
      (wd / rel).write_text("\n".join(lines[:len(lines) // 2] + ["{\"step\": 1, \"lo"]) )
      self.record(t.name, "metrics.jsonl cut by a kill", str(rel), *self.rerun_compare(t, b, wd, t0))
      wd, t0 = unfinished("metrics2")
      lines = (wd / rel).read_text().splitlines()
      (wd / rel).write_text("\n".join(lines[:1] + ["garbage"] + lines[1:]) + "\n")
      code, _, err = self.jp(self.args(t, wd))
      self.record(t.name, "metrics.jsonl damaged mid-file", str(rel), code, err, t0,
                  self.one_line(code, err) or (code == 0 and self.same_results(b, wd)[0]),
                  lost=code == 0 and not self.same_results(b, wd)[0])

  def rerun_compare(self, t, b, wd, t0):
    code, _, err = self.jp(self.args(t, wd))
    ok, _ = self.same_results(b, wd)
    return code, err, t0, code == 0 and ok, code == 0 and not ok

  # ---------------------------------------------------------------- non-finite values
  def nonfinite_faults(self, t, b, full, i=0):
    if not t.train:
      return
    kinds = [("loss", "nan"), ("grad", "nan"), ("grad", "inf"), ("param", "nan"), ("data", "nan")]
    if not full:
      kinds = kinds[1:2]
    elif i > 0:
      kinds = [kinds[i % 5]]
    for into, value in kinds:
      wd, t0 = self.tmp / f"{t.name.replace('/', '_')}_nan", time.time()
      shutil.rmtree(wd, ignore_errors=True)
      code, _, err = self.jp(self.args(t, wd, f"--config.{t.train}.inject_nan_step=1",
                                       f"--config.{t.train}.inject_nan_into={into}",
                                       f"--config.{t.train}.inject_value={value}"))
      if code != 0 and "holds no floating array" in err:
        continue   # this experiment's batches are integers only: no float data to poison
      warned = "batch skipped" in err and "non-finite" in err
      place = {"loss": "the loss", "grad": "a gradient", "param": "the updated parameters",
               "data": "a batch"}[into]
      self.record(t.name, f"{'NaN' if value == 'nan' else 'Inf'} in {place}", "at step 1: skipped",
                  code, err, t0, code == 0 and warned)
    wd, t0 = self.tmp / f"{t.name.replace('/', '_')}_nan", time.time()
    shutil.rmtree(wd, ignore_errors=True)
    code, _, err = self.jp(self.args(t, wd, f"--config.{t.train}.inject_nan_step=0",
                                     f"--config.{t.train}.inject_nan_count=1000000",
                                     f"--config.{t.train}.max_consecutive_skips=2",
                                     f"--config.{t.train}.steps=4"))
    self.record(t.name, "non-finite steps in a row", "every step NaN: stopped after 2", code, err, t0,
                self.one_line(code, err) and "in a row" in err)

  # ---------------------------------------------------------------- bad input, in one process
  def in_process(self, target, cls, what, args, *, wd=None, expect_written=False):
    """Runs `jaxpapers ARGS` in this process (bad input fails before any work, so no subprocess
    is needed): exit 2, one error line, no traceback, and no workdir written."""
    from jaxpapers import cli
    t0, err = time.time(), io.StringIO()

    def accepted(*_):
      raise Accepted()
    signal.signal(signal.SIGALRM, accepted)
    signal.alarm(INPUT_SECONDS)
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
      try:
        code = cli.main([str(a) for a in args])
      except SystemExit as e:
        code = e.code
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
    for target, cls, what, args, wd in bad_inputs(self.tmp, self.corpus, full, glm_workdir):
      f = self.in_process(target, cls, what, args, wd=wd)
      if (self.tmp / "inputs" / PWNED).exists():   # a pickle's code ran: never survived
        f.ok, f.lost = False, True
        (self.tmp / "inputs" / PWNED).unlink()


def flat(d, prefix=""):
  out = {}
  if isinstance(d, dict):
    for k, v in d.items():
      out.update(flat(v, f"{prefix}{k}."))
  elif isinstance(d, list):
    for i, v in enumerate(d):
      out.update(flat(v, f"{prefix}{i}."))
  else:
    out[prefix[:-1]] = d
  return out


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


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--preset", choices=("small", "full"), default="small")
  ap.add_argument("--only", default="", help="comma-separated experiments (default: the preset's)")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--keep", default=None, help="keep the runs in this folder")
  ap.add_argument("--json", default=None, help="write every fault and the summary here")
  a = ap.parse_args(argv)
  full = a.preset == "full"
  names = a.only.split(",") if a.only else ([t.name for t in TARGETS] if full else ["glm/pretrain"])
  unknown = set(names) - {t.name for t in TARGETS}
  if unknown:
    ap.error(f"unknown experiment(s) {', '.join(sorted(unknown))}")
  tmp = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="faults_"))
  tmp.mkdir(parents=True, exist_ok=True)
  sys.path.insert(0, str(Path(__file__).parent))
  suite, t_start = Suite(tmp, random.Random(a.seed)), time.time()
  glm_workdir = None
  for i, t in enumerate(TARGETS):     # i: which faults of a rotation this experiment gets
    if t.name not in names:
      continue
    b = suite.base(t, full)
    if b is None:
      continue
    if t.name == "glm/pretrain":
      glm_workdir = b["wd"]
    if full:
      suite.process_faults(t, b, i)
    suite.checkpoint_faults(t, b, full, i)
    suite.workdir_faults(t, b, full)
    suite.nonfinite_faults(t, b, full, i)
  suite.input_faults(full, glm_workdir)
  fs = suite.faults
  summary = dict(preset=a.preset, faults=len(fs), classes=len({f.cls for f in fs}),
                 survived=sum(f.ok for f in fs), runs_lost=sum(f.lost for f in fs),
                 tracebacks=sum(f.traceback for f in fs), minutes=round((time.time() - t_start) / 60, 1))
  print(table(fs))
  print(json.dumps(summary))
  if a.json:
    Path(a.json).write_text(json.dumps(dict(summary, rows=[dataclasses.asdict(f) for f in fs],
                                            not_compared=suite.unstable), indent=1))
  if not a.keep:
    shutil.rmtree(tmp, ignore_errors=True)
  return 0 if summary["survived"] == len(fs) else 1


if __name__ == "__main__":
  sys.exit(main())
