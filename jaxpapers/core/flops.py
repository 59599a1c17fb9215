"""This machine's peak matmul FLOP/s (the denominator of `mfu_cpu`) and copy bandwidth, measured
in-process; timing helpers."""
from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp


def median_time(fn, *args, reps: int = 7) -> float:
  """Median wall time of fn(*args) over `reps` calls, after one warm-up (compilation) call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def median_time_pipelined(fn, *args, reps: int = 7, inner: int = 20) -> float:
  """Seconds per call: median over `reps` of the mean of `inner` back-to-back calls (after two
  warm-up calls), so an accelerator's per-call dispatch overlaps with its work."""
  jax.block_until_ready(fn(*args))
  jax.block_until_ready(fn(*args))
  ts = []
  for _ in range(reps):
    t = time.perf_counter()
    for _ in range(inner):
      r = fn(*args)
    jax.block_until_ready(r)
    ts.append((time.perf_counter() - t) / inner)
  return statistics.median(ts)


def measure_peak_matmul_flops(sizes=(512, 1024, 2048), rounds: int = 5,
                              dtype=jnp.float32) -> dict:
  """This machine's peak matmul FLOP/s, the denominator of `mfu_cpu`: the best single timing of
  n x n x n matmuls over `sizes` and `rounds` interleaved rounds (after a warm-up call each). A
  best-of-N is what the machine can do when nothing else runs; a median moves with the load of
  the moment (27-209 GFLOP/s seen in one busy process). On a shared machine the best still moves
  between processes (180-315 GFLOP/s seen within an hour here): quote it with the ratio. XLA runs
  each matmul on all of its CPU threads (its thread count is fixed per process).

  Returns {"peak": FLOP/s, "best_size": n, "per_size": {n: best FLOP/s}, "spread": [lowest,
  highest] FLOP/s of the best size over the rounds}."""
  fns, rates = {}, {n: [] for n in sizes}
  mm = jax.jit(lambda x, y: x @ y)
  for n in sizes:
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    jax.block_until_ready(mm(a, b))
    fns[n] = (a, b)
  for _ in range(rounds):
    for n in sizes:
      t = time.perf_counter()
      jax.block_until_ready(mm(*fns[n]))
      rates[n].append(2.0 * n ** 3 / (time.perf_counter() - t))
  per_size = {n: max(r) for n, r in rates.items()}
  best = max(per_size, key=per_size.get)
  return {"peak": per_size[best], "best_size": best, "per_size": per_size,
          "spread": [min(rates[best]), max(rates[best])]}


def measure_copy_bandwidth(mib: int = 512, reps: int = 7) -> float:
  """Memory traffic in bytes/s (each byte read plus each byte written, as STREAM counts a copy)
  of an in-place update of a `mib` MiB float32 buffer, median of `reps`: the bandwidth bound that
  weight-read-bound decode is compared with. In place (the buffer is donated) because a fresh
  output buffer of that size is mostly page faults (measured: 1.5 vs 10.7 GB/s here)."""
  step = jax.jit(lambda x: x + 1.0, donate_argnums=0)
  a = step(jnp.ones((mib * 2**20 // 4,), jnp.float32)).block_until_ready()
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    a = step(a)
    a.block_until_ready()
    times.append(time.perf_counter() - t)
  return 2.0 * a.nbytes / statistics.median(times)
