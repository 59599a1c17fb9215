"""How much memory a train step needs, as XLA compiles it, and the largest batch under a budget
(the measurements of GACT's Table 4 / Fig. 6, taken from XLA; the batch found is then run,
`gact.run_batch`)."""
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
# FP32 and 2-bit).
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


def max_batch_linear(temp_at, budget: int, b: int, limit: int, tol: float = 0.03,
                     checks: int = 8) -> int:
  """Largest batch under `budget` temp bytes: predicted from the step's bytes at b and 2b and
  checked by compiling it (temp bytes are not quite affine in the batch; each check is a
  compile), then refined by at most `checks` more compiles between the largest batch known to
  fit (lo) and the smallest known not to (hi): 5% steps up from lo while hi is unknown or more
  than 10% above it, bisection below that, halving while nothing fits, until hi is within `tol`
  of lo. Where the checks run out first, lo is a lower bound."""
  t1, t2 = temp_at(b), temp_at(2 * b)
  per = max((t2 - t1) / b, 1.0)
  fits = lambda n: temp_at(n) <= budget
  known = [n for n in (b, 2 * b) if n <= limit]
  lo = max((n for n in known if fits(n)), default=0)          # 0: nothing known to fit
  hi = min((n for n in known if not fits(n)), default=None)     # None: nothing known to fail
  guess = int(min(limit, max(1, (budget - (t1 - per * b)) // per)))
  if guess > lo and (hi is None or guess < hi):
    lo, hi = (guess, hi) if fits(guess) else (lo, guess)
  for _ in range(checks):
    if hi is not None and (hi - lo <= 1 or hi <= lo * (1 + tol)):
      break
    if lo == 0:
      probe = max(1, hi // 2)
    elif hi is None or hi > lo * 1.10:
      probe = min(limit, max(lo + 1, int(lo * 1.05)))
    else:
      probe = (lo + hi) // 2
    if probe == lo:                   # at the limit
      break
    lo, hi = (probe, hi) if fits(probe) else (lo, probe)
  if lo == 0:
    raise ConfigError(f"even batch {hi} needs {temp_at(hi):,} temp bytes, over the budget {budget:,}")
  return lo
