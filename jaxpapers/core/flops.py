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


def measure_matmul_flops(n: int = 2048, reps: int = 8, dtype=jnp.float32) -> float:
  """FLOP/s of an n x n x n matmul, from the median of `reps` timings: the same statistic as the
  median step time it is divided into, so that machine noise affects both alike."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  return 2.0 * n ** 3 / median_time(jax.jit(lambda x, y: x @ y), a, b, reps=reps)
