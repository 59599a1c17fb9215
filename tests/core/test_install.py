"""A built wheel, installed away from the checkout, lists experiments and reproduces one with its
dashboard: the configs, data and templates ship inside the package (what `pip install git+URL` on
Colab gets), not only in a checkout."""
import json
import os
import shutil
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
  # built from a copy of the project's files (tracked or new, not ignored), so no build/ left in
  # the checkout can supply what package-data fails to
  src = tmp_path / "src"
  files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout.split("\n")
  for name in filter(None, files):
    if (REPO / name).is_file():
      (src / name).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(REPO / name, src / name)
  dist = tmp_path / "dist"
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                  "-w", str(dist), str(src)], check=True, cwd=tmp_path,
                 env=os.environ | {"PIP_NO_INDEX": "1"})
  wheel = next(dist.glob("jaxpapers-*.whl"))
  names = set(zipfile.ZipFile(wheel).namelist())
  for exp in EXPERIMENTS.values():
    assert f"jaxpapers/configs/{exp.config}" in names, exp.name
  assert {"jaxpapers/data/assets/austen.txt.xz", "jaxpapers/data/assets/kg/umls.tar.xz",
          "pallas_kernels/csrc/quant_matmul_cpu.cc", "jaxpapers/templates/index.html.j2",
          "jaxpapers/templates/paper.html.j2"} <= names

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

  # reproduce (a `jaxpapers run` process per experiment, then the dashboard from the shipped
  # templates), then again: the finished run is resumed, not run again
  rep = cli + ["reproduce", "iaad", "--preset", "tiny", "--out", "rep"]
  first = subprocess.run(rep, env=env, cwd=tmp_path, capture_output=True, text=True)
  assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
  status = json.loads((tmp_path / "rep" / "status.json").read_text())
  assert list(status) == ["iaad/sweep"] and status["iaad/sweep"]["returncode"] == 0
  results = json.loads((tmp_path / "rep" / "runs" / "iaad_sweep" / "results.json").read_text())
  assert results["levels"] == ["excellent", "bad"]
  index = (tmp_path / "rep" / "dashboard" / "index.html").read_text()
  assert 'href="iaad.html"' in index and ">finished<" in index
  page = (tmp_path / "rep" / "dashboard" / "iaad.html").read_text()
  assert '<table class="claims">' in page and "metrics_vs_network.png" in page
  assert "jaxpapers run iaad/sweep" in page
  log = (tmp_path / "rep" / "logs" / "iaad_sweep.log").read_text()
  second = subprocess.run(rep, env=env, cwd=tmp_path, capture_output=True, text=True)
  assert second.returncode == 0, second.stderr[-2000:]
  assert json.loads((tmp_path / "rep" / "status.json").read_text()) == status     # not run again
  assert (tmp_path / "rep" / "logs" / "iaad_sweep.log").read_text() == log
  other = subprocess.run(cli + ["reproduce", "iaad", "--out", "rep"], env=env, cwd=tmp_path,
                         capture_output=True, text=True)
  assert other.returncode == 2 and "preset 'tiny'" in other.stderr
