"""Rotary position embedding (RoFormer, Su et al. 2021), rotate-half layout."""
from __future__ import annotations

import jax.numpy as jnp


def rotate_half(x: jnp.ndarray) -> jnp.ndarray:
  """[x1, x2] -> [-x2, x1] over the last axis (the GPT-NeoX / GLM-130B layout)."""
  x1, x2 = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([-x2, x1], axis=-1)


def rope_angles(positions: jnp.ndarray, dim: int, base: float = 10000.0) -> jnp.ndarray:
  """Angles pos * base^(-2i/dim) for i < dim/2, duplicated to `dim` (rotate-half layout)."""
  inv_freq = base ** (-jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
  ang = positions.astype(jnp.float32)[..., None] * inv_freq
  return jnp.concatenate([ang, ang], axis=-1)


def rope_tables(positions, dim: int, base: float = 10000.0, block_positions=None):
  """(cos, sin) of shape [B, T, 1, dim], computed once and shared by every layer.

  With `block_positions` (2-D positions of the original GLM), the first half of the head
  dimension rotates by `positions`, the second half by `block_positions`."""
  if block_positions is None:
    ang = rope_angles(positions, dim, base)
  else:
    ang = jnp.concatenate([rope_angles(positions, dim // 2, base),
                           rope_angles(block_positions, dim // 2, base)], axis=-1)
  ang = ang[:, :, None, :]
  return jnp.cos(ang), jnp.sin(ang)


def apply_rope_tables(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray,
                      two_d: bool = False) -> jnp.ndarray:
  """x * cos + rotate_half(x) * sin; with 2-D tables each half of the head rotates on its own."""
  xf = x.astype(jnp.float32)
  if two_d:
    h = x.shape[-1] // 2
    rot = jnp.concatenate([rotate_half(xf[..., :h]), rotate_half(xf[..., h:])], axis=-1)
  else:
    rot = rotate_half(xf)
  return (xf * cos + rot * sin).astype(x.dtype)


def apply_rope(x: jnp.ndarray, positions: jnp.ndarray, base: float = 10000.0) -> jnp.ndarray:
  """RoPE over the full head dimension. x: [B, T, H, D]; positions: [B, T]."""
  cos, sin = rope_tables(positions, x.shape[-1], base)
  return apply_rope_tables(x, cos, sin)
