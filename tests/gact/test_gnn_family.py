"""The GNN family of gact/memory: the embedded WordNet lexname graph and a jraph GCN whose layers
GACT compresses through the block hook."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxpapers.data.graphs import load_wordnet_lexname
from jaxpapers.gact.families import _module_block
from jaxpapers.gact.wrapper import compress_block
from jaxpapers.nn.gcn import GCN


def test_wordnet_graph_is_whole_symmetric_and_split():
  d = load_wordnet_lexname(feature_dim=16)
  n = 117_659
  assert d["x"].shape == (n, 16) and d["y"].shape == (n,) and len(d["classes"]) == 45
  assert set(np.unique(d["y"])) == set(range(45))
  assert len(d["senders"]) == 2 * 183_789
  pairs = set(zip(d["senders"].tolist(), d["receivers"].tolist()))
  assert all((r, s) in pairs for s, r in list(pairs)[:5000])          # both directions
  assert not (d["senders"] == d["receivers"]).any()
  masks = np.stack([d["train"], d["val"], d["test"]])
  assert (masks.sum(0) == 1).all() and abs(d["train"].mean() - 0.6) < 0.01
  sub = load_wordnet_lexname(feature_dim=16, max_nodes=500)
  assert sub["x"].shape == (500, 16) and max(sub["senders"].max(), sub["receivers"].max()) < 500
  np.testing.assert_array_equal(sub["y"], d["y"][:500])
  with pytest.raises(ValueError, match="max_nodes"):
    load_wordnet_lexname(max_nodes=1)


def _gcn_gradient(num_layers: int, seed: int):
  """grads(**hooks): the flat gradient of a GCN's loss on a 600-synset graph, the edge indices
  traced as in a train step; hooks go to GCN.__call__ (layer_wrapper)."""
  d = load_wordnet_lexname(feature_dim=16, max_nodes=600)
  gd, params = nnx.split(GCN(16, 32, num_layers, 45, rngs=nnx.Rngs(params=seed)), nnx.Param)
  x, y = jnp.asarray(d["x"]), jnp.asarray(d["y"])
  s, r = jnp.asarray(d["senders"]), jnp.asarray(d["receivers"])

  def grads(**hooks):
    def loss(p, s, r):
      logits = nnx.merge(gd, p)(x, s, r, **hooks)
      return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], -1).mean()
    return jnp.concatenate([g.ravel() for g in jax.tree.leaves(jax.jit(jax.grad(loss))(params, s, r))])
  return grads


def test_gcn_layers_compress_through_the_hook_without_per_op_code():
  gcn_grads = _gcn_gradient(2, 0)

  def grads(bits, mode="residuals"):
    wrap = lambda i, fn, p, x, s: compress_block(fn, bits, mode)(p, x, s)
    return gcn_grads(layer_wrapper=lambda i, blk: (
        lambda h, snd, rcv: _module_block(wrap, i, blk, h, jnp.uint32(5 + i), snd, rcv)))

  exact = gcn_grads()
  np.testing.assert_array_equal(grads(32), exact)               # full width = no wrapper
  rel = lambda g: float(jnp.linalg.norm(g - exact) / jnp.linalg.norm(exact))
  r8, r2 = rel(grads(8)), rel(grads(2))
  assert 0 < r8 < 0.02 and r8 < r2 < 0.5, (r8, r2)
  np.testing.assert_array_equal(grads(32, "recompute"), exact)
  c8, c2 = rel(grads(8, "recompute")), rel(grads(2, "recompute"))
  assert 0 < c8 < c2 < 0.5, (c8, c2)
