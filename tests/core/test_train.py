"""The train loop: sharding over 8 devices, the non-finite guard, checkpoints and resume (the
kill-and-resume of a real run through the CLI: test_workdir.py)."""
import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxpapers.core import config as cfglib
from jaxpapers.core.checkpoint import Checkpointer, all_finite
from jaxpapers.core.errors import CheckpointError, NonFiniteError
from jaxpapers.core.mesh import make_mesh, state_shardings
from jaxpapers.core.train import train
from jaxpapers.glm.evaluate import loss_fn
from jaxpapers.glm.experiments import BATCH_AXES, model_config
from jaxpapers.glm.model import GLM
from jaxpapers.glm.objective import BatchSampler, SpecialIds
from jaxpapers.registry import configs_root
from jp_testutil import assert_close_scaled

IDS = SpecialIds(pad=0, mask=1, gmask=2, sop=3, eop=4)


def _setup(**train_overrides):
  c = cfglib.load_config_file(configs_root() / "glm/pretrain.py", "tiny")
  c.train.update(tensorboard=False, **train_overrides)
  tokens = np.random.default_rng(0).integers(5, 512, 20_000).astype(np.int32)
  sampler = BatchSampler(tokens, IDS, seq_len=c.objective.seq_len, batch=c.train.batch, seed=0,
                         gmask_prob=0.5, mask_ratio=0.15, span_lambda=3.0, two_d=False)
  model = GLM(model_config(c, 512), rngs=nnx.Rngs(params=c.seed))
  return c, sampler, model


def _train(c, sampler, model, workdir, mesh):
  return train(cfg=c, workdir=str(workdir), model=model, loss_fn=loss_fn, get_batch=sampler,
               mesh=mesh, batch_logical=BATCH_AXES, progress=False)


def test_parameters_are_sharded_as_the_rules_say():
  c, _, model = _setup()
  mesh = make_mesh((4, 2), ("data", "model"))
  sh = state_shardings(nnx.state(model, nnx.Param), mesh)
  assert sh["embed"].get_value().spec == P("model", None)             # vocab -> model
  assert sh["wq"].get_value().spec == P(None, None, "model", None)    # heads -> model
  assert sh["w_in"].get_value().spec == P(None, None, None, "model")  # mlp -> model
  assert sh["w_out"].get_value().spec == P(None, "model", None)
  assert sh["ln1_scale"].get_value().spec == P(None, None)


def test_eight_devices_equal_one(tmp_path):
  """5 steps on a 4x2 (data x model) mesh of 8 fake devices equal 1 device within 1e-5 (the
  reductions are reordered, so bitwise equality is not expected)."""
  c, sampler, model = _setup(steps=5, ckpt_every=0)
  mesh8 = make_mesh((4, 2), ("data", "model"))
  out8 = _train(c, sampler, model, tmp_path / "a", mesh8)
  wq = out8.state.params["wq"].get_value()
  assert wq.sharding.spec == P(None, None, "model", None) and len(wq.sharding.device_set) == 8
  assert len(wq.addressable_shards[0].data.shape) == 4 and wq.addressable_shards[0].data.shape[2] == 2
  _, _, model1 = _setup()
  out1 = _train(c, sampler, model1, tmp_path / "b", make_mesh((1, 1), ("data", "model"), jax.devices()[:1]))
  a = jax.device_get(out8.state.params)
  b = jax.device_get(out1.state.params)
  # scaled to the parameters' magnitude (O(1)), not each leaf's: AdamW moves every entry by about
  # lr per step, so a bias whose gradient is rounding noise differs by O(lr * noise) while its
  # leaf's max is itself only O(steps * lr)
  assert_close_scaled(a, b, 1e-5, per_leaf=False)
  losses8 = [h["loss"] for h in out8.history]
  losses1 = [h["loss"] for h in out1.history]
  np.testing.assert_allclose(losses8, losses1, rtol=1e-5)
  init = jax.device_get(nnx.state(_setup()[2], nnx.Param))
  assert not np.allclose(a["wq"].get_value(), init["wq"].get_value())   # it did train


