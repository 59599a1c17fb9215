"""Gated linear unit MLPs (Shazeer 2020)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxpapers.nn.quantized import dense


def geglu(x: jnp.ndarray, w_in: jnp.ndarray, b_in: jnp.ndarray, w_out: jnp.ndarray,
          b_out: jnp.ndarray) -> jnp.ndarray:
  """GeGLU: [u, g] = x W_in + b (u the first half, g the second half); out = (u * GeLU(g)) W_out + b.

  w_in: [E, 2, F] (index 0 = first half, 1 = gate half), w_out: [F, E]; either may be a
  QuantizedWeight (see `nn.quantized.dense`). The gate is the second
  half, as GLM-130B's released GEGLU computes `x1 * gelu(x2)` (GLM-130B §2.3)."""
  h = dense(x, w_in, 1) + b_in
  u, g = h[..., 0, :], h[..., 1, :]
  return dense(u * jax.nn.gelu(g, approximate=False), w_out, 1) + b_out
