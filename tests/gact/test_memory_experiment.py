"""`jaxpapers run gact/memory --preset tiny`: the results.json keys the issue names per family,
every level's row, a batch that ran in a child process; bad levels and families are one clear
error line."""
import json

import numpy as np
import pytest

from jaxpapers.cli import main


def test_memory_experiment_writes_the_named_results(tmp_path):
  wd = tmp_path / "g"
  # the GCN family (the transformer and ResNet run the same `run_levels`; their blocks are tested
  # in test_levels.py and test_compress.py); L0 and L2.2 for two seeds, the checkpointed pair;
  # the largest batch of L0 and L2.2 run for one step in a child process
  assert main(["run", "gact/memory", "--preset", "tiny", "--workdir", str(wd),
               "--config.families=('gnn',)", "--config.executed_levels=('L0','L2.2')"]) == 0
  r = json.loads((wd / "results.json").read_text())["gnn"]
  for key in ("memory_ratio_L2.2", "memory_ratio_L2.2_ckpt", "max_batch_ratio_L2.2",
              "loss_delta_L2.2", "step_time_ratio_L2.2", "adaptive_variance_ratio",
              "loss_seed_spread_L0"):
    assert isinstance(r[key], float), key
  # at this toy size one layer's working set dominates (1.22x measured); the quick preset's
  # figures are in experiments/gact/README.md
  assert r["memory_ratio_L2.2"] > 1.1 and r["adaptive_variance_ratio"] < 1.0, r
  assert set(r["levels"]) == {"L0", "L2.2", "ckpt", "L2.2_ckpt"}
  assert [s["seed"] for s in r["seeds"]["L2.2"]] == [0, 1] and len(r["loss_delta_L2.2_per_seed"]) == 2
  top, l0 = r["levels"]["L2.2"], r["levels"]["L0"]
  for x in (top, l0):     # a batch that ran (its loss is finite): the compiled search's
    assert x["executed"]["batch"] == x["max_batch"] == x["max_batch_compiled"] > 0
    assert x["executed"]["steps"] == 1 and np.isfinite(x["executed"]["loss"])
    # the child's own peak (VmHWM), not its parent's inherited through vfork + exec
    assert 2**20 < x["executed"]["peak_rss_bytes"] < 8 * 2**30
  assert r["levels"]["ckpt"]["max_batch"] is None                 # not run: compiled only
  assert len(top["allocations"]) == 2 and set(top["bits"][0]) <= {1, 2, 4, 8, 32}
  assert top["avg_bits"] <= 2.0 and len(top["unit_sizes"]) > 2 * 2    # every saved tensor
  report = (wd / "REPORT.md").read_text()
  assert "| L2.2 | no |" in report and "| L2.2_ckpt | yes |" in report
  assert (wd / "gnn_bits_L2.2.png").stat().st_size > 0


@pytest.mark.parametrize("override, message", [
    ("--config.levels=('L0','L3')", "unknown GACT level 'L3'"),
    ("--config.families=('rnn',)", "unknown family 'rnn'")])
def test_memory_experiment_rejects_bad_input_in_one_line(tmp_path, capsys, override, message):
  assert main(["run", "gact/memory", "--preset", "tiny", "--workdir", str(tmp_path / "x"), override]) == 2
  err = capsys.readouterr().err.strip()
  assert message in err and len(err.splitlines()) == 1, err
