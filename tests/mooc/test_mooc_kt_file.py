"""`--config.kt_file`: ours (pre-trained on the file), scratch, DKT and SAKT on a DKT-format
file; a malformed file fails before any work, with one line naming the file and line."""
import numpy as np

from jaxpapers import cli
from jaxpapers.core.config import load_config_file
from jaxpapers.core.mesh import make_mesh
from jaxpapers.mooc import experiments, formats
from jaxpapers.registry import configs_root


def test_kt_file_path(tmp_path):
  """Ours (pre-trained on the file), scratch, DKT and SAKT on a DKT-format file."""
  rng = np.random.default_rng(0)
  skill = rng.normal(size=6)
  qs = [rng.integers(0, 6, rng.integers(3, 12)) for _ in range(90)]
  cs = [(rng.random(len(q)) < 1 / (1 + np.exp(-skill[q]))).astype(int) for q in qs]
  path = tmp_path / "kt.csv"
  formats.write_dkt_csv(path, qs, cs)
  c = load_config_file(configs_root() / "mooc/pretrain.py", "tiny")
  c.kt_file, c.progress = str(path), False
  f = experiments.run_kt_file(c, tmp_path / "kt", make_mesh((-1,), ("data",)), False)
  assert f["students"] == 90 and f["questions"] == 6 and f["format"] == "dkt"
  for m in ("pretrained", "scratch", "dkt", "sakt"):
    assert 0 <= f[m]["auc"]["mean"] <= 1


def test_bad_kt_file_fails_before_any_work(tmp_path, capsys):
  bad = tmp_path / "bad.csv"
  bad.write_text("2\n1,2\n1\n")
  code = cli.main(["run", "mooc/pretrain", "--preset", "tiny", "--workdir", str(tmp_path / "wd"),
                   f"--config.kt_file={bad}"])
  err = capsys.readouterr().err
  assert code == 2 and f"{bad}:3: 1 correctness values where line 1 says 2" in err
  assert not (tmp_path / "wd" / "seed0").exists()
