"""nn.embedding.lookup: jnp.take's values, and its gradient scattered in parts equals take's."""
import jax
import jax.numpy as jnp
import numpy as np

from jaxpapers.nn import embedding
from jaxpapers.nn.embedding import lookup, shrink_gradient
from jp_testutil import assert_close_scaled


def test_lookup_gradient_in_parts_equals_take(monkeypatch):
  monkeypatch.setattr(embedding, "SCATTER_ROWS", 7)      # 5 x 9 = 45 ids: 6 parts and a remainder
  table = jax.random.normal(jax.random.key(0), (11, 4))
  ids = jax.random.randint(jax.random.key(1), (5, 9), 0, 11)
  g = jax.random.normal(jax.random.key(2), (5, 9, 4))
  np.testing.assert_array_equal(lookup(table, ids), jnp.take(table, ids, axis=0))
  got = jax.grad(lambda t: jnp.sum(lookup(shrink_gradient(t, 0.1), ids) * g))(table)
  want = jax.grad(lambda t: jnp.sum(shrink_gradient(jnp.take(t, ids, axis=0), 0.1) * g))(table)
  assert_close_scaled(got, want, 1e-6)
