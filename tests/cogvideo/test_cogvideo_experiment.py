"""cogvideo/t2v end to end (tiny preset) and the user-facing errors of its generate command."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxpapers import cli
from jaxpapers.cogvideo import experiments
from jp_testutil import REPO, SUBPROCESS_XLA_FLAGS


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """The tiny preset through the `jaxpapers` command, then `jaxpapers generate` on its workdir, in
  one subprocess with one CPU device (the 8 fake devices of the test process split the CPU's
  thread pool eight ways and made this run twice as slow)."""
  wd = tmp_path_factory.mktemp("cogvideo")
  script = ("import sys; from jaxpapers import cli; "
            f"assert cli.main(['run', 'cogvideo/t2v', '--preset', 'tiny', '--workdir', {str(wd)!r}]) == 0; "
            f"sys.exit(cli.main(['generate', '--workdir', {str(wd)!r}, '--prompt', "
            "'a bag moving up quickly', '--fps', '8', '--num', '4', "
            f"'--out', {str(wd / 'gen.gif')!r}]))")
  env = dict(os.environ, XLA_FLAGS=SUBPROCESS_XLA_FLAGS + " --xla_force_host_platform_device_count=1",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return wd, proc.stdout


def test_tiny_run_writes_every_result_and_the_report(run_dir):
  wd, _ = run_dir
  saved = json.loads((wd / "results.json").read_text())
  for key in ("caption_acc", "fd", "speed_error"):
    assert set(saved[key]) == {"inherited", "scratch", "one_stage"}, key
  for name in ("inherited", "scratch", "one_stage"):
    acc = saved["caption_acc"][name]
    assert set(acc) >= {"object", "direction", "speed", "mean"}
    assert all(0.0 <= acc[k] <= 1.0 for k in ("object", "direction", "speed", "mean"))
    assert np.isfinite(saved["fd"][name]) and saved["fd"][name] >= 0
  assert 0.0 < saved["vq_recon_mse"] < 0.2
  assert saved["equal_compute"]["steps"] == 2
  assert set(saved["paired_bootstrap"]) == {"inherited-scratch", "inherited-one_stage"}
  assert len(saved["train"]["inherited"]["val_loss_by_frame"]) == 5
  assert "## Ablation (equal compute)" in (wd / "REPORT.md").read_text()
  for f in ("strips.png", "videos.gif", "loss.png", "vq.npz", "classifier.npz"):
    assert (wd / f).stat().st_size > 0, f


def test_generate_writes_a_gif_of_the_requested_length(run_dir):
  """Key frames at 4 fps + one interpolation pass: 9 frames at 8 fps, 4 videos."""
  wd, stdout = run_dir
  from PIL import Image
  assert Image.open(wd / "gen.gif").n_frames == 9
  assert (wd / "gen.png").stat().st_size > 0
  assert "4 video(s) of 9 frames at 8 fps" in stdout


@pytest.mark.parametrize("args, needle", [
    (["--prompt=a zebra moving left slowly"], "unknown word"),
    (["--prompt=a bag moving left slowly", "--fps=16"], "frame rate 16"),
    (["--prompt="], "empty"),
    (["--prompt=a bag moving left slowly", "--model=giant"], "unknown video model"),
])
def test_bad_generate_input_is_one_line(run_dir, capsys, args, needle):
  wd, _ = run_dir
  assert cli.main(["generate", f"--workdir={wd}"] + args) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and needle in err, err


def test_a_workdir_of_another_experiment_is_one_line(tmp_path, capsys):
  """A workdir whose run is another experiment: `generate` says so in one line, and loading its
  checkpoints as CogVideo's is refused."""
  (tmp_path / "config.json").write_text(json.dumps({"experiment": "kgt/queries"}))
  assert cli.main(["generate", f"--workdir={tmp_path}", "--prompt=a bag moving up quickly"]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "'kgt/queries' run" in err, err
  from jaxpapers.core.errors import JaxpapersError
  with pytest.raises(JaxpapersError, match="not cogvideo/t2v"):
    experiments.load_trained(tmp_path, "inherited")
