"""The train loop: one pure, jitted step over a state pytree, and a linear loop around it
(data -> step -> non-finite guard -> metrics -> eval? -> checkpoint?), big_vision style."""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm import tqdm

from jaxpapers.core import faults
from jaxpapers.core.checkpoint import Checkpointer, has_checkpoints
from jaxpapers.core.errors import CheckpointError, ConfigError, NonFiniteError, WorkdirError
from jaxpapers.core.mesh import global_array, logical_to_spec, state_shardings
from jaxpapers.core.metrics import MetricWriter

log = logging.getLogger("jaxpapers")

# loss_fn(model, batch, dropout_key) -> (scalar loss, dict of scalar aux metrics); aux["tokens"],
# when present, is the loss's normaliser (gradient accumulation weights micro-batches by it)
LossFn = Callable[[nnx.Module, dict, jax.Array], tuple[jax.Array, dict]]


@flax.struct.dataclass
class TrainState:
  step: jax.Array        # int32 scalar
  params: Any            # nnx.State of the nnx.Param variables
  opt_state: Any
  rng: jax.Array         # uint32 key data of the run's base key


def validate_train(c: ml_collections.ConfigDict, key: str = "train", partial: bool = False) -> None:
  """The optimizer and guard settings of the section `key` (dotted: "idm.train") of c, each a
  ConfigError naming its key: finite positive lr, 0 <= b1, b2 < 1, finite eps > 0, clip >= 0 (0:
  no clipping), weight_decay >= 0, max_consecutive_skips >= 1 and the fault injector's settings
  when set. partial=True checks only the keys the section has (a stage's overrides of a train
  section)."""
  from jaxpapers.core.config import check
  section = c
  for part in key.split("."):
    section = section[part]
  finite = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
  rules = [("lr", lambda v: finite(v) and v > 0, "a finite positive number"),
           ("b1", lambda v: finite(v) and 0 <= v < 1, "in [0, 1)"),
           ("b2", lambda v: finite(v) and 0 <= v < 1, "in [0, 1)"),
           ("eps", lambda v: finite(v) and v > 0, "a finite positive number"),
           ("clip", lambda v: finite(v) and v >= 0,
            "a finite number >= 0 (the global gradient norm; 0 disables clipping)"),
           ("weight_decay", lambda v: finite(v) and v >= 0, "a finite number >= 0")]
  optional = [("warmup_start_ratio", lambda v: finite(v) and 0 <= v <= 1, "in [0, 1]"),
              ("schedule", lambda v: v in ("cosine", "linear"), "'cosine' or 'linear'"),
              ("max_consecutive_skips", lambda v: isinstance(v, int) and v >= 1, "a positive int"),
              ("inject_nan_into", lambda v: v in INJECT_INTO, f"one of {', '.join(INJECT_INTO)}"),
              ("inject_value", lambda v: v in ("nan", "inf"), "'nan' or 'inf'"),
              ("inject_nan_count", lambda v: isinstance(v, int) and v >= 1, "a positive int")]
  required = set() if partial else {name for name, _, _ in rules}
  for name, ok, what in rules + optional:
    if name in section or name in required:
      check(c, f"{key}.{name}", ok, what)


def validate_train_sections(c: ml_collections.ConfigDict) -> None:
  """Every section of c that holds an `lr` or `inject_nan_step` (a train section, or a stage's
  overrides of one),
  checked with validate_train(partial=True): `jaxpapers run` does this before it writes
  anything, so a bad optimizer setting of any stage fails at once, named by its own key."""
  def walk(node, prefix):
    for k, v in node.items():
      if isinstance(v, ml_collections.ConfigDict):
        if "lr" in v or "inject_nan_step" in v:
          validate_train(c, prefix + k, partial=True)
        walk(v, f"{prefix}{k}.")
  walk(c, "")


