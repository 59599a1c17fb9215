"""GACT's levels on a GLM stack through `gact.families.glm_loss`: every layer and the head as a
block, full width exact, the traced-width probe, the level wrappers; the max-batch prediction."""
import functools

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from jaxpapers.core.errors import ConfigError
from jaxpapers.gact import adaptive
from jaxpapers.gact.experiments import make_wrap, probe_wrap, units
from jaxpapers.gact.families import Family, glm_loss
from jaxpapers.gact.measure import max_batch_linear
from jaxpapers.glm.model import GLM, GLMConfig
from pallas_kernels.act_compress import compress_ref, decompress_ref, fake_quantize
from jp_testutil import assert_close_scaled

CFG = GLMConfig(vocab_size=300, num_layers=2, d_model=64, num_heads=4, dropout=0.0, remat=False)
BATCH = {"tokens": jnp.arange(32).reshape(2, 16) % 300, "positions": jnp.tile(jnp.arange(16), (2, 1)),
         "context_len": jnp.array([8, 5]), "targets": (jnp.arange(32).reshape(2, 16) * 7) % 300,
         "weights": jnp.ones((2, 16))}


@functools.cache
def _split():
  return nnx.split(GLM(CFG, rngs=nnx.Rngs(params=0)), nnx.Param)


def _grads(wrap, seed=0):
  graphdef, params = _split()
  g = jax.jit(jax.grad(lambda p: glm_loss(nnx.merge(graphdef, p), BATCH, wrap, jnp.uint32(seed))))
  return g(params)


def _rel(a, b):
  num = sum(float(jnp.sum((x - y) ** 2)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  return (num / sum(float(jnp.sum(x ** 2)) for x in jax.tree.leaves(a))) ** 0.5


def _units(level):
  graphdef, params = _split()
  fam = Family("t", "", nnx.merge(graphdef, params), glm_loss, None, None, None, None)
  return units(fam, level, BATCH)


def test_levels_on_the_glm_stack_full_width_checkpointed_probed_and_compressed():
  exact = _grads(None)
  L0 = adaptive.get_level("L0")
  assert len(_units(adaptive.get_level("L2.2"))) == CFG.num_layers + 1     # the layers and the head
  acts = _units(adaptive.get_level("L2.2"))
  n = sum(len(u) for u in acts)
  assert all(len(u) > 10 for u in acts[:-1]), [len(u) for u in acts]       # every saved tensor
  assert make_wrap(L0, None) is None
  assert_close_scaled(_grads(make_wrap(adaptive.get_level("ckpt"), None)), exact, 1e-5)
  offsets = [0]
  for u in acts:
    offsets.append(offsets[-1] + len(u))
  probe = probe_wrap(adaptive.get_level("L2.2"), offsets)
  graphdef, params = _split()
  probed = jax.jit(lambda bits: jax.grad(      # one compiled gradient for every width (traced)
      lambda p: glm_loss(nnx.merge(graphdef, p), BATCH, probe(bits), jnp.uint32(0)))(params))
  assert_close_scaled(probed(jnp.full(n, 32.0)), exact, 1e-5)
  # every width 32 through the compressed path (its vjp recomputes broadcasts): the exact gradient
  full = make_wrap(adaptive.get_level("L1"), [tuple([32] * len(u)) for u in acts])
  assert_close_scaled(_grads(full), exact, 1e-5)
  one = _rel(exact, probed(jnp.full(n, 32.0).at[0].set(1.0)))
  eight = _rel(exact, probed(jnp.full(n, 32.0).at[0].set(8.0)))
  assert 0 < eight < one
  r2 = _rel(exact, _grads(make_wrap(adaptive.get_level("L1.2"), [tuple([2] * len(u)) for u in acts], ), 1))
  r8 = _rel(exact, _grads(make_wrap(adaptive.get_level("L1.1"), [tuple([8] * len(u)) for u in acts]), 1))
  assert 0 < r8 < r2 < 1.0, (r8, r2)
  ck = _rel(exact, _grads(make_wrap(adaptive.get_level("L2.2_ckpt"), [2] * (CFG.num_layers + 1)), 1))
  assert 0 < ck < 1.0


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_fake_quantize_equals_compress_then_decompress(bits):
  x = jax.random.normal(jax.random.key(bits), (5, 300))
  assert_close_scaled(jax.jit(fake_quantize)(x, bits, jnp.uint32(3)),
                      decompress_ref(compress_ref(x, bits, 3)), 5e-7)   # a few ulps of max|x|;
  # a different code moves an element by a whole quantisation step (its group's range / 255 or more)


def test_max_batch_prediction_is_checked_by_compiling():
  calls = []

  def temp_at(b):      # 100 + 7 b bytes, with a step at 300 (non-linear on purpose)
    calls.append(b)
    return 100 + 7 * b + (50 if b > 300 else 0)

  b = max_batch_linear(temp_at, 2000, 8, 4096)
  assert temp_at(b) <= 2000 and b == 271                 # (2000 - 100) // 7
  b = max_batch_linear(temp_at, 2200, 8, 4096)           # the prediction, 300, fits; 301+ not
  assert temp_at(b) <= 2200 and b >= 0.97 * 300 - 1
  assert max_batch_linear(temp_at, 10_000, 8, 500) == 500
  with pytest.raises(ConfigError, match="over the budget"):
    max_batch_linear(temp_at, 50, 8, 100)


def test_max_batch_search_brackets_a_wrong_prediction():
  """A prediction far off (bytes jump at 2,021, as the tiny GCN's did) is refined to within 3% of
  the true limit in a few compiles, not stepped down 3% per compile; a prediction that fits is
  not bisected against a far batch known to fail."""
  calls = []

  def temp_at(b):
    calls.append(b)
    return 1_000 * b + (500_000 if b > 2_020 else 0)

  b = max_batch_linear(temp_at, 2_400_000, 1_000, 100_000)  # the line predicts 2,400
  assert temp_at(b) <= 2_400_000 and 2_020 / 1.03 <= b <= 2_020, b
  assert len(set(calls)) <= 6, sorted(set(calls))
  calls.clear()                       # a prediction on the budget's own batch: a 5% step, no more
  assert max_batch_linear(temp_at, temp_at(2_000), 2_000, 100_000) == 2_000
  assert len(set(calls)) <= 4, sorted(set(calls))


def test_max_batch_below_the_measured_sizes():
  """Where even the smaller measured batch is over the budget, the search bisects downward."""
  b = max_batch_linear(lambda n: 100 * n, 1_000, 64, 10_000)
  assert b == 10
