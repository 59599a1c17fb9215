"""Two processes on localhost under jax.distributed train the same model as one process with
the same global mesh (2 devices, data-parallel)."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from jp_testutil import REPO, SUBPROCESS_XLA_FLAGS, tiny_glm_args


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _losses(workdir):
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path, small_corpus):
  # no generation prompts: samples are not compared here, and each prompt compiles a prefill and
  # a decode step in each of the three processes
  common = ["--config.train.steps=6", "--config.train.ckpt_every=3", "--config.mesh.shape=(2, 1)",
            "--config.generate.prompts=()"]
  # the one-process run compiles other programs than the pair (2 local devices, not 1), so the
  # three processes start together rather than one after the other
  env1 = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=2 {SUBPROCESS_XLA_FLAGS}",
              JAX_PLATFORMS="cpu")
  log_one = tmp_path / "one.log"       # a file, not a pipe: nobody reads it while the pair runs
  with open(log_one, "w") as f:
    one = subprocess.Popen([sys.executable, "-m", "jaxpapers.cli",
                            *tiny_glm_args(small_corpus, tmp_path / "one", *common)],
                           env=env1, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
  port = _free_port()
  env2 = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=1 {SUBPROCESS_XLA_FLAGS}",
              JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen([sys.executable, "-m", "jaxpapers.cli",
                             *tiny_glm_args(small_corpus, tmp_path / "two", *common),
                             f"--coordinator=127.0.0.1:{port}", "--num_processes=2",
                             f"--process_id={i}"],
                            env=env2, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  assert one.wait(timeout=600) == 0, log_one.read_text()[-3000:]
  assert all(p.returncode == 0 for p in procs), outs[0][-3000:] + outs[1][-3000:]
  r1 = json.loads((tmp_path / "one" / "results.json").read_text())
  r2 = json.loads((tmp_path / "two" / "results.json").read_text())
  assert r1["devices"] == r2["devices"] == 2
  np.testing.assert_allclose(_losses(tmp_path / "two"), _losses(tmp_path / "one"), rtol=1e-5)
  np.testing.assert_allclose(r2["val_loss"], r1["val_loss"], rtol=1e-5)