def make_optimizer(t: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """AdamW with a linear warmup and a cosine decay to end_lr_ratio*lr (schedule='linear': warmup
  from warmup_start_ratio*lr, linear decay), global-norm clipping (clip = 0: none); no weight
  decay on biases and norms; parameters marked `frozen` are left unchanged. The schedule follows optax's update count, which a skipped
  (non-finite) step does not advance."""
  warmup = int(t.warmup * t.steps) if t.warmup < 1 else int(t.warmup)
  if t.get("schedule", "cosine") == "linear":   # linear warmup, then linear decay to the end lr
    start = t.lr * t.get("warmup_start_ratio", 0.0)
    sched = optax.join_schedules(
        [optax.linear_schedule(start, t.lr, max(warmup, 1)),
         optax.linear_schedule(t.lr, t.lr * t.end_lr_ratio, max(t.steps - warmup, 1))],
        [max(warmup, 1)])
  else:
    sched = optax.warmup_cosine_decay_schedule(0.0, t.lr, max(warmup, 1), max(t.steps, warmup + 1),
                                               end_value=t.lr * t.end_lr_ratio)
  def decay_mask(params):   # the `decay` metadata of each nnx.Param (see jaxpapers.nn.param)
    return jax.tree.map(lambda v: bool(getattr(v, "decay", jnp.ndim(v) > 1)), params,
                        is_leaf=lambda x: isinstance(x, nnx.Variable))
  clip = optax.clip_by_global_norm(t.clip) if t.clip > 0 else optax.identity()  # clip=0: none
  tx = optax.chain(clip,
                   optax.adamw(sched, b1=t.b1, b2=t.b2, eps=t.eps, weight_decay=t.weight_decay,
                               mask=decay_mask))

  def labels(params):   # the `frozen` metadata (see jaxpapers.nn.param): never updated
    return jax.tree.map(lambda v: "frozen" if getattr(v, "frozen", False) else "train", params,
                        is_leaf=lambda x: isinstance(x, nnx.Variable))
  # parameters marked frozen get a zero update and no optimizer state; the others as before
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def leaf_names(tree) -> list[str]:
  return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def make_train_step(graphdef, loss_fn: LossFn, tx, grad_accum: int = 1, inject: bool = False):
  """step(state, batch, poison, frozen=None) -> (state, metrics). `poison` multiplies the loss
  (1.0 normally; NaN to inject a fault in tests). inject=True (the fault injector of tests and
  the fault suite, fixed at compile time, so a run without it compiles as it always did): poison
  is three float32s, [0] multiplying the loss, [1] the first gradient leaf, [2] the first updated
  parameter leaf. `frozen`: the model's variables outside
  state.params (see `init_state`'s `trainable`), constant, no gradient taken. A step whose loss,
  gradients or new parameters are not all finite leaves params and optimizer state unchanged;
  metrics say which gradient leaves were bad."""

  def poison_first(tree, factor):
    if not inject:
      return tree
    leaves, treedef = jax.tree.flatten(tree)
    return jax.tree.unflatten(treedef, [leaves[0] * factor.astype(leaves[0].dtype)] + leaves[1:])

  def step(state: TrainState, batch: dict, poison, frozen=None):
    poison = jnp.asarray(poison, jnp.float32)
    loss_poison = poison[0] if inject else poison
    def loss_of(params, batch, key, poison):
      model = nnx.merge(graphdef, params) if frozen is None else nnx.merge(graphdef, params, frozen)
      loss, aux = loss_fn(model, batch, key)
      return loss * poison, aux

    grad_fn = jax.value_and_grad(loss_of, has_aux=True)
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    if grad_accum == 1:
      (loss, aux), grads = grad_fn(state.params, batch, key, loss_poison)
    else:
      micro = jax.tree.map(lambda x: x.reshape((grad_accum, x.shape[0] // grad_accum) + x.shape[1:]), batch)

      # micro-batches are weighted by their loss normaliser aux["tokens"] (1 if absent), so the
      # accumulated gradient is the gradient of the whole batch's token-mean loss
      def acc(carry, xs):
        i, mb = xs
        (l, a), g = grad_fn(state.params, mb, jax.random.fold_in(key, i), loss_poison)
        w = a.get("tokens", jnp.float32(1.0))
        scaled = jax.tree.map(lambda x: x * w, (l, a, g))
        return jax.tree.map(jnp.add, carry, scaled + (w,)), None

      shapes = jax.eval_shape(grad_fn, state.params, jax.tree.map(lambda x: x[0], micro), key,
                              loss_poison)
      (l_s, a_s), g_s = shapes
      zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (l_s, a_s, g_s, l_s))
      (loss, aux, grads, total), _ = jax.lax.scan(acc, zeros, (jnp.arange(grad_accum), micro))
      total = jnp.maximum(total, 1e-9)
      loss, aux, grads = jax.tree.map(lambda x: x / total, (loss, aux, grads))
      if "tokens" in aux:
        aux = dict(aux, tokens=total)
    if inject:
      grads = poison_first(grads, poison[1])
    leaf_ok = jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)])
    ok = jnp.isfinite(loss) & jnp.all(leaf_ok)

    def update(_):
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
      if inject:
        params = poison_first(params, poison[2])
      params_ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]))
      return jax.lax.cond(params_ok, lambda: (params, opt_state, jnp.bool_(True)),
                          lambda: (state.params, state.opt_state, jnp.bool_(False)))

    def skip(_):
      return state.params, state.opt_state, jnp.bool_(False)

    # lax.cond runs one branch: a skipped step costs nothing and copies nothing
    params, opt_state, ok = jax.lax.cond(ok, update, skip, None)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    metrics = dict(aux, loss=loss, grad_norm=optax.tree.norm(grads), finite=ok,
                   grad_leaf_finite=leaf_ok)
    return new_state, metrics

  return step


