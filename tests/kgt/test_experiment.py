"""`jaxpapers run kgt/queries --preset tiny` end to end: results.json keys, the report, the
`explain` command, and one-line errors for bad input."""
import json

import pytest

from jaxpapers.cli import main
from jaxpapers.kgt import queries as Q


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  wd = tmp_path_factory.mktemp("kgt_tiny")
  # GQE and Q2B train and are scored by the same code as BetaE (test_baselines.py tests each)
  code = main(["run", "kgt/queries", "--preset", "tiny", "--workdir", str(wd),
               "--config.models=('kgtransformer','betae')", "--config.ablations=()",
               "--config.per_type.types=('2i',)", "--config.per_type.steps=2",
               "--config.per_type.eval_every=1"])
  assert code == 0
  return wd


def test_results_have_mrr_per_type_and_averages(tiny_run):
  r = json.loads((tiny_run / "results.json").read_text())
  for model in ("kgtransformer", "betae"):
    row = r["nations"][model]
    assert set(Q.TYPES) | {"avg_in", "avg_out"} <= set(row)
    assert all(0.0 < row[k] <= 1.0 for k in row)
    assert row["avg_in"] == pytest.approx(sum(row[t] for t in Q.IN_DOMAIN) / 5)
  assert r["details"]["nations"]["explanations"], "reasoning paths are reported"
  report = (tiny_run / "REPORT.md").read_text()
  assert "| kgtransformer |" in report and "reasoning paths" in report
  # every model's test types were scored with the points its validation Hits@3 chose
  seed0 = r["details"]["nations"]["seed0"]
  for model in ("kgtransformer", "betae"):
    sel = seed0[model]["selection"]
    assert sel["metric"] == "hits3" and [p["step"] for p in sel["curve"]] == [1, 2]
    assert set(sel["chosen"]) == set(Q.TYPES) | {"*"} and set(sel["chosen"].values()) <= {1, 2}
    for t in Q.TYPES:
      best = max(p[t] for p in sel["curve"])
      assert next(p["step"] for p in sel["curve"] if p[t] == best) == sel["chosen"][t]
    assert r["seeds"]["nations"][model]["avg_in"]["values"] == [row_in := r["nations"][model]["avg_in"]]
    kept = {int(f.stem[5:]) for f in (tiny_run / "nations" / "seed0" / model / "select").glob("step_*.npz")}
    assert kept == set(sel["chosen"].values()), (model, kept)
    assert row_in == seed0[model]["test"]["avg_in"]["mrr"]
  assert r["paired"]["nations"]["kgtransformer - betae"]["avg_in"]["n"] == 1
  # 2i fine-tuned on its own (official `reasoning_2i`) from the multi-task point chosen for it
  pt = seed0["kgtransformer"]["per_type"]
  assert set(pt) == {"2i"} and pt["2i"]["from_step"] == seed0["kgtransformer"]["selection"]["chosen"]["2i"]
  assert [p["step"] for p in pt["2i"]["selection"]["curve"]] == [1, 2]
  assert (tiny_run / "nations" / "seed0" / "kgtransformer" / "finetune_2i").is_dir()


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
                        ("--config.seeds=0", "seeds"),
                        ("--config.eval.select_metric=auc", "eval.select_metric"),
                        ("--config.ablations=('no_moe',)", "ablations"),
                        ("--config.per_type.types=('1p',)", "per_type.types"),
                        ("--config.datasets=('atlantis',)", "atlantis")]:
    code = main(["run", "kgt/queries", "--preset", "tiny", "--workdir", str(tmp_path), override])
    assert code == 2
    assert msg in capsys.readouterr().err
