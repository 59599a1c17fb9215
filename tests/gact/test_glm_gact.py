"""GACT on a GLM layer stack: the layer_wrapper and layer_stack hooks, traced-width probes, the
max-batch search."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxpapers.core.errors import ConfigError
from jaxpapers.gact.measure import max_batch
from jaxpapers.gact.stack import compressed_stack
from jaxpapers.gact.wrapper import compress_block, probe_block
from jaxpapers.glm.model import GLM, GLMConfig
from pallas_kernels.act_compress import compress_ref, decompress_ref, fake_quantize
from jp_testutil import assert_close_scaled

CFG = GLMConfig(vocab_size=300, num_layers=3, d_model=64, num_heads=4, dropout=0.0)


@functools.cache
def _split():
  return nnx.split(GLM(CFG, rngs=nnx.Rngs(params=0)), nnx.Param)


def _grads(wrapper, seed=0, stack=None):
  return _exact() if wrapper is None and stack is None and seed == 0 else _compute(wrapper, seed, stack)


def _compute(wrapper, seed, stack=None):
  graphdef, params = _split()
  tok = jnp.arange(32).reshape(2, 16) % 300
  pos = jnp.tile(jnp.arange(16), (2, 1))
  ctx = jnp.array([8, 5])

  def loss(p):
    m = nnx.merge(graphdef, p)
    return jnp.mean(m(tok, pos, ctx, dropout_key=jax.random.key(seed), layer_wrapper=wrapper,
                      layer_stack=stack) ** 2)

  return jax.jit(jax.grad(loss))(params)


@functools.cache
def _exact():
  """The remat (default) gradient, computed once for the tests that compare against it."""
  return _compute(None, 0)


def _rel(a, b):
  num = sum(float(jnp.sum((x - y) ** 2)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  den = sum(float(jnp.sum(x ** 2)) for x in jax.tree.leaves(a))
  return (num / den) ** 0.5


def test_layer_wrapper_keeps_the_gradient_at_full_width_and_approximates_it_compressed():
  exact = _grads(None)                                                   # remat (the default)
  full = _grads(lambda fn: compress_block(fn, 32, "recompute"))
  assert _rel(exact, full) < 1e-5
  r8 = _rel(exact, _grads(lambda fn: compress_block(fn, 8, "recompute")))
  assert 0 < r8 < 0.02, r8
  assert _rel(exact, _grads(lambda fn: compress_block(fn, 4, "residuals"))) < 0.2


def test_compressed_stack_is_exact_at_32_bits_and_matches_the_per_layer_wrapper():
  exact = _grads(None)
  assert _rel(exact, _grads(None, stack=compressed_stack([32, 32, 32]))) < 1e-5
  # one width everywhere: the same codes (same seeds) as compress_block around each layer
  per_layer = _grads(lambda fn: compress_block(fn, 2, "recompute"), seed=3)
  stacked = _grads(None, seed=3, stack=compressed_stack([2, 2, 2]))
  assert _rel(per_layer, stacked) < 1e-5
  # per-layer widths (two width classes) in one backward scan: more bits, closer to exact
  r2 = _rel(exact, stacked)
  r_mixed = _rel(exact, _grads(None, seed=3, stack=compressed_stack([8, 8, 2])))
  assert 0 < r_mixed < r2 < 1.0, (r_mixed, r2)
  with pytest.raises(ConfigError, match="2 layer widths given for a stack of 3"):
    _grads(None, stack=compressed_stack([8, 8]))
  with pytest.raises(ConfigError, match="activation bits"):
    compressed_stack([8, 3, 8])


def test_probe_widths_are_traced_and_32_is_exact():
  exact = _grads(None)
  assert_close_scaled(_grads(probe_block(jnp.full(3, 32.0))), exact, 1e-5)
  one = _rel(exact, _grads(probe_block(jnp.array([1.0, 32.0, 32.0]))))
  eight = _rel(exact, _grads(probe_block(jnp.array([8.0, 32.0, 32.0]))))
  assert eight < one


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_fake_quantize_equals_compress_then_decompress(bits):
  x = jax.random.normal(jax.random.key(bits), (5, 300))
  assert_close_scaled(jax.jit(fake_quantize)(x, bits, jnp.uint32(3)),
                      decompress_ref(compress_ref(x, bits, 3)), 5e-7)   # a few ulps of max|x|;
  # a different code moves an element by a whole quantisation step (its group's range / 255 or more)


def test_max_batch_search_finds_the_boundary():
  calls = []

  def temp_at(b):      # 100 + 7 b bytes, with a step at 300 (non-linear on purpose)
    calls.append(b)
    return 100 + 7 * b + (50 if b > 300 else 0)

  b = max_batch(temp_at, 2000, 8, 4096)
  assert temp_at(b) <= 2000 and b >= 0.94 * 264    # the true max is 264
  assert max_batch(temp_at, 10_000, 8, 500) == 500
  with pytest.raises(ConfigError, match="even batch 1"):
    max_batch(temp_at, 50, 8, 100)
  # multiples of a micro-batch only: a batch off the grid that would fit is never returned
  off_grid = lambda b: temp_at(b) + (0 if b % 8 == 0 else 10_000)
  b8 = max_batch(off_grid, 2000, 64, 4096, multiple=8)
  assert b8 % 8 == 0 and off_grid(b8) <= 2000 and b8 >= 0.94 * 264 - 8
  # no multiple fits (100 + 7 * 8 > 150): the largest batch below one micro-batch, 7
  assert max_batch(temp_at, 150, 64, 4096, multiple=8) == 7


def test_compressed_stack_in_micro_batches_saves_the_same_codes():
  """layer_chunk > 0: each part is compressed at its element offset, so 3 rows in parts of 2
  (a full part and a remainder) give the unchunked stack's gradient; rows that are not whole
  256-value groups are refused."""
  tok = jnp.arange(48).reshape(3, 16) % 300
  pos, ctx = jnp.tile(jnp.arange(16), (3, 1)), jnp.array([8, 5, 16])

  def grads(chunk, cfg=CFG, seeds=(5,)):
    graphdef, params = nnx.split(GLM(dataclasses.replace(cfg, layer_chunk=chunk),
                                     rngs=nnx.Rngs(params=0)), nnx.Param)
    loss = lambda p, key: jnp.mean(nnx.merge(graphdef, p)(
        tok, pos, ctx, dropout_key=key, layer_stack=compressed_stack([2, 8, 1])) ** 2)
    g = jax.jit(jax.grad(loss))
    return [g(params, jax.random.key(s)) for s in seeds]

  whole, other_seed = grads(0, seeds=(5, 6))
  assert _rel(whole, grads(2)[0]) < 1e-5
  assert _rel(whole, other_seed) > 1e-3       # the rounding noise is there (not a no-op)
  with pytest.raises(ConfigError, match="multiple of 256"):
    grads(2, dataclasses.replace(CFG, d_model=60, num_heads=4))


def test_compressed_stack_on_a_whole_batch_with_a_padded_last_group():
  """chunk 0 and rows of 15 values (GCN-like [N, hidden] with N * hidden not a multiple of 256):
  the whole tensor's codes, last group padded; 8 bits close to exact, 32 bits exact."""
  h = jax.random.normal(jax.random.key(1), (37, 15))
  ws = jax.random.normal(jax.random.key(2), (2, 15, 15)) / 4
  layer_fn = lambda shared, w, h, part: jnp.tanh(h @ w) + h

  def grad(stack):
    return jax.grad(lambda ws: jnp.sum(stack(layer_fn, h, ws, {}, jnp.arange(2, dtype=jnp.uint32)) ** 2))(ws)

  exact = grad(compressed_stack([32, 32]))
  assert_close_scaled(exact, grad(lambda f, h, xs, sh, s: jax.lax.scan(
      lambda h, w: (f(sh, w, h, None), None), h, xs)[0]), 1e-5)
  assert 0 < _rel(exact, grad(compressed_stack([8, 8]))) < 0.05


