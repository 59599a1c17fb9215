"""`jaxpapers run gebd/ladder` end to end (tiny, 8-device mesh) and `jaxpapers run gebd/score`
on files in the Kinetics-GEBD layout; bad input is one line naming what is wrong."""
import json
import pickle

import pytest

from jaxpapers import cli
from jaxpapers.gebd.experiments import LADDER


def test_ladder_end_to_end(tmp_path):
  wd = tmp_path / "wd"
  assert cli.main(["run", "gebd/ladder", "--preset", "tiny", "--workdir", str(wd),
                   "--config.progress=False"]) == 0
  r = json.loads((wd / "results.json").read_text())
  assert set(r["f1"]) == set(LADDER)
  assert all(0.0 <= r["f1"][k] <= 1.0 for k in LADDER)
  assert list(r["f1_curve"]) == [f"{0.05 * i:.2f}" for i in range(1, 11)]
  assert r["f1_curve"]["0.05"] == pytest.approx(r["f1"][r["best"]])
  report = (wd / "REPORT.md").read_text()
  assert "The ladder" in report and (wd / "test_videos.png").stat().st_size > 10_000
  # the ladder's claims are its paired changes, one row each (one seed: no verdict)
  assert "| F1@0.05 change soft - baseline | +0.50 (a gain) |" in report
  assert "| F1@0.05 change mae - align | -0.14 (level with it" in report
  assert report.count("n/a (one seed)") == 5
  assert (wd / "f1_curve.png").exists()
  # the benchmark's annotation files are in the Kinetics-GEBD layout and score with gebd/score
  gt = wd / "seed0" / "gebd_synth_test.pkl"
  videos = pickle.loads(gt.read_bytes())
  preds = {vid: v["substages_timestamps"][0] for vid, v in videos.items()}
  pred_file = tmp_path / "preds.pkl"
  pred_file.write_bytes(pickle.dumps(preds))
  assert cli.main(["run", "gebd/score", "--workdir", str(tmp_path / "score"),
                   f"--config.gt_file={gt}", f"--config.pred_file={pred_file}"]) == 0
  s = json.loads((tmp_path / "score" / "results.json").read_text())
  assert s["f1"] > 0.9            # rater 0's own boundaries: every scored video's best rater matches


def run_cli(capsys, *args) -> tuple[int, str]:
  code = cli.main(list(args))
  err = capsys.readouterr().err.strip()
  return code, err


def test_score_bad_input(tmp_path, capsys):
  gt = tmp_path / "gt.pkl"
  gt.write_bytes(pickle.dumps({"abc": dict(fps=4.0, video_duration=10.0, num_frames=40,
                                           substages_timestamps=[[2.0]])}))
  unknown = tmp_path / "p1.pkl"
  unknown.write_bytes(pickle.dumps({"abc": [2.0], "nope": [1.0]}))
  code, err = run_cli(capsys, "run", "gebd/score", "--workdir", str(tmp_path / "a"),
                      f"--config.gt_file={gt}", f"--config.pred_file={unknown}")
  assert code == 2 and "'nope'" in err and "\n" not in err
  bad = tmp_path / "p2.pkl"
  bad.write_bytes(pickle.dumps({"abc": "2.0"}))
  code, err = run_cli(capsys, "run", "gebd/score", "--workdir", str(tmp_path / "b"),
                      f"--config.gt_file={gt}", f"--config.pred_file={bad}")
  assert code == 2 and "'abc'" in err and "\n" not in err


def test_ladder_bad_values(tmp_path, capsys):
  for arg, key in [("--config.mae.tube=3", "mae"), ("--config.thresholds=(1.5,)", "thresholds"),
                   ("--config.base.glue_prob=2.0", "base.glue_prob")]:
    code, err = run_cli(capsys, "run", "gebd/ladder", "--preset", "tiny", "--workdir",
                        str(tmp_path / "w"), arg)
    assert code == 2 and key in err and "\n" not in err, (arg, err)


def test_glue_augmentation_and_rater_targets():
  import numpy as np
  from jaxpapers.gebd.experiments import BoundaryBatches
  frames = np.arange(3, dtype=np.uint8)[:, None, None, None, None] * np.ones((3, 40, 1, 1, 1), np.uint8)
  targets = np.zeros((3, 2, 40), np.float32)
  batch = BoundaryBatches(frames, targets, batch=16, seed=0, glue_prob=1.0)(0)
  for f, t in zip(batch["frames"][..., 0, 0, 0], batch["target"]):
    g = int(np.nonzero(t == 0.5)[0][1])
    assert 10 <= g <= 30 and list(np.nonzero(t)[0]) == [g - 1, g]
    assert (f[:g] == f[0]).all() and (f[g:] == f[g]).all()      # two videos spliced at g
  assert (frames[:, :, 0, 0, 0] == np.arange(3)[:, None]).all()   # the source is not modified
