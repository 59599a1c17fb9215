"""The closed loop: a deadline miss is a fusion miss; `jaxpapers run iaad/sweep` end to end, with
levels and with a measured trace; bad scenarios and traces are one-line errors."""
import json

import jax
import numpy as np
import pytest

from jaxpapers import cli
from jaxpapers.iaad import network, planner, sim
from jaxpapers.iaad.scenario import Scenario

S = Scenario(frames=40)


def _run(base_ms):
  """Constant latency, no jitter, no loss, no handover penalty."""
  level = dict(base_ms=base_ms, slope_ms=0.0, jitter=0.0, p_gb=0.0, p_bg=1.0, loss_bad=0.0)
  ln = network.link(level, handover_ms=0.0, p_gb_handover=0.0)
  r = sim.run_batch(jax.random.split(jax.random.key(0), 4), ln, sim.no_trace(), S, sim.Fusion(),
                    planner.IDM(), sim.Scoring(), False)
  r = jax.tree.map(np.asarray, r)
  return {m: 1 - r["used"][:, i].sum() / r["covered"][:, i].sum() for i, m in enumerate(sim.METHODS)}, r


def test_a_deadline_miss_is_a_fusion_miss():
  late, r = _run(150.0)        # every message arrives 50 ms after its frame's 100 ms deadline
  assert late["intra"] == 1.0 and late["ego_only"] == 1.0
  # inter and adaptive use the previous frame's message, compensated: only frame 0 has none
  assert late["inter"] == late["adaptive"] == pytest.approx(1 / S.frames)
  ada = sim.METHODS.index("adaptive")
  frames = r["mode_frames"][:, ada].sum(0)                  # (ego, intra, inter, planning)
  assert frames[1] == 0 and frames[2] > 0
  on_time, _ = _run(60.0)
  assert on_time["intra"] == 0.0


def _cli(tmp_path, *args):
  return cli.main(["run", "iaad/sweep", "--preset", "tiny", "--workdir", str(tmp_path / "wd"),
                   *args])


def test_sweep_end_to_end(tmp_path):
  assert _cli(tmp_path, "--config.seeds=2", "--config.episodes=4", "--config.batch=4") == 0
  wd = tmp_path / "wd"
  r = json.loads((wd / "results.json").read_text())
  assert r["levels"] == ["excellent", "bad"] and r["episodes_per_s"] > 0
  assert r["drives_per_s"] == pytest.approx(6 * r["episodes_per_s"])
  for m in ("ego_only", "intra", "inter", "planning", "adaptive"):
    for lv in r["levels"]:
      cell = r[m][lv]
      for key in ("miss_ratio", "recall", "pos_err", "plan_disp_err", "collisions"):
        assert np.isfinite(cell[key]) and cell[key] >= 0, (m, lv, key)
      assert 0 <= cell["recall"] <= 1 and cell[f"recall_std"] is not None   # two seeds
  assert r["ego_only"]["bad"]["miss_ratio"] == 1.0
  assert r["intra"]["bad"]["miss_ratio"] > r["intra"]["excellent"]["miss_ratio"]
  assert set(r["adaptive_vs_best"]["bad"]) >= {"miss_ratio", "plan_disp_err", "collisions"}
  report = (wd / "REPORT.md").read_text()
  assert "metrics_vs_network.png" in report and "episode.gif" in report
  assert (wd / "episode.gif").stat().st_size > 10_000


def test_trace_mode_and_bad_input(tmp_path, capsys):
  trace = tmp_path / "drive.csv"
  times = np.arange(0, 8, 0.1)
  network.write_trace(trace, times, 40 + 300 * (np.sin(times) > 0.5), (times * 10).astype(int) % 7 == 0)
  assert _cli(tmp_path, f"--config.network.trace={trace}", "--config.episodes=4",
              "--config.batch=4", "--config.report.gif=False") == 0
  r = json.loads((tmp_path / "wd" / "results.json").read_text())
  assert r["levels"] == ["trace:drive"] and 0 < r["intra"]["trace:drive"]["miss_ratio"] < 1
  bad = tmp_path / "bad.csv"
  bad.write_text("time_s,latency_ms,lost\n0,20,0\n0.1,-5,0\n")
  assert _cli(tmp_path / "b", f"--config.network.trace={bad}") == 2
  assert _cli(tmp_path / "c", "--config.scenario.rsu_x=900.0") == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert any("bad.csv:3: latency_ms -5 is negative" in line for line in err)
  assert any("covers no part of the road" in line for line in err)
