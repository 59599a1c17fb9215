"""A built wheel, installed away from the checkout, lists and runs experiments: the configs and the
data ship inside the package (what `pip install git+URL` on Colab gets), not only in a checkout."""
import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from jaxpapers.registry import EXPERIMENTS

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_runs_experiments_outside_the_checkout(tmp_path):
  dist = tmp_path / "dist"
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                  "-w", str(dist), str(REPO)], check=True, cwd=tmp_path,
                 env=os.environ | {"PIP_NO_INDEX": "1"})
  wheel = next(dist.glob("jaxpapers-*.whl"))
  names = set(zipfile.ZipFile(wheel).namelist())
  for exp in EXPERIMENTS.values():
    assert f"jaxpapers/configs/{exp.config}" in names, exp.name
  assert {"jaxpapers/data/assets/austen.txt.xz", "jaxpapers/data/assets/kg/umls.tar.xz",
          "pallas_kernels/csrc/quant_matmul_cpu.cc"} <= names

  site = tmp_path / "site"
  subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                  "--target", str(site), str(wheel)], check=True, cwd=tmp_path)
  # -S: no site processing, so this environment's editable hook (a .pth file) does not run; the
  # wheel comes first on the path, this environment's dependencies after it
  env = os.environ | {"PYTHONPATH": os.pathsep.join([str(site), sysconfig.get_paths()["purelib"]])}
  cli = [sys.executable, "-S", "-m", "jaxpapers.cli"]
  where = subprocess.run([sys.executable, "-S", "-c", "import jaxpapers; print(jaxpapers.__file__)"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
  assert Path(where.stdout.strip()).is_relative_to(site)

  listing = subprocess.run(cli + ["list"], env=env, cwd=tmp_path, capture_output=True, text=True)
  assert listing.returncode == 0, listing.stderr
  for exp in EXPERIMENTS.values():
    assert exp.name in listing.stdout

  run = subprocess.run(cli + ["run", "iaad/sweep", "--preset", "tiny", "--workdir", "run",
                              "--config.report.gif=False"],
                       env=env, cwd=tmp_path, capture_output=True, text=True)
  assert run.returncode == 0, run.stderr[-2000:]
  results = json.loads((tmp_path / "run" / "results.json").read_text())
  assert results["levels"] == ["excellent", "bad"] and (tmp_path / "run" / "REPORT.md").is_file()