def test_injected_nan_is_skipped(tmp_path):
  c, sampler, model = _setup(steps=5, ckpt_every=1, keep=10, inject_nan_step=2, on_nonfinite="skip")
  mesh = make_mesh((1, 1), ("data", "model"), jax.devices()[:1])
  out = _train(c, sampler, model, tmp_path, mesh)
  assert out.skipped_steps == [2]
  assert all_finite(out.state.params)
  ck = Checkpointer(tmp_path / "checkpoints", keep=10)
  assert ck.steps()[-3:] == [3, 4, 5]
  restore = lambda s: ck.manager.restore(s, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))["state"]
  before, after, later = restore(2), restore(3), restore(4)
  chex.assert_trees_all_equal(before["params"], after["params"])       # the bad batch changed nothing
  chex.assert_trees_all_equal(before["opt_state"], after["opt_state"])
  assert not np.array_equal(after["params"]["wq"]["value"], later["params"]["wq"]["value"])
  assert [h["step"] for h in out.history if not np.isfinite(h["loss"])] == [3]


def test_injected_nan_stops_and_leaves_no_nonfinite_checkpoint(tmp_path):
  c, sampler, model = _setup(steps=6, ckpt_every=1, keep=10, inject_nan_step=3, on_nonfinite="stop")
  mesh = make_mesh((1, 1), ("data", "model"), jax.devices()[:1])
  with pytest.raises(NonFiniteError, match=r"non-finite loss at step 3"):
    _train(c, sampler, model, tmp_path, mesh)
  ck = Checkpointer(tmp_path / "checkpoints", keep=10)
  assert ck.steps() == [1, 2, 3]       # states after steps 0, 1, 2; step 3 was never applied
  for s in ck.steps():
    restored = ck.manager.restore(s, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                             meta=ocp.args.JsonRestore()))
    assert all_finite(restored["state"])


def test_overlapped_loop_equals_a_synchronous_loop_bitwise(tmp_path):
  """The loop fetches step s's metrics after dispatching step s+1 (no host sync per step); the
  losses, the other metrics and the parameters are bitwise those of a loop that waits for every
  step, and a NaN step in the middle is recorded and skipped as before."""
  from jaxpapers.core.train import init_state, make_optimizer, make_train_step
  c, sampler, model = _setup(steps=7, ckpt_every=0, eval_every=0, inject_nan_step=3)
  mesh = make_mesh((1, 1), ("data", "model"), jax.devices()[:1])
  recorded_when_built = []

  def get_batch(step):   # how many steps are recorded when batch `step` is built
    path = tmp_path / "metrics.jsonl"
    recorded_when_built.append(len(path.read_text().splitlines()) if path.exists() else 0)
    return sampler(step)
  out = _train(c, get_batch, model, tmp_path, mesh)
  assert recorded_when_built == [0, 0, 1, 2, 3, 4, 5]    # batch s+1 built before step s is fetched
  _, _, model2 = _setup()
  tx = make_optimizer(c.train)
  with jax.set_mesh(mesh):
    graphdef, state, shard, frozen = init_state(c, model2, tx, mesh)
    step_fn = jax.jit(make_train_step(graphdef, loss_fn, tx), donate_argnums=0)
    rows = []
    for s in range(c.train.steps):
      poison = np.float32(np.nan if s == 3 else 1.0)
      state, m = step_fn(state, {k: jax.numpy.asarray(v) for k, v in sampler(s).items()}, poison, frozen)
      rows.append(jax.device_get(m))      # waits for each step
  assert [h["step"] for h in out.history] == list(range(1, 8))
  for h, r in zip(out.history, rows):
    for k in ("loss", "grad_norm", "tokens", "finite"):
      np.testing.assert_array_equal(h[k], float(r[k]))
  assert out.skipped_steps == [3]
  chex.assert_trees_all_equal(jax.device_get(out.state.params), jax.device_get(state.params))
  assert all(h["step_time"] > 0 for h in out.history)