def test_memory_probe_options_leave_the_temp_bytes_unchanged():
  """`temp_bytes` compiles without the backend's code optimisation (faster); buffer assignment,
  hence the temp bytes, is the default compile's (the 2-bit GLM stack in micro-batches)."""
  import optax
  from jaxpapers.gact.measure import MEMORY_PROBE_OPTIONS, step_and_args, temp_bytes
  graphdef, params = nnx.split(GLM(dataclasses.replace(CFG, layer_chunk=2), rngs=nnx.Rngs(params=0)),
                               nnx.Param)
  batch = {"tokens": jnp.zeros((4, 16), jnp.int32), "positions": jnp.tile(jnp.arange(16), (4, 1)),
           "context_len": jnp.full((4,), 8)}

  def loss_fn(model, batch, key):
    h = model(batch["tokens"], batch["positions"], batch["context_len"], dropout_key=key,
              layer_stack=compressed_stack([2] * CFG.num_layers))
    return jnp.mean(h ** 2), {}

  tx = optax.adamw(1e-3)
  step, args = step_and_args(graphdef, loss_fn, tx, params, batch)
  default = step.lower(*args).compile().memory_analysis().temp_size_in_bytes
  assert MEMORY_PROBE_OPTIONS and temp_bytes(graphdef, loss_fn, tx, params, batch) == default > 0
