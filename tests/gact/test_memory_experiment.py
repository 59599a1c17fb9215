"""`jaxpapers run gact/memory --preset tiny`: the results.json keys the issue names, per level, the
report and the bits plot; bad levels and families are one clear error line."""
import json

import pytest

from jaxpapers.cli import main


def test_memory_experiment_writes_the_named_results(tmp_path, small_corpus):
  wd = tmp_path / "g"
  # the transformer family at L0, L2.2 and remat (CNN and GNN: tests/gact/test_compress.py,
  # test_gnn_family.py); the max-batch search stops at the memory batch (each probe compiles a
  # whole train step). Two layers (an allocation over layers still has a choice to make) and the
  # small corpus (a faster tokenizer).
  assert main(["run", "gact/memory", "--preset", "tiny", "--workdir", str(wd),
               "--config.families=('transformer',)", "--config.levels=('L0','L2.2','remat')",
               f"--config.data.corpus={small_corpus}", "--config.model.num_layers=2",
               "--config.max_batch_limit=8"]) == 0
  r = json.loads((wd / "results.json").read_text())
  for key in ("memory_ratio_L2.2", "residual_ratio_L2.2", "max_batch_ratio_L2.2",
              "step_time_ratio_L2.2", "memory_ratio_L2.2_vs_remat"):
    assert isinstance(r[key], float) and r[key] > 0, key
  assert r["residual_ratio_L2.2"] < 0.25            # 2-bit codes + per-group min and scale
  assert set(r["levels"]) == {"L0", "L2.2", "remat"}
  for name, x in r["levels"].items():
    assert x["act_bytes"] > 0 and 1 <= x["max_batch"] <= 8 and x["step_time"] > 0, name
    assert isinstance(x["loss"], float) and len(x["losses"]) == 4, name
  # L0 and remat train the same model exactly (L0 is the uncompressed computation)
  assert r["levels"]["L0"]["losses"] == r["levels"]["remat"]["losses"]
  assert len(r["levels"]["L2.2"]["allocations"]) == 2 and set(r["levels"]["L2.2"]["bits"]) <= {1, 2, 4, 8}
  assert (wd / "bits_L2.2.png").stat().st_size > 0
  assert "| L2.2 |" in (wd / "REPORT.md").read_text()


@pytest.mark.parametrize("override, message", [
    ("--config.levels=('L0','L3')", "unknown GACT level 'L3'"),
    ("--config.families=('rnn',)", "unknown family 'rnn'")])
def test_memory_experiment_rejects_bad_input_in_one_line(tmp_path, capsys, override, message):
  assert main(["run", "gact/memory", "--preset", "tiny", "--workdir", str(tmp_path / "x"), override]) == 2
  err = capsys.readouterr().err.strip()
  assert message in err and len(err.splitlines()) == 1, err
