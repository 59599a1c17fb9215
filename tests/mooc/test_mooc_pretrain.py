"""`jaxpapers run mooc/pretrain` end to end (tiny, on the 8-device mesh): every task's metric for
pretrained, scratch and each baseline in results.json; the knowledge-tracing file path by flag;
bad values are one-line errors."""
import json

import numpy as np
import pytest

from jaxpapers import cli
from jaxpapers.core.config import load_config_file
from jaxpapers.core.errors import ConfigError
from jaxpapers.core.mesh import make_mesh
from jaxpapers.mooc import experiments, formats
from jaxpapers.registry import experiments_root


def test_pretrain_end_to_end(tmp_path):
  wd = tmp_path / "wd"
  assert cli.main(["run", "mooc/pretrain", "--preset", "tiny", "--workdir", str(wd),
                   "--config.progress=False"]) == 0
  r = json.loads((wd / "results.json").read_text())
  expect = {"recommendation": {"pretrained", "scratch", "sasrec", "next_in_course", "popularity"},
            "knowledge_tracing": {"pretrained", "scratch", "dkt", "sakt"},
            "dropout": {"pretrained", "scratch", "logistic_regression"},
            "resource": {"pretrained", "scratch", "behaviour_stats", "train_mean"}}
  for task, methods in expect.items():
    assert methods <= set(r[task]), task
    metric = experiments.MAIN_METRIC[task]
    for m in methods:
      v = r[task][m][metric]["mean"]
      assert v == v, (task, m)                       # a number, not NaN
    d = r[task]["pretrained_minus_scratch"]
    assert d["metric"] == metric and len(d["bootstrap95"]) == 1
  assert 0 <= r["recommendation"]["pretrained"]["hr@10"]["mean"] <= 1
  report = (wd / "REPORT.md").read_text()
  assert "Knowledge tracing" in report and (wd / "pretrain_loss.png").is_file()
  # the simulated answers were exported in the DKT layout (the file path's input)
  kt = formats.read_dkt_csv(wd / "kt_simulated_dkt.csv")
  assert len(kt.questions) > 100 and kt.n_questions > 10


def test_kt_file_path(tmp_path):
  """Ours (pre-trained on the file), scratch, DKT and SAKT on a DKT-format file."""
  rng = np.random.default_rng(0)
  skill = rng.normal(size=6)
  qs = [rng.integers(0, 6, rng.integers(3, 12)) for _ in range(90)]
  cs = [(rng.random(len(q)) < 1 / (1 + np.exp(-skill[q]))).astype(int) for q in qs]
  path = tmp_path / "kt.csv"
  formats.write_dkt_csv(path, qs, cs)
  c = load_config_file(experiments_root() / "mooc/configs/pretrain.py", "tiny")
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


@pytest.mark.parametrize("key, value, what", [
    ("students.guess", "0.95", "guess + slip"),
    ("model.max_len", "16", "model.max_len"),
    ("split.test", "0.95", "split.test"),
    ("world.n_courses", "0", "n_courses"),
    ("kt_format", "'csv'", "kt_format"),
])
def test_bad_values_fail_at_start(key, value, what):
  from jaxpapers.core.config import apply_overrides
  c = load_config_file(experiments_root() / "mooc/configs/pretrain.py", "tiny")
  apply_overrides(c, {key: value})
  with pytest.raises(ConfigError, match=what.replace("+", "\\+")):
    experiments.validate(c)
