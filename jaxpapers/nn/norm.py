"""Normalisation as plain functions over stacked parameters."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def layer_norm(x, scale, bias, eps: float = 1e-5):
  """LayerNorm over the last axis, computed in FP32 (its gradient by autodiff)."""
  xf = x.astype(jnp.float32)
  mean = xf.mean(-1, keepdims=True)
  var = jnp.square(xf - mean).mean(-1, keepdims=True)
  y = (xf - mean) * jax.lax.rsqrt(var + eps)
  return (y * scale + bias).astype(x.dtype)


@functools.partial(jax.jit, inline=False)
def norm_statistics(xf):
  """Per-row mean and variance over the last axis (a call of its own in the jaxpr, see
  `fused_layer_norm`)."""
  mean = xf.mean(-1, keepdims=True)
  return mean, jnp.square(xf - mean).mean(-1, keepdims=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _layer_norm(xf, scale, bias, eps):
  return _layer_norm_fwd(xf, scale, bias, eps)[0]


def _layer_norm_fwd(xf, scale, bias, eps):
  mean, var = norm_statistics(xf)
  rstd = jax.lax.rsqrt(var + eps)
  xh = (xf - mean) * rstd
  return xh * scale + bias, (xh, rstd, scale, bias)


def _layer_norm_bwd(eps, res, g):
  del eps
  xh, rstd, scale, bias = res
  gs = g * scale
  gx = rstd * (gs - gs.mean(-1, keepdims=True) - xh * (gs * xh).mean(-1, keepdims=True))
  rows = tuple(range(xh.ndim - 1))
  gscale = (g * xh).sum(rows) if jnp.ndim(scale) else (g * xh).sum()     # scale: () or (D,)
  gbias = g.sum(rows) if jnp.ndim(bias) else g.sum()
  return gx, gscale.astype(jnp.result_type(scale)), gbias.astype(jnp.result_type(bias))


_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


def fused_layer_norm(x, scale, bias, eps: float = 1e-5):
  """`layer_norm` with a hand-written backward that keeps only x_hat = (x - mean) / std and 1/std
  (as a fused layer norm that saves its output does), and computes
  dx = rstd (g' - mean(g') - x_hat mean(g' x_hat)), g' = g * scale.

  The statistics come from `norm_statistics`, a call of that name in the jaxpr: activation
  compression (`jaxpapers.gact`) keeps them in FP32, as the official GACT keeps the statistics
  PyTorch's normalisation layers save (outputs that need no gradient), and compresses x_hat.
  Autodiff of `layer_norm` saves the centred input, the statistics and derived tensors instead;
  compressed independently they break the identities of this backward (its result is
  orthogonal to 1 and to x_hat), and a constant row (1/std = 1/sqrt(eps)) multiplies their
  rounding noise by up to 1,000 (experiments/gact/README.md measures both on the GCN). x_hat of a
  constant row is 0, and its rounding noise is only multiplied back by 1/std, as the exact
  gradient is. Its mean and variance are computed in two passes (flax's `nnx.LayerNorm`, which the
  GCN used before, takes E[x^2] - E[x]^2): float rounding differs. Forward-mode autodiff (jvp)
  is not defined through it (a `custom_vjp`)."""
  d = x.shape[-1]
  for name, p in (("scale", scale), ("bias", bias)):
    if jnp.shape(p) not in ((), (d,)):
      raise ValueError(f"fused_layer_norm: {name} has shape {jnp.shape(p)}; expected () or ({d},)")
  return _layer_norm(x.astype(jnp.float32), scale, bias, eps).astype(x.dtype)
