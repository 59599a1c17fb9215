"""In-place micro-batching (nn/micro_batch.py): values and gradients equal the whole-batch
function's, remainders included; the forward and backward hold one [B, ...] buffer."""
import jax
import jax.numpy as jnp
import numpy as np

from jaxpapers.nn.micro_batch import micro_batched, micro_batched_sum
from jp_testutil import assert_close_scaled


def _layer(params, h, side, part):
  w, idx = params
  scale, labels = side            # a float and an integer per-row input
  return jnp.tanh(h @ w) * scale[:, None, None] + h * (labels[:, None, None] + idx)


def _inputs(rows=7):
  k = jax.random.split(jax.random.key(0), 3)
  h = jax.random.normal(k[0], (rows, 4, 16))
  w = jax.random.normal(k[1], (16, 16)) / 4
  side = (jax.random.uniform(k[2], (rows,)), jnp.arange(rows) % 3)
  return h, w, side


def test_micro_batched_equals_the_whole_batch_in_value_and_gradient():
  h, w, side = _inputs()               # 7 rows in parts of 3: two full parts and a remainder

  def loss(w, h, scale, chunk):
    return jnp.sum(micro_batched(_layer, chunk, (w, 2), h, (scale, side[1])) ** 2)

  want = jax.value_and_grad(loss, argnums=(0, 1, 2))(w, h, side[0], 0)
  got = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)), static_argnums=3)(w, h, side[0], 3)
  assert_close_scaled(got, want, 1e-5)     # another summation order; a wrong part moves O(max)


def test_micro_batched_sum_is_a_fused_loss_and_gradient():
  h, w, side = _inputs()

  def part(params, h, side):
    return jnp.sum(jnp.tanh(h @ params) * side[0][:, None, None])

  def loss(w, h, chunk):
    return 0.5 * micro_batched_sum(part, chunk, w, h, side)

  want = jax.value_and_grad(lambda w, h: 0.5 * part(w, h, side), argnums=(0, 1))(w, h)
  got = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)(w, h, 3)
  assert_close_scaled(got, want, 1e-5)
  # the side inputs are data: no gradient flows into them
  g_side = jax.grad(lambda s: micro_batched_sum(part, 3, w, h, (s, side[1])))(side[0])
  np.testing.assert_array_equal(g_side, 0.0)


def test_micro_batched_step_holds_one_buffer_per_direction():
  """XLA's compiled temp bytes of grad through 4 micro-batched layers on a 16 MiB batch: the
  layer inputs saved for the backward (4 x 16 MiB) plus about one buffer for the in-place
  forward and one for the cotangent. Slicing a part inside the iteration that overwrites it
  made XLA copy the whole buffer twice per part (about 2 more buffers)."""
  B, T, E = 1024, 16, 256
  mib = B * T * E * 4 / 2**20
  w = jnp.zeros((4, E, E))
  f = lambda p, h, side, part: jnp.tanh(h @ p) + h

  def loss(w, h):
    body = lambda h, w_l: (micro_batched(f, 8, w_l, h), None)
    return jnp.sum(jax.lax.scan(body, h, w)[0] ** 2)

  x = jax.ShapeDtypeStruct((B, T, E), jnp.float32)
  temp = jax.jit(jax.grad(loss)).lower(w, x).compile().memory_analysis().temp_size_in_bytes / 2**20
  assert temp < (4 + 2.5) * mib, (temp, mib)
