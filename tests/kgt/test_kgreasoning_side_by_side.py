"""experiments/kgt/kgreasoning_side_by_side.py reads KGReasoning's log lines (its `log_metrics`
format) and picks each type's test MRR at the point of best validation Hits@3, as ours."""
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "kgt" / "kgreasoning_side_by_side.py"


def _module():
  spec = importlib.util.spec_from_file_location("kgreasoning_side_by_side", SCRIPT)
  m = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(m)
  return m


def test_each_type_read_at_its_best_validation_point(tmp_path):
  m = _module()
  lines = []
  for step, v1, v2u, t1, t2u in ((250, 0.5, 0.4, 0.51, 0.41), (500, 0.7, 0.4, 0.71, 0.45), (1000, 0.7, 0.3, 0.9, 0.2)):
    lines += [f"2026-12-07 05:26:15 INFO     Valid 1p HITS3 at step {step}: {v1:f}",
              f"2026-12-07 05:26:15 INFO     Valid 2u-DNF HITS3 at step {step}: {v2u:f}",
              f"2026-12-07 05:26:15 INFO     Test 1p MRR at step {step}: {t1:f}",
              f"2026-12-07 05:26:15 INFO     Test 2u-DNF MRR at step {step}: {t2u:f}",
              f"2026-12-07 05:26:15 INFO     Test average MRR at step {step}: 0.5"]
  lines.append("2026-12-07 05:27:00 INFO     Test 1p MRR at step 1000: 0.99")    # the final test: no Valid line
  lines.append("2026-12-07 05:27:00 INFO     Test 1p MRR at step 1001: 0.99")
  log = tmp_path / "train.log"
  log.write_text("\n".join(lines) + "\n")
  r = m.parse_log(log)
  assert r["points"] == [250, 500, 1000]
  assert r["chosen"] == {"1p": 500, "2u": 250}            # ties: the earlier point
  assert r["mrr"]["1p"] == pytest.approx(0.71) and r["mrr"]["2u"] == pytest.approx(0.41)
  empty = tmp_path / "empty.log"
  empty.write_text("nothing here\n")
  with pytest.raises(SystemExit, match="no evaluation point"):
    m.parse_log(empty)
