"""How much memory a train step needs, as XLA compiles it, and the largest batch under a budget
(the measurements of GACT's Table 4 / Fig. 6, taken from XLA instead of the allocator)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxpapers.core.errors import ConfigError
from jaxpapers.core.train import TrainState, make_train_step


def step_and_args(graphdef, loss_fn, tx, params, batch):
  step = jax.jit(make_train_step(graphdef, loss_fn, tx))
  abstract = lambda t: jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), t)
  opt = jax.eval_shape(tx.init, params)
  st = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=abstract(params), opt_state=opt,
                  rng=jax.ShapeDtypeStruct((2,), jnp.uint32))
  return step, (st, abstract(batch), jax.ShapeDtypeStruct((), jnp.float32))


# Buffer assignment (hence temp bytes) is decided on the optimised HLO, before the backend emits
# machine code, so the backend's code optimisation is switched off for these compile-only probes:
# about a third less compile time, the same bytes (checked on the quick GLM stack at batch 1,024,
# FP32 and 2-bit, and in tests/gact/test_glm_gact.py).
MEMORY_PROBE_OPTIONS = {"xla_backend_optimization_level": 0}


def temp_bytes(graphdef, loss_fn, tx, params, batch) -> int:
  """XLA's compiled temporary bytes of the whole train step for this batch's shapes."""
  step, args = step_and_args(graphdef, loss_fn, tx, params, batch)
  compiled = step.lower(*args).compile(MEMORY_PROBE_OPTIONS)
  return int(compiled.memory_analysis().temp_size_in_bytes)


def temp_probe(graphdef, loss_fn, tx, params, example):
  """temp_at(b): `temp_bytes` of the step for the batch example(b), each batch size compiled once;
  temp_at.probed is {b: bytes} of every size asked for."""
  probed: dict[int, int] = {}

  def temp_at(b: int) -> int:
    if b not in probed:
      probed[b] = temp_bytes(graphdef, loss_fn, tx, params, example(b))
    return probed[b]

  temp_at.probed = probed
  return temp_at


def max_batch(temp_at, budget: int, hint: int, limit: int, multiple: int = 1) -> int:
  """Largest batch b <= limit with temp_at(b) <= budget (temp_at compiles a step): a linear
  prediction from two sizes, then galloping and bisection between a fitting and a failing b.
  With `multiple` > 1 only multiples of it are tried (a micro-batched model pads other batches,
  which costs copies a user would not choose to pay), or batches below it when not even one
  multiple fits (those run as a single micro-batch)."""
  if multiple > 1:
    if temp_at(multiple) > budget:
      return max_batch(temp_at, budget, 1, multiple - 1)
    k = max_batch(lambda j: temp_at(j * multiple), budget, max(1, hint // multiple),
                  max(1, limit // multiple))
    return k * multiple
  t1, th = temp_at(1), temp_at(hint)
  if t1 > budget:
    raise ConfigError(f"even batch 1 needs {t1:,} temp bytes, over the budget {budget:,}")
  per = max((th - t1) / max(hint - 1, 1), 1.0)
  guess = int(min(limit, max(1, (budget - t1) // per + 1)))
  if temp_at(guess) <= budget:
    lo, inc, hi = guess, max(1, guess // 16), None
    while hi is None:
      nxt = min(limit, lo + inc)
      if nxt == lo:
        return lo
      if temp_at(nxt) <= budget:
        lo, inc = nxt, inc * 2
      else:
        hi = nxt
  else:
    hi, lo = guess, max(1, guess - max(1, guess // 8))
    while lo > 1 and temp_at(lo) > budget:
      hi, lo = lo, max(1, lo - 2 * (hi - lo))
  while hi - lo > max(1, lo // 16):    # bisect to within 6% (each probe is a compile)
    mid = (lo + hi) // 2
    lo, hi = (mid, hi) if temp_at(mid) <= budget else (lo, mid)
  return lo
