"""Graph convolutional network (Kipf & Welling, ICLR 2017) node classifier on jraph."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import jraph
from flax import nnx

from jaxpapers.nn.norm import fused_layer_norm


class GCNLayer(nnx.Module):
  """h + relu(LayerNorm(D^-1/2 (A + I) D^-1/2 h W)): Kipf & Welling's propagation rule (their
  eq. 2, `jraph.GraphConvolution` with self edges and symmetric normalisation), with a residual
  connection and LayerNorm so that deeper stacks train (`fused_layer_norm`: its backward keeps
  the normalised output and 1/std, see jaxpapers/nn/norm.py)."""

  def __init__(self, dim: int, *, rngs: nnx.Rngs):
    self.linear = nnx.Linear(dim, dim, rngs=rngs)
    self.norm = nnx.LayerNorm(dim, rngs=rngs)

  def __call__(self, h, senders, receivers):
    n = h.shape[0]
    graph = jraph.GraphsTuple(nodes=self.linear(h), edges=None, senders=senders,
                              receivers=receivers, n_node=jnp.array([n]),
                              n_edge=jnp.array([senders.shape[0]]), globals=None)
    conv = jraph.GraphConvolution(lambda x: x, add_self_edges=True, symmetric_normalization=True)
    z = fused_layer_norm(conv(graph).nodes, self.norm.scale[...], self.norm.bias[...],
                         self.norm.epsilon)
    return h + jax.nn.relu(z)


class GCN(nnx.Module):
  """Linear input projection -> `num_layers` GCNLayers -> linear classifier, on one graph."""

  def __init__(self, in_dim: int, hidden: int, num_layers: int, num_classes: int, *,
               rngs: nnx.Rngs):
    self.inp = nnx.Linear(in_dim, hidden, rngs=rngs)
    self.layers = nnx.List([GCNLayer(hidden, rngs=rngs) for _ in range(num_layers)])
    self.out = nnx.Linear(hidden, num_classes, rngs=rngs)

  def __call__(self, x, senders, receivers, layer_wrapper: Callable | None = None):
    """Logits [N, classes]. Layers run in a Python loop, each through
    layer_wrapper(index, layer) -> callable(h, senders, receivers) if given (e.g. activation
    compression, `jaxpapers.gact`)."""
    h = self.inp(x)
    for i, layer in enumerate(self.layers):
      h = (layer if layer_wrapper is None else layer_wrapper(i, layer))(h, senders, receivers)
    return self.out(h)
