"""`jaxpapers run kgt/queries --preset tiny` end to end: results.json keys, the report, the
`explain` command, and one-line errors for bad input."""
import json

import pytest

from jaxpapers.cli import main
from jaxpapers.kgt import queries as Q


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  wd = tmp_path_factory.mktemp("kgt_tiny")
  code = main(["run", "kgt/queries", "--preset", "tiny", "--workdir", str(wd),
               "--config.ablations=()"])
  assert code == 0
  return wd


def test_results_have_mrr_per_type_and_averages(tiny_run):
  r = json.loads((tiny_run / "results.json").read_text())
  for model in ("kgtransformer", "gqe", "q2b", "betae"):
    row = r["nations"][model]
    assert set(Q.TYPES) | {"avg_in", "avg_out"} <= set(row)
    assert all(0.0 < row[k] <= 1.0 for k in row)
    assert row["avg_in"] == pytest.approx(sum(row[t] for t in Q.IN_DOMAIN) / 5)
  assert r["details"]["nations"]["explanations"], "reasoning paths are reported"
  report = (tiny_run / "REPORT.md").read_text()
  assert "| kgtransformer |" in report and "reasoning paths" in report


def test_explain_command_prints_the_reasoning_path(tiny_run, capsys):
  code = main(["explain", "--workdir", str(tiny_run), "--dataset", "nations", "--qtype", "2p",
               "--anchors", "poland", "--relations", "commonbloc0,officialvisits"])
  out = capsys.readouterr().out
  assert code == 0
  assert "variable 1:" in out and "answer:" in out
  for bad, msg in [(["--anchors", "atlantis", "--relations", "embassy,embassy"], "unknown entity 'atlantis'"),
                   (["--anchors", "uk", "--relations", "embassy,flies"], "unknown relation 'flies'"),
                   (["--anchors", "uk", "--relations", "embassy"], "a 2p query has 1 anchor(s) and 2 relation(s)")]:
    code = main(["explain", "--workdir", str(tiny_run), "--dataset", "nations", "--qtype", "2p", *bad])
    assert code == 2
    assert msg in capsys.readouterr().err


def test_bad_config_values_fail_before_work(tmp_path, capsys):
  for override, msg in [("--config.model.gate=top1", "model.gate"),
                        ("--config.models=('kgtransformer','transe')", "models"),
                        ("--config.queries.generator=betae", "queries.generator"),
                        ("--config.baselines.betae_layers=0", "baselines.betae_layers"),
                        ("--config.datasets=('atlantis',)", "atlantis")]:
    code = main(["run", "kgt/queries", "--preset", "tiny", "--workdir", str(tmp_path), override])
    assert code == 2
    assert msg in capsys.readouterr().err
