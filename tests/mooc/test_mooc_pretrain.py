"""`jaxpapers run mooc/pretrain` end to end (tiny, on the 8-device mesh): every task's metric for
pretrained, scratch and each baseline in results.json; bad values are one-line errors. (The
knowledge-tracing file path is in test_mooc_kt_file.py, so that the two long tests run on
different workers.)"""
import json

import pytest

from jaxpapers import cli
from jaxpapers.core.config import load_config_file
from jaxpapers.core.errors import ConfigError
from jaxpapers.mooc import experiments, formats
from jaxpapers.registry import configs_root


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


@pytest.mark.parametrize("key, value, what", [
    ("students.guess", "0.95", "guess + slip"),
    ("model.max_len", "16", "model.max_len"),
    ("split.test", "0.95", "split.test"),
    ("world.n_courses", "0", "n_courses"),
    ("kt_format", "'csv'", "kt_format"),
])
def test_bad_values_fail_at_start(key, value, what):
  from jaxpapers.core.config import apply_overrides
  c = load_config_file(configs_root() / "mooc/pretrain.py", "tiny")
  apply_overrides(c, {key: value})
  with pytest.raises(ConfigError, match=what.replace("+", "\\+")):
    experiments.validate(c)