def init_state(cfg, model: nnx.Module, tx, mesh, trainable=nnx.Param):
  """(graphdef, sharded TrainState, its shardings, frozen) for `model` under `mesh` (set by the
  caller). The state holds the variables that the NNX filter `trainable` selects (default every
  nnx.Param); `frozen` holds the rest (sharded alike), for the step's `frozen` argument."""
  graphdef, params, frozen = nnx.split(model, trainable, ...)
  other = [jax.tree_util.keystr(p) for p, v in nnx.to_flat_state(frozen)
           if not isinstance(v, nnx.Param)]
  if other:   # the step could not update them: they would silently stay constant
    raise ValueError(f"the model holds non-parameter variables ({other[0]}, ...); core.train "
                     "trains nnx.Param variables only")
  params = jax.device_put(params, state_shardings(params, mesh))
  frozen = jax.device_put(frozen, state_shardings(frozen, mesh))
  # optimizer moments take their parameters' shardings by propagation through tx.init
  opt_state = jax.jit(tx.init)(params)
  rep = NamedSharding(mesh, P())
  state = TrainState(step=jax.device_put(jnp.int32(0), rep), params=params, opt_state=opt_state,
                     rng=jax.device_put(jax.random.key_data(jax.random.key(cfg.seed)), rep))
  return graphdef, state, jax.tree.map(lambda x: x.sharding, state), frozen


def abstract_like(state, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), state, shardings)


def load_params(cfg, workdir, model: nnx.Module, mesh=None, trainable=nnx.Param) -> nnx.Module:
  """`model` with the parameters of the latest usable checkpoint in workdir (`trainable`: the
  filter the run trained with; the other variables are `model`'s)."""
  from jaxpapers.core.mesh import make_mesh
  from jaxpapers.nn.quantized import check_not_quantized_checkpoint, quantization_of
  if quantization_of(model) is not None:
    raise CheckpointError("load_params needs a full-precision model, this one is quantized: load "
                          "into the FP model, then quantize(model, scheme), or use load_quantized")
  for d in (Path(workdir), Path(workdir) / "checkpoints"):
    check_not_quantized_checkpoint(d)
  if not has_checkpoints(f"{workdir}/checkpoints"):   # and create nothing in workdir
    raise CheckpointError(f"no checkpoint in {workdir}/checkpoints: train the run first")
  mesh = mesh or make_mesh([-1], ["data"])
  with jax.set_mesh(mesh):
    graphdef, state, shard, frozen = init_state(cfg, model, make_optimizer(cfg.train), mesh,
                                                trainable)
    restored = Checkpointer(f"{workdir}/checkpoints", keep=cfg.train.keep,
                            create=False).restore_latest(abstract_like(state, shard))
  if restored is None:
    raise CheckpointError(f"no checkpoint in {workdir}/checkpoints")
  return nnx.merge(graphdef, restored[0].params, frozen)


@dataclasses.dataclass
class TrainOutcome:
  state: TrainState
  graphdef: Any
  history: list[dict]
  step_times: list[float]
  skipped_steps: list[int]
  resumed_from: int | None
  frozen: Any = None       # the variables outside state.params (see `train`'s trainable)

  def model(self) -> nnx.Module:
    if self.frozen is None:
      return nnx.merge(self.graphdef, self.state.params)
    return nnx.merge(self.graphdef, self.state.params, self.frozen)


def _batch_shardings(batch: dict, mesh, batch_logical: dict[str, tuple]) -> dict:
  return {k: NamedSharding(mesh, logical_to_spec(batch_logical.get(k, ("batch",)), mesh))
          for k in batch}


INJECT_INTO = ("loss", "grad", "param", "data")


