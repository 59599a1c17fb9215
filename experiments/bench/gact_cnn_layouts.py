"""Activation memory of the ResNet train step under different saved-tensor layouts (compile only).

  python experiments/bench/gact_cnn_layouts.py

XLA's compiled temp bytes of the whole train step (AdamW) at batch 256 minus at batch 1, for the
ResNet of `gact/memory` (widths 16/32/64, 2 blocks per stage, blocks in a Python loop): plain,
`nnx.remat` per block, GACT compressed-recompute at 4 and 2 bits, GACT residual mode at 4 bits.
"""
import jax, jax.numpy as jnp, optax
from flax import nnx
from jaxpapers.nn.resnet import ResNet
from jaxpapers.gact.measure import temp_bytes
from jaxpapers.gact.wrapper import compress_module
m = ResNet((16,32,64), 2, rngs=nnx.Rngs(params=0))
g, p = nnx.split(m, nnx.Param)
tx = optax.adamw(1e-3)
ex = lambda b: {"x": jnp.zeros((b,28,28,1)), "y": jnp.zeros((b,), jnp.int32)}
def lf_for(wrap):
  def lf(model, batch, key):
    lg = model(batch["x"], wrap(key) if wrap else None)
    return -jnp.take_along_axis(jax.nn.log_softmax(lg), batch["y"][:,None], -1).mean(), {}
  return lf
def remat(key):
  return lambda i, blk: (lambda x: nnx.remat(lambda b, x: b(x))(blk, x))
def comp(mode, bits):
  return lambda key: (lambda i, blk: (lambda x: compress_module(blk, bits, mode)(x, jnp.uint32(i))))
for name, w in [("L0", None), ("remat", remat), ("recompute4", comp("recompute", 4)), ("recompute2", comp("recompute", 2)), ("resid4", comp("residuals", 4))]:
  a, b = temp_bytes(g, lf_for(w), tx, p, ex(256)), temp_bytes(g, lf_for(w), tx, p, ex(1))
  print(f"{name:12s} activation memory {(a - b) / 2**20:8.1f} MiB", flush=True)
