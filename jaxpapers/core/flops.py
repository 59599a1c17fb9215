"""This machine's peak matmul FLOP/s (the denominator of `mfu_cpu`) and copy bandwidth, measured
in-process; timing helpers."""
from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def median_time(fn, *args, reps: int = 7) -> float:
  """Median wall time of fn(*args) over `reps` calls, after one warm-up (compilation) call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def mfu_spread(flops_per_step: float, step_times, peak: dict) -> list[float]:
  """[low, high] of `mfu_cpu` (= flops_per_step / median step time / peak["peak"]) within one
  process: the step time over its interquartile range and the peak between its best size's median
  round and its best round (the peak itself). Low: the 75th-percentile step over the peak; high:
  the 25th-percentile step over the median round. It does not hold the peak's drift between
  processes (180-315 GFLOP/s seen within an hour on a shared machine), so a figure from another
  process can fall outside it when the machine's speed moved between the two."""
  q25, q75 = np.percentile(np.asarray(step_times, np.float64), [25, 75])
  return [flops_per_step / q75 / peak["peak"], flops_per_step / q25 / peak["median"]]


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
                              dtype=jnp.float32, earlier: dict | None = None) -> dict:
  """This machine's peak matmul FLOP/s, the denominator of `mfu_cpu`: the best single timing of
  n x n x n matmuls over `sizes` and `rounds` interleaved rounds (after a warm-up call each). A
  best-of-N is what the machine can do when nothing else runs; a median moves with the load of
  the moment (27-209 GFLOP/s seen in one busy process). On a shared machine the best still moves
  between processes (180-315 GFLOP/s seen within an hour here): quote it with the ratio. XLA runs
  each matmul on all of its CPU threads (its thread count is fixed per process).

  `earlier`: this function's result from earlier in the same process (e.g. before a training
  run, this call after it); its rounds are pooled with these, so the peak is the best of both
  moments: a whole measurement can fall in a slow minute (a run's 5 rounds gave 93-159 GFLOP/s
  where the processes just before and after it measured 180-200).

  Returns {"peak": FLOP/s, "best_size": n, "per_size": {n: best FLOP/s}, "spread": [lowest,
  highest] FLOP/s of the best size over the rounds, "median": their median, "rates": {n: every
  round's FLOP/s}, "dtype"}. Pooling with an `earlier` of other sizes or dtype is a ValueError."""
  if earlier is not None and (tuple(earlier["rates"]) != tuple(sizes)
                              or earlier["dtype"] != jnp.dtype(dtype).name):
    raise ValueError(f"cannot pool a peak measured over sizes {tuple(earlier['rates'])} in "
                     f"{earlier['dtype']} with one over {tuple(sizes)} in {jnp.dtype(dtype).name}")
  fns = {}
  rates = {n: list(earlier["rates"][n]) if earlier else [] for n in sizes}
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
          "spread": [min(rates[best]), max(rates[best])], "median": statistics.median(rates[best]),
          "rates": rates, "dtype": jnp.dtype(dtype).name}


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