def _poison(t, step: int, host: dict) -> tuple[jax.Array, dict]:
  """(poison, host batch) of a step (see make_train_step): 1.0 and the batch, except in a run
  whose train.inject_nan_step >= 0 (the fault injector): three ones, except at that step and the
  train.inject_nan_count - 1 after it, where the place train.inject_nan_into says ('loss',
  'grad', 'param'; 'data': a copy of the batch whose first floating array is filled) gets
  train.inject_value ('nan' or 'inf')."""
  first = t.inject_nan_step
  if first < 0:
    return jnp.float32(1.0), host
  poison = np.ones(3, np.float32)
  if not first <= step < first + t.get("inject_nan_count", 1):
    return jnp.asarray(poison), host
  value = np.float32(math.inf if t.get("inject_value", "nan") == "inf" else math.nan)
  into = t.get("inject_nan_into", "loss")
  if into == "data":
    floats = [k for k, v in host.items() if np.issubdtype(np.asarray(v).dtype, np.floating)]
    if not floats:
      raise ConfigError(f"inject_nan_into='data': this run's batches hold no floating array "
                        f"({', '.join(host)}); inject into 'loss', 'grad' or 'param'")
    host = dict(host, **{floats[0]: np.full_like(np.asarray(host[floats[0]]), value)})
  else:
    poison[INJECT_INTO.index(into)] = value
  return jnp.asarray(poison), host


def _history_row(row: dict) -> dict:
  return {k: float(v) for k, v in row.items()} | {"step": int(row["step"])}