def test_stop_on_nonfinite_without_checkpoints_records_up_to_the_bad_step(tmp_path):
  """With no checkpoint to wait for, the guard still stops at the bad step: metrics.jsonl ends
  with it (the step dispatched after it is never recorded)."""
  from jaxpapers.core.metrics import read_metrics
  c, sampler, model = _setup(steps=8, ckpt_every=0, eval_every=0, inject_nan_step=3,
                             on_nonfinite="stop")
  mesh = make_mesh((1, 1), ("data", "model"), jax.devices()[:1])
  with pytest.raises(NonFiniteError, match=r"at step 3"):
    _train(c, sampler, model, tmp_path, mesh)
  rows = [r for r in read_metrics(tmp_path) if "loss" in r]
  assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[-1]["loss"] == "nan"


def test_overlapped_stop_one_step_before_a_save_checkpoints_nothing(tmp_path):
  """ckpt_every=4 with the loop overlapped: a NaN at step 2 is seen after step 3 is dispatched,
  and the run stops before the checkpoint of step 4 could be written (rows up to step 3 only)."""
  c, sampler, model = _setup(steps=8, ckpt_every=4, keep=10, eval_every=0, inject_nan_step=2,
                             on_nonfinite="stop")
  mesh = make_mesh((1, 1), ("data", "model"), jax.devices()[:1])
  with pytest.raises(NonFiniteError, match=r"at step 2"):
    _train(c, sampler, model, tmp_path, mesh)
  assert Checkpointer(tmp_path / "checkpoints", keep=10).steps() == []
  from jaxpapers.core.metrics import read_metrics
  assert [r["step"] for r in read_metrics(tmp_path) if "loss" in r] == [1, 2, 3]


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path, caplog):
  c, sampler, model = _setup(steps=4, ckpt_every=2, keep=5)
  mesh = make_mesh((1, 1), ("data", "model"), jax.devices()[:1])
  _train(c, sampler, model, tmp_path, mesh)
  for f in (tmp_path / "checkpoints" / "4").rglob("*"):
    if f.is_file() and f.stat().st_size > 0:
      f.write_bytes(b"\0" * 7)
  c.train.steps = 6
  _, _, fresh = _setup()
  out = _train(c, sampler, fresh, tmp_path, mesh)
  assert out.resumed_from == 2
  assert "step 4" in caplog.text and "unreadable" in caplog.text
  assert (tmp_path / "checkpoints" / "4.corrupt").is_dir()          # set aside, not deleted
  assert Checkpointer(tmp_path / "checkpoints").steps()[-1] == 6


def test_checkpoint_of_another_model_is_refused_and_kept(tmp_path):
  c, sampler, model = _setup(steps=2, ckpt_every=2)
  mesh = make_mesh((1, 1), ("data", "model"), jax.devices()[:1])
  _train(c, sampler, model, tmp_path, mesh)
  c.model.d_model = 32
  with pytest.raises(CheckpointError, match="written for a different model"):
    _train(c, sampler, GLM(model_config(c, 512), rngs=nnx.Rngs(params=0)), tmp_path, mesh)
  assert Checkpointer(tmp_path / "checkpoints").steps() == [2]         # not set aside


def test_no_usable_checkpoint_is_an_error(tmp_path):
  c, sampler, model = _setup(steps=2, ckpt_every=2)
  mesh = make_mesh((1, 1), ("data", "model"), jax.devices()[:1])
  _train(c, sampler, model, tmp_path, mesh)
  for f in (tmp_path / "checkpoints" / "2").rglob("*"):   # the checkpoint's files, not its table
    if f.is_file():
      f.write_bytes(b"x")
  with pytest.raises(CheckpointError, match="no usable checkpoint .* file\\(s\\) changed since the save"):
    _, _, fresh = _setup()
    _train(c, sampler, fresh, tmp_path, mesh)


