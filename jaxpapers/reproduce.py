"""`jaxpapers reproduce [PAPER ...] [--preset quick] [--out DIR]`: every named paper's experiments
(all papers by default), one after another, then a static HTML dashboard of what they measured.

Each experiment runs as its own `jaxpapers run` process, its output in OUT/logs/, its workdir in
OUT/runs/ (so a crash or a missing optional dependency stops that experiment only, and a second
`reproduce` resumes: a finished run is not run again, an interrupted one resumes from its last
checkpoint; one that an earlier call finished is skipped). OUT/status.json records per experiment
its preset, exit code, time, command, and the machine and package versions it ran with (one --out
holds one preset). One progress bar counts experiments across papers. The dashboard
(OUT/dashboard/, `jaxpapers.dashboard`) is written at the end from status.json and the workdirs'
report.json, results.json and config.json.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from jaxpapers import dashboard, registry
from jaxpapers.core.errors import ConfigError
from jaxpapers.core.workdir import atomic_write_json, read_json

PACKAGES = ("jaxpapers", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "jraph",
            "craftax")


def machine() -> dict:
  """Where the runs ran: processor, cores, Python, the JAX backend and the package versions. The
  backend is asked in a child process: initialising it here would hold an accelerator's memory
  (JAX preallocates most of a GPU's) that the experiments' own processes need."""
  versions = {}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = "not installed"
  probe = subprocess.run(
      [sys.executable, "-c", "import jax; d = jax.devices(); "
       "print(jax.default_backend()); print(f'{len(d)} x {d[0].device_kind}')"],
      capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
  backend, devices = (probe.stdout.split("\n", 1) + [""])[:2] if probe.returncode == 0 else (
      "unknown", "unknown")
  return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
          "cpu_cores": os.cpu_count(), "python": platform.python_version(),
          "backend": backend.strip(), "devices": devices.strip(), "versions": versions}


def experiment_command(name: str, workdir: Path, preset: str | None) -> list[str]:
  cmd = ["run", name, "--workdir", str(workdir)]
  return cmd + (["--preset", preset] if preset else [])


def run(papers: list[str], preset: str | None, out: str | Path) -> int:
  """Runs the papers' experiments and writes the dashboard; 0 when every experiment finished."""
  chosen = [registry.paper(k) for k in (papers or registry.PAPERS)]
  out = Path(out)
  status_path = out / "status.json"
  status = read_json(status_path) if status_path.is_file() else {}
  todo = [(p.key, name) for p in chosen for name in p.experiments]
  for _, name in todo:
    if name in status and status[name].get("preset") != preset:
      raise ConfigError(f"{out} holds {name} run with preset {status[name].get('preset')!r}, not "
                        f"{preset!r}: give another --out")
  for sub in ("runs", "logs"):
    (out / sub).mkdir(parents=True, exist_ok=True)
  here = machine()
  failed = []
  with tqdm(total=len(todo), desc="reproduce", unit="experiment") as bar:
    for key, name in todo:
      slug = name.replace("/", "_")
      workdir, log = out / "runs" / slug, out / "logs" / f"{slug}.log"
      bar.set_postfix_str(name)
      done = status.get(name, {})
      if done.get("returncode") == 0 and (workdir / "finished.json").is_file():
        bar.update(1)                 # finished by an earlier call: its entry (time, machine) stays
        continue
      args = experiment_command(name, workdir, preset)
      t0 = time.perf_counter()
      with log.open("a") as f:
        f.write(f"$ jaxpapers {shlex.join(args)}\n")
        f.flush()
        rc = subprocess.run([sys.executable, "-m", "jaxpapers.cli", *args], stdout=f,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
      status[name] = {"paper": key, "preset": preset, "returncode": rc,
                      "seconds": time.perf_counter() - t0,
                      "workdir": str(workdir.resolve()), "log": str(log.resolve()),
                      "command": "jaxpapers " + shlex.join(args), "machine": here}
      atomic_write_json(status_path, status, indent=1)
      if rc != 0:
        failed.append(name)
        tqdm.write(f"{name}: failed (exit {rc}); see {log}")
      bar.update(1)
  shown = [k for k in registry.PAPERS                   # this call's papers and earlier calls'
           if any(p.key == k for p in chosen) or any(st["paper"] == k for st in status.values())]
  index = dashboard.write(out / "dashboard", status, shown)
  print(f"dashboard: {index}")
  if failed:
    print(f"{len(failed)} of {len(todo)} experiments failed: {', '.join(failed)}")
  return 1 if failed else 0
