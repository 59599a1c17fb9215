"""Fault injection on `jaxpapers run glm/pretrain --preset tiny` (issue 17): every row of the
issue's table, replayed through the real command; prints one JSON line per fault.

  python experiments/bench/faults.py [--keep DIR]

Each line: the fault, the exit code, the last stderr line, whether any traceback was printed,
the seconds it took, and `ok` (the behaviour the issue asks for: correct, or one line and exit 2).
"""
import json
import lzma
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))          # this checkout's jaxpapers, here and in the subprocesses
ENV = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
ARGS = ["--config.train.steps=60", "--config.train.ckpt_every=10", "--config.train.log_every=10",
        "--config.train.eval_every=0"]


def jp(*args, wait=True):
  p = subprocess.Popen([sys.executable, "-m", "jaxpapers.cli", *map(str, args)], env=ENV, cwd=ROOT,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  if not wait:
    return p
  out, err = p.communicate(timeout=900)
  return p.returncode, out, err


def run_args(corpus, wd, *extra):
  return ["run", "glm/pretrain", "--preset", "tiny", "--workdir", wd, f"--config.data.corpus={corpus}",
          *ARGS, *extra]


def report(fault, code, err, t0, ok, **extra):
  lines = err.strip().splitlines() or [""]
  print(json.dumps({"fault": fault, "exit": code, "last_line": lines[-1][:300],
                    "traceback": any("Traceback" in l for l in lines), "s": round(time.time() - t0, 1),
                    "ok": bool(ok), **extra}), flush=True)


def one_line(code, err):
  lines = err.strip().splitlines()
  return code == 2 and lines and lines[-1].startswith("error: ") and not any(
      "Traceback" in l or "Event loop is closed" in l for l in lines)


def unfinish(wd):
  """The workdir as a run killed after its last checkpoint leaves it."""
  for name in ("finished.json", "results.json", "REPORT.md"):
    (wd / name).unlink(missing_ok=True)


def main():
  tmp = Path(sys.argv[sys.argv.index("--keep") + 1]) if "--keep" in sys.argv else Path(tempfile.mkdtemp())
  tmp.mkdir(parents=True, exist_ok=True)
  corpus = tmp / "corpus.txt"
  raw = resources.files("jaxpapers.data").joinpath("assets", "austen.txt.xz").read_bytes()
  corpus.write_text(lzma.decompress(raw).decode("utf-8")[:400_000])
  base = tmp / "base"
  t0 = time.time()
  code, _, err = jp(*run_args(corpus, base))
  report("uninterrupted base run", code, err, t0, code == 0)
  ref = json.loads((base / "results.json").read_text())

  def copy(name):
    wd = tmp / name
    shutil.rmtree(wd, ignore_errors=True)
    shutil.copytree(base, wd)
    return wd

  # a checkpoint's data file with 64 bytes flipped, size unchanged
  wd, t0 = copy("flip"), time.time()
  unfinish(wd)
  data = max((f for f in (wd / "checkpoints" / "60").rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)
  b = bytearray(data.read_bytes())
  b[len(b) // 2:len(b) // 2 + 64] = bytes(x ^ 0xA5 for x in b[len(b) // 2:len(b) // 2 + 64])
  data.write_bytes(bytes(b))
  code, _, err = jp(*run_args(corpus, wd))
  report("flip 64 bytes in a checkpoint", code, err, t0,
         code == 0 and (wd / "checkpoints" / "60.corrupt").is_dir() and "resumed from the checkpoint at step 50" in err,
         why=[l[:200] for l in err.splitlines() if "checkpoint at step 60" in l])

  # rerun a finished run
  wd, t0 = copy("rerun"), time.time()
  before = (wd / "results.json").read_bytes(), (wd / "config.json").read_bytes()
  code, out, err = jp(*run_args(corpus, wd))
  report("rerun a finished run", code, err, t0,
         code == 0 and "nothing to do" in out and before == ((wd / "results.json").read_bytes(), (wd / "config.json").read_bytes()))
  code, out, err = jp(*run_args(corpus, wd, "--config.train.lr=0.01"))
  report("rerun a finished run, changed lr", code, err, t0, one_line(code, err))

  # SIGKILL after checkpoint 20, rerun
  wd, t0 = tmp / "kill", time.time()
  shutil.rmtree(wd, ignore_errors=True)
  p = jp(*run_args(corpus, wd), wait=False)
  while p.poll() is None and not ((wd / "checkpoints").is_dir() and any(
      x.name.isdigit() and int(x.name) >= 20 for x in (wd / "checkpoints").iterdir())):
    time.sleep(0.02)
  killed = p.poll() is None
  p.send_signal(signal.SIGKILL)
  p.communicate()
  code, _, err = jp(*run_args(corpus, wd))
  got = json.loads((wd / "results.json").read_text()) if code == 0 else {}
  report("SIGKILL after checkpoint 20, rerun", code, err, t0,
         killed and code == 0 and all(got.get(k) == ref[k] for k in ("final_loss", "skipped_steps", "val_loss")),
         final_loss=[got.get("final_loss"), ref["final_loss"]])

  # every checkpoint unreadable, rerun, rerun again
  wd, t0 = copy("unreadable"), time.time()
  unfinish(wd)
  for f in (wd / "checkpoints").rglob("*"):
    if f.is_file() and f.parent.name == "d":
      with f.open("r+b") as h:
        h.truncate(7)
  code, _, err = jp(*run_args(corpus, wd))
  report("every checkpoint unreadable, rerun", code, err, t0, one_line(code, err))
  code, _, err = jp(*run_args(corpus, wd))
  report("... rerun again", code, err, t0, one_line(code, err) and "--restart" in err)

  # two runs on one workdir at once
  wd, t0 = tmp / "two", time.time()
  shutil.rmtree(wd, ignore_errors=True)
  a = jp(*run_args(corpus, wd, "--config.train.steps=400"), wait=False)
  while a.poll() is None and not (wd / ".lock").exists():
    time.sleep(0.02)
  code, _, err = jp(*run_args(corpus, wd, "--config.train.steps=400"))
  a_running = a.poll() is None
  a_code = a.wait()
  report("two runs on one workdir at once", code, err, t0, a_running and one_line(code, err) and a_code == 0)

  # config files that fail; truncated workdir JSON; bad values; missing inputs
  for name, body in (("syntax", "def get_config(arg):\n  return {\n"),
                     ("raises", "def get_config(arg):\n  raise KeyError(arg)\n")):
    f, t0 = tmp / f"{name}.py", time.time()
    f.write_text(body)
    code, _, err = jp("run", f"--config={f}:tiny", "--workdir", tmp / f"cfg_{name}")
    report(f"--config= a file that {'has a syntax error' if name == 'syntax' else 'raises'}", code, err, t0,
           one_line(code, err))
  for name in ("config.json", "data.json"):
    wd, t0 = copy(f"trunc_{name}"), time.time()
    unfinish(wd)
    text = (wd / name).read_text()
    (wd / name).write_text(text[:len(text) // 2])
    code, _, err = jp(*run_args(corpus, wd))
    report(f"truncated {name}", code, err, t0, one_line(code, err))
  for override in ("--config.train.lr=inf", "--config.train.clip=-1", "--config.train.b2=5",
                   "--config.mesh.shape=(3, 1)"):
    t0, wd = time.time(), tmp / "bad"
    shutil.rmtree(wd, ignore_errors=True)
    code, _, err = jp(*run_args(corpus, wd, override))
    report(override, code, err, t0, one_line(code, err) and not wd.exists())
  t0 = time.time()
  code, _, err = jp(*run_args(tmp / "missing.txt", tmp / "bad"))
  report("missing corpus", code, err, t0, one_line(code, err) and not (tmp / "bad").exists())
  t0, wd = time.time(), tmp / "lr1e30"
  shutil.rmtree(wd, ignore_errors=True)
  code, _, err = jp(*run_args(corpus, wd, "--config.train.lr=1e30", "--config.train.steps=12"))
  report("--config.train.lr=1e30", code, err, t0, one_line(code, err))

  # generate
  wd, t0 = tmp / "nockpt", time.time()
  wd.mkdir(exist_ok=True)
  shutil.copy(base / "config.json", wd / "config.json")
  code, _, err = jp("generate", "--workdir", wd, "--prompt", "x")
  report("generate on a workdir with no checkpoint", code, err, t0,
         one_line(code, err) and not (wd / "checkpoints").exists())
  for flags in (["--prompt", " ".join(["It is a truth universally acknowledged"] * 10)],
                ["--prompt", "x", "--temperature", "0"], ["--prompt", "x", "--top_p", "0"],
                ["--prompt", "x", "--max_new_tokens", "-3"]):
    t0 = time.time()
    code, _, err = jp("generate", "--workdir", base, *flags)
    report(f"generate {' '.join(flags)[:60]}", code, err, t0, one_line(code, err))

  # a 111-byte BetaE pickle of shared nested tuples
  from jaxpapers.core.errors import DataError
  from jaxpapers.kgt import kg, queries
  from jaxpapers.kgt.betae_format import load_betae, write_betae
  d = write_betae(queries.generate(kg.load("nations"), {"train": {"1p": 5}, "valid": {"1p": 2},
                                                        "test": {"1p": 2}}, seed=0), tmp / "betae")
  x = 0
  for _ in range(22):
    x = (x, x)
  (d / "train-queries.pkl").write_bytes(pickle.dumps(defaultdict(set, {queries.STRUCTURES["1p"]: {x}}), protocol=4))
  t0 = time.time()
  try:
    load_betae(d)
    report("BetaE pickle of 2^22-fold shared tuples", 0, "", t0, False)
  except DataError as e:
    report(f"BetaE pickle of 2^22-fold shared tuples ({(d / 'train-queries.pkl').stat().st_size} bytes)",
           2, f"error: {e}", t0, time.time() - t0 < 1.0)
  if "--keep" not in sys.argv:
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
