"""This machine's matmul FLOP/s, measured in-process, as the denominator of `mfu_cpu`."""
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


def measure_matmul_flops(n: int = 2048, reps: int = 8, dtype=jnp.float32) -> float:
  """FLOP/s of an n x n x n matmul, from the median of `reps` timings: the same statistic as the
  median step time it is divided into, so that machine noise affects both alike."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  return 2.0 * n ** 3 / median_time(jax.jit(lambda x, y: x @ y), a, b, reps=reps)


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
