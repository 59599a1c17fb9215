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


def apply_rope(x: jnp.ndarray, positions: jnp.ndarray, base: float = 10000.0) -> jnp.ndarray:
  """RoPE over the full head dimension. x: [B, T, H, D]; positions: [B, T]."""
  ang = rope_angles(positions, x.shape[-1], base)[:, :, None, :]
  out = x.astype(jnp.float32) * jnp.cos(ang) + rotate_half(x.astype(jnp.float32)) * jnp.sin(ang)
  return out.astype(x.dtype)


def apply_rope_2d(x: jnp.ndarray, positions: jnp.ndarray, block_positions: jnp.ndarray,
                  base: float = 10000.0) -> jnp.ndarray:
  """2-D RoPE of the original GLM's 2-D positions: the first half of the head dimension rotates by
  the position id, the second half by the intra-block position id."""
  d = x.shape[-1] // 2
  return jnp.concatenate([apply_rope(x[..., :d], positions, base),
                          apply_rope(x[..., d:], block_positions, base)], axis=-1)
