"""Normalisation as plain functions over stacked parameters."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def layer_norm(x, scale, bias, eps: float = 1e-5):
  """LayerNorm over the last axis, computed in FP32."""
  xf = x.astype(jnp.float32)
  mean = xf.mean(-1, keepdims=True)
  var = jnp.square(xf - mean).mean(-1, keepdims=True)
  y = (xf - mean) * jax.lax.rsqrt(var + eps)
  return (y * scale + bias).astype(x.dtype)
