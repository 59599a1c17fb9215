"""`jaxpapers run gact/memory --preset tiny`: the results.json keys the issue names per family,
every level's row (the checkpointed ones compared with ckpt), a batch that ran in a child
process; bad levels and families are one clear error line."""
import copy
import json

import numpy as np
import pytest

from jaxpapers.cli import main
from jaxpapers.configs.gact.memory import get_config
from jaxpapers.gact import experiments as X
from jaxpapers.gact.report import write


@pytest.fixture(scope="module")
def gnn_run(tmp_path_factory):
  """The GCN family (the transformer and ResNet run the same `run_levels`; their blocks are
  tested in test_levels.py and test_compress.py), L0 and L2.2 for two seeds, the largest batch
  of each run for one step in a child process. The checkpointed levels go through the same
  runner (their wrappers and probes: test_levels.py); their summary rows: below."""
  wd = tmp_path_factory.mktemp("gact") / "g"
  assert main(["run", "gact/memory", "--preset", "tiny", "--workdir", str(wd),
               "--config.families=('gnn',)", "--config.levels=('L0','L2.2')",
               "--config.executed_levels=('L0','L2.2')"]) == 0
  return wd, json.loads((wd / "results.json").read_text())


def test_memory_experiment_writes_the_named_results(gnn_run):
  wd, results = gnn_run
  r = results["gnn"]
  for key in ("memory_ratio_L2.2", "max_batch_ratio_L2.2", "loss_delta_L2.2",
              "step_time_ratio_L2.2", "adaptive_variance_ratio", "loss_seed_spread_L0"):
    assert isinstance(r[key], float), key
  # at this toy size one layer's working set dominates (1.33x measured); the quick preset's
  # figures are in experiments/gact/README.md. Here only how the variance ratio is made is
  # checked (whether adaptive beats uniform on the GCN: the xfail below)
  top = r["levels"]["L2.2"]
  assert r["memory_ratio_L2.2"] > 1.1, r
  assert r["adaptive_variance_ratio"] == pytest.approx(
      top["variance_adaptive"] / top["variance_uniform"], rel=1e-6)
  assert set(r["levels"]) == {"L0", "L2.2"}
  assert [s["seed"] for s in r["seeds"]["L2.2"]] == [0, 1] and len(r["loss_delta_L2.2_per_seed"]) == 2
  l0 = r["levels"]["L0"]
  for x in (top, l0):     # a batch that ran (its loss is finite): the compiled search's
    assert x["executed"]["batch"] == x["max_batch"] == x["max_batch_compiled"] > 0
    assert x["executed"]["steps"] == 1 and np.isfinite(x["executed"]["loss"])
    # the child's own peak (VmHWM), not its parent's inherited through vfork + exec
    assert 2**20 < x["executed"]["peak_rss_bytes"] < 8 * 2**30
  assert len(top["allocations"]) == 2 and set(top["bits"][0]) <= {1, 2, 4, 8, 32}
  # every saved activation is a unit: per layer the linear's input and LayerNorm's x_hat
  assert top["avg_bits"] <= 2.0 and len(top["unit_sizes"]) == 2 * 2
  assert "| L2.2 | no |" in (wd / "REPORT.md").read_text()
  assert (wd / "gnn_bits_L2.2.png").stat().st_size > 0


@pytest.mark.xfail(strict=True, reason="issue 21, not met for the GCN: adaptive bits have 9.3x "
                   "uniform's gradient variance here (1.1x in the quick preset); GACT's 1-bit "
                   "probes mispredict LayerNorm's normalised output (experiments/gact/README.md)")
def test_gcn_adaptive_bits_beat_uniform_ones(gnn_run):
  _, results = gnn_run
  assert results["gnn"]["adaptive_variance_ratio"] < 1.0


def test_checkpointed_rows_are_compared_with_ckpt(gnn_run, tmp_path):
  """`memory_ratio_L2.2_ckpt` = ckpt / L2.2_ckpt, the checkpointed rows marked, *_ckpt measured
  against ckpt (ckpt itself against L0), a level whose batch was not run reported as compiled only: the summary and the
  report of the run above with two checkpointed levels added (their bytes made up)."""
  _, results = gnn_run
  r = copy.deepcopy(results["gnn"])
  for k in [k for k in r if k not in ("levels", "seeds", "what")]:
    del r[k]
  for name, like, act in (("ckpt", "L0", 3_000_000), ("L2.2_ckpt", "L2.2", 1_200_000)):
    r["levels"][name] = {**r["levels"][like], "act_bytes": act, "max_batch": None, "executed": None}
  X._summarise(r)
  assert r["memory_ratio_L2.2_ckpt"] == pytest.approx(2.5)
  assert r["levels"]["ckpt"]["memory_ratio"] == pytest.approx(r["levels"]["L0"]["act_bytes"] / 3e6)
  assert r["memory_ratio_L2.2"] == results["gnn"]["memory_ratio_L2.2"]   # still against L0
  c = get_config("tiny")
  c.families, c.levels = ("gnn",), ("L0", "L2.2", "ckpt", "L2.2_ckpt")
  write(tmp_path, "test", c, {"gnn": r})
  report = (tmp_path / "REPORT.md").read_text()
  assert "| L2.2_ckpt | yes |" in report and "| ckpt | yes |" in report and "| L0 | no |" in report
  assert "ckpt / L2.2_ckpt (both checkpointed) | no figure" in report and "2.50x" in report


@pytest.mark.parametrize("override, message", [
    ("--config.levels=('L0','L3')", "unknown GACT level 'L3'"),
    ("--config.families=('rnn',)", "unknown family 'rnn'")])
def test_memory_experiment_rejects_bad_input_in_one_line(tmp_path, capsys, override, message):
  assert main(["run", "gact/memory", "--preset", "tiny", "--workdir", str(tmp_path / "x"), override]) == 2
  err = capsys.readouterr().err.strip()
  assert message in err and len(err.splitlines()) == 1, err


def test_held_out_verdict_needs_the_papers_accuracy_bar_where_there_is_one():
  """The loss within L0's seed spread is only "in part" when the paired accuracy drops by more
  than the paper's 0.5 points (the GCN's quick run: -0.96 and -0.56 points)."""
  from jaxpapers.gact.report import _rows
  def rows(acc_l0, acc_top):
    r = {"levels": {"L0": {"max_batch_compiled": None}, "L2.2": {"max_batch_compiled": None}},
         "loss_delta_L2.2": 0.02, "loss_seed_spread_L0": 0.03,
         "loss_delta_L2.2_per_seed": [0.03, 0.01],
         "seeds": {"L0": [{"loss": 1.0, "acc": a} for a in acc_l0],
                   "L2.2": [{"loss": 1.02, "acc": a} for a in acc_top]}}
    (row,) = [x for x in _rows("gnn", r, None) if "held-out" in x.metric]
    return row
  assert rows([0.75, 0.76], [0.74, 0.755]).verdict == "in part"
  assert rows([0.75, 0.76], [0.749, 0.758]).verdict == "reproduced"
  assert "accuracy per seed -1.00, -0.50 points" in rows([0.75, 0.76], [0.74, 0.755]).note
  assert rows([None, None], [None, None]).verdict == "reproduced"
