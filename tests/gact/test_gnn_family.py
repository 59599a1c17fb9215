"""The GNN family of gact/memory: the embedded WordNet lexname graph and a jraph GCN whose layers
GACT compresses through the block hook."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxpapers.data.graphs import load_wordnet_lexname
from jaxpapers.gact.block_families import _wrapped
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


def test_gcn_layers_compress_through_the_hook_without_per_op_code():
  d = load_wordnet_lexname(feature_dim=16, max_nodes=600)
  model = GCN(16, 32, 2, 45, rngs=nnx.Rngs(params=0))
  gd, params = nnx.split(model, nnx.Param)
  x, y = jnp.asarray(d["x"]), jnp.asarray(d["y"])
  s, r = jnp.asarray(d["senders"]), jnp.asarray(d["receivers"])

  def grads(bits):
    def loss(p):
      wrapper = None if bits is None else (
          lambda i, blk: _wrapped(blk, lambda fn: compress_block(fn, bits, "residuals"), jnp.uint32(5 + i)))
      logits = nnx.merge(gd, p)(x, s, r, wrapper)
      return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], -1).mean()
    return jnp.concatenate([g.ravel() for g in jax.tree.leaves(jax.jit(jax.grad(loss))(params))])

  exact = grads(None)
  np.testing.assert_array_equal(grads(32), exact)               # full width = no wrapper
  rel = lambda g: float(jnp.linalg.norm(g - exact) / jnp.linalg.norm(exact))
  r8, r2 = rel(grads(8)), rel(grads(2))
  assert 0 < r8 < 0.02 and r8 < r2 < 0.5, (r8, r2)


def test_gcn_as_a_scanned_stack_exact_compressed_and_probed():
  from jaxpapers.gact.stack import compressed_stack, probe_stack
  from jaxpapers.nn.stack import scan_stack
  d = load_wordnet_lexname(feature_dim=16, max_nodes=600)
  model = GCN(16, 32, 3, 45, rngs=nnx.Rngs(params=1))
  gd, params = nnx.split(model, nnx.Param)
  x, y = jnp.asarray(d["x"]), jnp.asarray(d["y"])
  s, r = jnp.asarray(d["senders"]), jnp.asarray(d["receivers"])

  def grads(stack):
    def loss(p, s, r):     # the edge indices traced, as in a train step
      logits = nnx.merge(gd, p)(x, s, r, layer_stack=stack, seed=3)
      return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], -1).mean()
    return jnp.concatenate([g.ravel() for g in jax.tree.leaves(jax.jit(jax.grad(loss))(params, s, r))])

  loop = grads(None)
  rel = lambda g: float(jnp.linalg.norm(g - loop) / jnp.linalg.norm(loop))
  assert rel(grads(scan_stack(remat=True))) < 1e-5
  assert rel(grads(compressed_stack([32, 32, 32]))) < 1e-5
  assert rel(grads(probe_stack(jnp.full(3, 32.0)))) < 1e-5
  r2 = rel(grads(compressed_stack([2, 2, 2])))
  r8 = rel(grads(compressed_stack([8, 8, 8])))
  p1 = rel(grads(probe_stack(jnp.array([1.0, 32.0, 32.0]))))
  p8 = rel(grads(probe_stack(jnp.array([8.0, 32.0, 32.0]))))
  assert 0 < r8 < r2 < 0.5 and 0 < p8 < p1, (r8, r2, p8, p1)
