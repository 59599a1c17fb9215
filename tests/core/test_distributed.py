"""Two processes on localhost under jax.distributed train the same model as one process with
the same global mesh (2 devices, data-parallel)."""
import json
import os
import shutil
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
  # the one-process reference first; the pair then finds its prepared data (tokenizer, tokens)
  # in its workdir: otherwise process 1 waits at the data barrier while process 0 trains the
  # tokenizer, and on a loaded machine gloo's context set-up timed out (30 s) at that barrier
  env1 = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=2 {SUBPROCESS_XLA_FLAGS}",
              JAX_PLATFORMS="cpu")
  one = subprocess.run([sys.executable, "-m", "jaxpapers.cli",
                        *tiny_glm_args(small_corpus, tmp_path / "one", *common)],
                       env=env1, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=600)
  assert one.returncode == 0, one.stdout[-3000:]
  (tmp_path / "two").mkdir()
  for name in ("tokenizer.json", "tokens.npz", "data.json"):
    shutil.copy(tmp_path / "one" / name, tmp_path / "two" / name)
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
  assert all(p.returncode == 0 for p in procs), outs[0][-3000:] + outs[1][-3000:]
  r1 = json.loads((tmp_path / "one" / "results.json").read_text())
  r2 = json.loads((tmp_path / "two" / "results.json").read_text())
  assert r1["devices"] == r2["devices"] == 2
  np.testing.assert_allclose(_losses(tmp_path / "two"), _losses(tmp_path / "one"), rtol=1e-5)
  np.testing.assert_allclose(r2["val_loss"], r1["val_loss"], rtol=1e-5)