def train(*, cfg: ml_collections.ConfigDict, workdir, model: nnx.Module, loss_fn: LossFn,
          get_batch: Callable[[int], dict], mesh, batch_logical: dict[str, tuple] | None = None,
          eval_fn: Callable[[nnx.Module, int], dict] | None = None,
          progress: bool = True, restart: bool = False, trainable=nnx.Param) -> TrainOutcome:
  """Trains `model` for cfg.train.steps steps, resuming from the latest checkpoint in workdir.

  cfg.train: steps, batch, lr, warmup, end_lr_ratio, weight_decay, b1, b2, eps, clip,
  grad_accum, log_every, eval_every, ckpt_every, keep, on_nonfinite ('skip'|'stop'),
  max_consecutive_skips (default 5: that many skipped steps in a row stop the run),
  inject_nan_step (-1 = never; with inject_nan_into, inject_value, inject_nan_count: see
  `_poison`). restart (or `jaxpapers run --restart`): start from step 0 when
  the workdir holds only unusable checkpoints. `trainable`: the NNX filter of the parameters
  trained (and checkpointed); the others stay as in `model`, and no gradient is taken for them.

  Every step's training row goes to metrics.jsonl (TensorBoard every log_every steps); on resume
  the rows past the checkpoint are dropped, so `history` (and a report made from it) covers the
  whole run, each step once, as an uninterrupted run's does."""
  from jaxpapers.core.metrics import keep_up_to
  from jaxpapers.core.workdir import fresh_start_allowed
  t = cfg.train
  validate_train(cfg)
  max_skips = t.get("max_consecutive_skips", 5)
  batch_logical = batch_logical or {}
  tx = make_optimizer(t)
  Path(workdir).mkdir(parents=True, exist_ok=True)
  faults.point("train", str(workdir))
  ckpt = Checkpointer(f"{workdir}/checkpoints", keep=t.keep) if t.ckpt_every > 0 else None

  with jax.set_mesh(mesh):
    graphdef, state, state_shard, frozen = init_state(cfg, model, tx, mesh, trainable)
    params = state.params
    resumed_from = None
    if ckpt is not None:
      restored = ckpt.restore_latest(abstract_like(state, state_shard),
                                     allow_fresh=restart or fresh_start_allowed())
      if restored is not None:
        state, meta = restored
        resumed_from = int(meta["step"])
        log.info("resumed from the checkpoint at step %d (data position %d)", resumed_from,
                 meta["data_position"])

    step_fn = jax.jit(make_train_step(graphdef, loss_fn, tx, t.grad_accum,
                                      inject=t.inject_nan_step >= 0),
                      in_shardings=(state_shard, None, None, None), out_shardings=(state_shard, None),
                      donate_argnums=0)
    names = leaf_names(params)
    start = int(state.step)
    history = [_history_row(r) for r in keep_up_to(workdir, start) if "loss" in r]
    if [h["step"] for h in history] != list(range(1, start + 1)):
      have = {h["step"] for h in history}
      gone = [s for s in range(1, start + 1) if s not in have]
      raise WorkdirError(
          f"{workdir}/metrics.jsonl lacks the rows of {len(gone)} of the {start} steps before the "
          f"checkpoint it resumes from (first: step {gone[0] if gone else '?'}), so the report "
          "would not cover the whole run; restore the file, or rerun with --restart")
    writer = MetricWriter(workdir, tensorboard=t.get("tensorboard", True))
    run_of_skips = 0
    bar = tqdm(range(start, t.steps), initial=start, total=t.steps, desc="train",
               disable=not progress or jax.process_index() != 0, dynamic_ncols=True)

    def record(step, m, dt):
      """The host side of a finished step: its metrics row, the progress bar, the guard."""
      nonlocal run_of_skips
      m = jax.device_get(m)
      row = {k: float(v) for k, v in m.items() if np.ndim(v) == 0}
      row.update(step_time=dt, cold=float(step < start + 2))  # cold: includes compilation
      writer.write(step + 1, row, tensorboard=(step + 1) % t.log_every == 0 or step + 1 == t.steps)
      history.append({"step": step + 1, **row})
      if (step + 1) % t.log_every == 0 or step + 1 == t.steps:
        bar.set_postfix(loss=f"{row['loss']:.3f}")
      if not m["finite"]:
        bad = [n for n, ok in zip(names, m["grad_leaf_finite"]) if not ok]
        what = ("loss" if not np.isfinite(m["loss"]) else f"gradient leaf {bad[0]}" if bad
                else "updated parameters")     # the first of them to go wrong
        if t.on_nonfinite == "stop":
          raise NonFiniteError(f"non-finite {what} at step {step} (loss={m['loss']}); stopped, "
                               f"parameters of step {step} kept, nothing checkpointed")
        log.warning("non-finite %s at step %d (loss=%s): batch skipped", what, step, m["loss"])
        run_of_skips += 1
        if run_of_skips >= max_skips:
          raise NonFiniteError(
              f"{run_of_skips} steps in a row ({step - run_of_skips + 1} to {step}) were non-finite "
              f"(last: {what}) and skipped; stopped (train.max_consecutive_skips={max_skips}): "
              "lower the learning rate or check the data")
      else:
        run_of_skips = 0

    # The host never waits for a step before dispatching the next one: step s's metrics are
    # fetched after step s+1 is dispatched, so building a batch overlaps the device's work. A step
    # that an evaluation, a checkpoint or the end needs is recorded (and guarded) before them.
    # step_time: from the previous step's completion (seen by the host) to this one's; from its
    # dispatch after the start, an evaluation or a checkpoint.
    b_shard, pending, t_done = None, None, None

    def finish(step, m, dispatched):
      nonlocal t_done
      jax.block_until_ready(m)
      now = time.perf_counter()
      record(step, m, now - (t_done if t_done is not None else dispatched))
      t_done = now

    for step in bar:
      poison, host = _poison(t, step, get_batch(step))
      if b_shard is None:
        b_shard = _batch_shardings(host, mesh, batch_logical)
      batch = {k: global_array(v, b_shard[k]) for k, v in host.items()}
      t_dispatch = time.perf_counter()
      state, m = step_fn(state, batch, poison, frozen)
      faults.point("step")
      if pending is not None:
        finish(*pending)
      pending = (step, m, t_dispatch)
      last = step + 1 == t.steps
      evaluate = eval_fn is not None and t.eval_every > 0 and (step + 1) % t.eval_every == 0 and not last
      save = ckpt is not None and ((step + 1) % t.ckpt_every == 0 or last)
      if evaluate or save or last:
        finish(*pending)
        pending = None
      if evaluate:
        evaluated = eval_fn(nnx.merge(graphdef, state.params, frozen), step + 1)
        faults.point("eval")     # evaluated, its row not yet written
        writer.write(step + 1, {f"eval/{k}": v for k, v in evaluated.items()})
      if save:
        ckpt.save(step + 1, state, {"step": step + 1, "data_position": step + 1})
      if evaluate or save:   # their time is not the next step's
        t_done = None
    bar.close()
  writer.close()
  if ckpt is not None:
    ckpt.close()
  return TrainOutcome(state=state, graphdef=graphdef, history=history,
                      step_times=[h["step_time"] for h in history if not h.get("cold", 1.0)],
                      skipped_steps=[h["step"] - 1 for h in history if not h.get("finite", 1.0)],
                      resumed_from=resumed_from, frozen=frozen)
