"""The link model's statistics match its parameters; measured traces load, and bad ones fail
with one line naming the file and line."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpapers.core.errors import DataError
from jaxpapers.iaad import network

LEVEL = dict(base_ms=80.0, slope_ms=50.0, jitter=0.5, p_gb=0.04, p_bg=0.2, loss_bad=0.9)
N = 200_000


@pytest.fixture(scope="module")
def chain():
  """N frames of the modelled link at 120 m from the RSU (outside any handover zone)."""
  ln = network.link(LEVEL, handover_ms=300.0, p_gb_handover=0.5, loss_good=0.01)
  d = network.sample_draws(jax.random.key(0), N, ln.p_gb, ln.p_bg)

  def step(bad, inp):
    z, us, ul = inp
    lat, lost, nxt = network.step(ln, bad, jnp.float32(120.0), jnp.bool_(False), z, us, ul)
    return nxt, (lat, lost, bad)

  _, (lat, lost, bad) = jax.jit(lambda: jax.lax.scan(step, d.bad0, (d.z, d.u_state, d.u_loss)))()
  return np.asarray(lat), np.asarray(lost), np.asarray(bad)


def test_mean_latency_matches_the_model(chain):
  lat, _, _ = chain
  mean = LEVEL["base_ms"] + LEVEL["slope_ms"] * 120.0 / 100
  # the log-normal's sample mean has relative std sqrt(exp(s^2) - 1) / sqrt(N) = 0.12%: 5 of them
  rel_se = np.sqrt(np.exp(LEVEL["jitter"] ** 2) - 1) / np.sqrt(N)
  assert abs(lat.mean() / mean - 1) < 5 * rel_se
  assert abs(np.median(np.log(lat)) - (np.log(mean) - LEVEL["jitter"] ** 2 / 2)) < 0.01


def test_gilbert_elliott_bursts_match_the_model(chain):
  _, lost, bad = chain
  p_gb, p_bg = LEVEL["p_gb"], LEVEL["p_bg"]
  pi_bad = p_gb / (p_gb + p_bg)
  # frames are correlated (lag-1 correlation 1 - p_gb - p_bg = 0.76): about 27k effective
  # samples, so the bad fraction's standard error is 1.4% of it; 6% is four of them
  assert abs(bad.mean() - pi_bad) < 0.06 * pi_bad
  edges = np.flatnonzero(np.diff(np.r_[0, bad.astype(int), 0]))
  runs = edges[1::2] - edges[::2]
  # mean burst 1/p_bg = 5 frames; ~6.7k bursts of geometric length: standard error 0.055 frames
  assert abs(runs.mean() - 1 / p_bg) < 0.05 / p_bg
  loss = pi_bad * LEVEL["loss_bad"] + (1 - pi_bad) * 0.01
  assert abs(lost.mean() - loss) < 0.06 * loss
  assert lost[bad].mean() > 0.85 and lost[~bad].mean() < 0.02


def test_handover_adds_latency():
  ln = network.link(LEVEL, handover_ms=300.0, p_gb_handover=0.5)
  far, _, _ = network.step(ln, False, 0.0, False, 0.0, 0.5, 0.5)
  ho, _, _ = network.step(ln, False, 0.0, True, 0.0, 0.5, 0.5)
  assert float(ho - far) == pytest.approx(300.0 * float(np.exp(-LEVEL["jitter"] ** 2 / 2)), rel=1e-5)


def test_trace_round_trip_and_lookup(tmp_path):
  path = tmp_path / "drive.csv"
  network.write_trace(path, [0.0, 0.1, 0.2, 0.3], [40.0, 250.0, 0.0, 60.0], [0, 0, 1, 0])
  tr = network.load_trace(path)
  assert float(tr.duration) == pytest.approx(0.4)
  lat, lost = jax.vmap(lambda t: network.from_trace(tr, t, 0.0))(jnp.array([0.0, 0.15, 0.2, 0.45]))
  assert np.asarray(lat).tolist() == pytest.approx([40.0, 250.0, 0.0, 40.0])   # wraps around
  assert np.asarray(lost).tolist() == [False, False, True, False]


@pytest.mark.parametrize("body, message", [
    ("time_s,latency_ms,lost\n0,20,0\n0.1,-3,0\n", "drive.csv:3: latency_ms -3 is negative"),
    ("time_s,latency\n0,20\n0.1,30\n", "missing column(s) latency_ms, lost"),
    ("time_s,latency_ms,lost\n0,20,0\n0,30,0\n", "drive.csv:3: time_s 0 does not increase"),
    ("time_s,latency_ms,lost\n0,20,yes\n0.1,30,0\n", "drive.csv:2: lost must be 0 or 1"),
    ("time_s,latency_ms,lost\n0,fast,0\n", "drive.csv:2: time_s and latency_ms must be numbers"),
    ("time_s,latency_ms,lost\n0,20,0\n", "needs at least 2 rows"),
])
def test_bad_traces_are_one_line_errors(tmp_path, body, message):
  path = tmp_path / "drive.csv"
  path.write_text(body)
  with pytest.raises(DataError) as e:
    network.load_trace(path)
  assert message in str(e.value) and "\n" not in str(e.value)
