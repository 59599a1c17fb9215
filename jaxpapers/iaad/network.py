"""The RSU -> vehicle link: latency and loss that fluctuate along the road, or a measured trace.

Per RSU frame s (captured at s*dt, clocks synchronised), with the ego at distance d from the RSU:
  mean latency   m = base_ms + slope_ms * d / 100 + handover_ms inside a handover zone
  latency        m * exp(jitter * Z - jitter^2 / 2), Z ~ N(0, 1)   (log-normal, mean m)
  loss           a Gilbert-Elliott channel: a two-state Markov chain (good/bad) stepping once per
                 frame, P(good->bad) = p_gb (p_gb_handover inside a handover zone), P(bad->good) =
                 p_bg; a message is lost with probability loss_good / loss_bad in the state.
  coverage       beyond comm_range every message is lost.
So the stationary bad fraction is p_gb / (p_gb + p_bg), a bad burst lasts 1 / p_bg frames on
average, and the loss rate is the two states' loss probabilities weighted by those fractions.
The RSU's own processing time is part of the latency.

Trace mode replaces latency and loss with a measured trace: a CSV file with the header columns
`time_s`, `latency_ms` and `lost` (others are ignored), one row per message, times increasing;
`lost` is 0 or 1 and `latency_ms` a non-negative number. Frame s of an episode takes the last row at
or before (offset + s*dt) modulo the trace's duration, the offset uniform per episode.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxpapers.core.errors import DataError

LEVEL_FIELDS = ("name", "base_ms", "slope_ms", "jitter", "p_gb", "p_bg", "loss_bad")
TRACE_COLUMNS = ("time_s", "latency_ms", "lost")


class Link(NamedTuple):
  """One network level's parameters (arrays, so levels share one compiled program)."""
  base_ms: jnp.ndarray
  slope_ms: jnp.ndarray       # per 100 m from the RSU
  jitter: jnp.ndarray         # log-normal sigma
  p_gb: jnp.ndarray
  p_bg: jnp.ndarray
  loss_good: jnp.ndarray
  loss_bad: jnp.ndarray
  handover_ms: jnp.ndarray
  p_gb_handover: jnp.ndarray


class Trace(NamedTuple):
  time_s: jnp.ndarray         # [R] increasing, starting at 0
  latency_ms: jnp.ndarray     # [R]
  lost: jnp.ndarray           # [R] bool
  duration: jnp.ndarray       # scalar: last time + the median gap


class NetDraws(NamedTuple):
  z: jnp.ndarray              # [T] standard normal (jitter)
  u_state: jnp.ndarray        # [T] uniforms (state transitions)
  u_loss: jnp.ndarray         # [T] uniforms (loss)
  offset: jnp.ndarray         # scalar uniform (trace offset)
  bad0: jnp.ndarray           # initial state, drawn from the stationary distribution


def link(level: dict, handover_ms: float, p_gb_handover: float, loss_good: float = 0.0) -> Link:
  f = lambda v: jnp.float32(v)
  return Link(f(level["base_ms"]), f(level["slope_ms"]), f(level["jitter"]), f(level["p_gb"]),
              f(level["p_bg"]), f(loss_good), f(level["loss_bad"]), f(handover_ms),
              f(max(p_gb_handover, level["p_gb"])))


def sample_draws(key, frames: int, p_gb, p_bg) -> NetDraws:
  ks = jax.random.split(key, 5)
  return NetDraws(jax.random.normal(ks[0], (frames,)), jax.random.uniform(ks[1], (frames,)),
                  jax.random.uniform(ks[2], (frames,)), jax.random.uniform(ks[3], ()),
                  jax.random.uniform(ks[4], ()) < p_gb / (p_gb + p_bg))


def step(ln: Link, bad, distance, handover, z, u_state, u_loss):
  """One frame of the modelled link: (latency_ms, lost, next bad state). `bad` is the state in
  which this frame's message is sent."""
  mean = ln.base_ms + ln.slope_ms * distance / 100.0 + jnp.where(handover, ln.handover_ms, 0.0)
  latency = mean * jnp.exp(ln.jitter * z - ln.jitter ** 2 / 2)
  lost = u_loss < jnp.where(bad, ln.loss_bad, ln.loss_good)
  p_gb = jnp.where(handover, ln.p_gb_handover, ln.p_gb)
  next_bad = jnp.where(bad, u_state >= ln.p_bg, u_state < p_gb)
  return latency, lost, next_bad


def from_trace(tr: Trace, t_s, offset_u):
  """(latency_ms, lost) of the message captured at episode time t_s."""
  q = jnp.mod(offset_u * tr.duration + t_s, tr.duration)
  i = jnp.clip(jnp.searchsorted(tr.time_s, q, side="right") - 1, 0, tr.time_s.shape[0] - 1)
  return tr.latency_ms[i], tr.lost[i]


def load_trace(path: str | Path) -> Trace:
  """A measured latency/loss trace (format in the module docstring); one DataError line naming the
  file and line for anything malformed."""
  path = Path(path)
  if not path.is_file():
    raise DataError(f"network trace {path}: no such file")
  try:
    text = path.read_text(encoding="utf-8")
  except UnicodeDecodeError as e:
    raise DataError(f"network trace {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
  with io.StringIO(text, newline="") as f:
    reader = csv.DictReader(f)
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in TRACE_COLUMNS if c not in header]
    if missing:
      raise DataError(f"network trace {path}: missing column(s) {', '.join(missing)}; the header "
                      f"must name {', '.join(TRACE_COLUMNS)} (found: {', '.join(header) or 'none'})")
    rows = []
    for line, raw in enumerate(reader, start=2):
      row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
      try:
        t, lat, lost = float(row["time_s"]), float(row["latency_ms"]), row["lost"]
      except ValueError:
        raise DataError(f"network trace {path}:{line}: time_s and latency_ms must be numbers, got "
                        f"{row['time_s']!r}, {row['latency_ms']!r}") from None
      if not (math.isfinite(t) and math.isfinite(lat)):
        raise DataError(f"network trace {path}:{line}: time_s and latency_ms must be finite")
      if lat < 0:
        raise DataError(f"network trace {path}:{line}: latency_ms {lat:g} is negative")
      if lost not in ("0", "1"):
        raise DataError(f"network trace {path}:{line}: lost must be 0 or 1, got {lost!r}")
      if rows and t <= rows[-1][0]:
        raise DataError(f"network trace {path}:{line}: time_s {t:g} does not increase "
                        f"(previous {rows[-1][0]:g})")
      rows.append((t, lat, lost == "1"))
  if len(rows) < 2:
    raise DataError(f"network trace {path}: needs at least 2 rows, found {len(rows)}")
  a = np.array([(t, lat) for t, lat, _ in rows], np.float64)
  times = a[:, 0] - a[0, 0]
  duration = times[-1] + float(np.median(np.diff(times)))
  return Trace(jnp.asarray(times, jnp.float32), jnp.asarray(a[:, 1], jnp.float32),
               jnp.asarray([lost for *_, lost in rows]), jnp.float32(duration))


def write_trace(path: str | Path, time_s, latency_ms, lost) -> None:
  """Writes a trace in the format load_trace reads."""
  with Path(path).open("w", newline="") as f:
    w = csv.writer(f)
    w.writerow(TRACE_COLUMNS)
    for t, lat, l in zip(time_s, latency_ms, lost):
      w.writerow([f"{float(t):.4f}", f"{float(lat):.3f}", int(bool(l))])
