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


def max_batch_linear(temp_at, budget: int, b: int, limit: int, tol: float = 0.03) -> int:
  """Largest batch under `budget` temp bytes (within `tol`, relative): predicted from the step's
  bytes at b and 2b, checked by compiling it, then bisected between the largest batch known to
  fit and the smallest known not to (temp bytes are not quite affine in the batch; each check
  is a compile). Without a failing batch the search steps up 5% at a time while it fits."""
  t1, t2 = temp_at(b), temp_at(2 * b)
  per = max((t2 - t1) / b, 1.0)
  fits = lambda n: temp_at(n) <= budget
  known = [n for n in (b, 2 * b) if n <= limit]
  lo = max((n for n in known if fits(n)), default=0)          # 0: nothing known to fit
  hi = min((n for n in known if not fits(n)), default=None)     # None: nothing known to fail
  guess = int(min(limit, max(1, (budget - (t1 - per * b)) // per)))
  if guess > lo and (hi is None or guess < hi):
    lo, hi = (guess, hi) if fits(guess) else (lo, guess)
  if hi is None:             # bytes per sample may fall with the batch: step up while it fits
    for _ in range(4):
      up = min(limit, max(lo + 1, int(lo * 1.05)))
      if up == lo or not fits(up):
        break
      lo = up
    return lo
  while hi - lo > 1 and hi > lo * (1 + tol):
    mid = (lo + hi) // 2 if lo else max(1, hi // 2)
    lo, hi = (mid, hi) if fits(mid) else (lo, mid)
  if lo == 0:
    raise ConfigError(f"even batch 1 needs {temp_at(1):,} temp bytes, over the budget {budget:,}")
  return lo