def test_gradient_accumulation_equals_the_full_batch_gradient():
  """With SGD(lr=1) the update is -grad: 2 accumulated micro-batches (of unequal token counts)
  give the gradient of the whole batch's token-mean loss."""
  import jax.numpy as jnp
  import optax
  from jaxpapers.core.train import TrainState, make_train_step
  c, sampler, model = _setup()
  graphdef, params = nnx.split(model, nnx.Param)
  tx = optax.sgd(1.0)
  state = TrainState(step=jnp.int32(0), params=params, opt_state=tx.init(params),
                     rng=jax.random.key_data(jax.random.key(0)))
  batch = {k: jnp.asarray(v) for k, v in sampler(0).items()}
  assert batch["weights"][:4].sum() != batch["weights"][4:].sum()
  new, m = jax.jit(make_train_step(graphdef, loss_fn, tx, grad_accum=2))(state, batch, jnp.float32(1.0))
  (loss, aux), g = jax.value_and_grad(lambda p: loss_fn(nnx.merge(graphdef, p), batch, None),
                                      has_aux=True)(params)
  expected = jax.tree.map(lambda p, g: p - g, params, g)
  assert_close_scaled(new.params, expected, 1e-5)
  np.testing.assert_allclose(m["loss"], loss, rtol=1e-6)
  assert float(m["tokens"]) == float(aux["tokens"])


def test_weight_decay_only_on_matrices():
  import jax.numpy as jnp
  from jaxpapers.core.train import make_optimizer
  c, _, model = _setup()
  params = nnx.state(model, nnx.Param)
  tx = make_optimizer(c.train)
  zero = jax.tree.map(jnp.zeros_like, params)
  st = tx.init(params)
  for _ in range(2):   # the schedule starts at lr 0
    u, st = tx.update(zero, st, params)
  decayed = {jax.tree_util.keystr(k[:1]).strip("[]'") for k, v in jax.tree_util.tree_flatten_with_path(u)[0]
             if float(jnp.abs(v).max()) > 0}
  assert decayed == {"embed", "wq", "wk", "wv", "wo", "w_in", "w_out"}


@pytest.mark.parametrize("into, value, message", [
    ("grad", "nan", "non-finite gradient leaf"), ("grad", "inf", "non-finite gradient leaf"),
    ("param", "nan", "non-finite updated parameters")])
def test_injected_faults_are_skipped_and_named(tmp_path, caplog, into, value, message):
  """The fault injector's other places (faults.py uses them on every experiment): a NaN/Inf in
  one gradient leaf, or in the updated parameters, skips the step and leaves the state as it was."""
  c, sampler, model = _setup(steps=3, ckpt_every=0, eval_every=0, inject_nan_step=1,
                             inject_nan_into=into, inject_value=value)
  mesh = make_mesh((1, 1), ("data", "model"), jax.devices()[:1])
  out = _train(c, sampler, model, tmp_path, mesh)
  assert out.skipped_steps == [1]
  assert message in caplog.text and "at step 1" in caplog.text
  assert all_finite(out.state.params)
  assert np.isfinite(out.history[1]["loss"])       # the loss itself was not touched


def test_every_train_section_is_checked_by_its_own_key():
  from jaxpapers.core.errors import ConfigError
  from jaxpapers.core.train import validate_train_sections
  c = cfglib.load_config_file(configs_root() / "vpt/pipeline.py", "tiny")
  validate_train_sections(c)
  c.idm.train.b2 = 5.0
  with pytest.raises(ConfigError, match=r"--config.idm.train.b2 must be in \[0, 1\), got 5.0"):
    validate_train_sections(c)
  c = cfglib.load_config_file(configs_root() / "gebd/ladder.py", "tiny")
  c.base.lr = float("inf")     # a stage's partial override of the train section
  with pytest.raises(ConfigError, match="--config.base.lr must be a finite positive number"):
    validate_train_sections(c)
