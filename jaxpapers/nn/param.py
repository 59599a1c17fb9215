"""Parameters that carry logical axis names (mapped to mesh axes by `jaxpapers.core.mesh`)."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx


def param(key: jax.Array, init: Callable, shape: Sequence[int], axes: Sequence[str | None],
          dtype=jnp.float32, decay: bool | None = None, dense_in: int | None = None,
          frozen: bool = False, kind: type[nnx.Param] = nnx.Param) -> nnx.Param:
  """An nnx.Param initialised by `init(key, shape, dtype)` with `axes` metadata and a `decay`
  flag for weight decay (default: matrices decay; a stacked-layer axis does not count).

  `kind` is the Variable type (a subclass of nnx.Param that filters select, e.g. `nn.pet.Bias`).

  `frozen` marks a parameter the optimizer must leave unchanged (`core.train.make_optimizer`).

  `dense_in` marks a dense kernel [layers..., in..., out...] whose first `dense_in` non-layer
  axes are contracted with the input (see `nn.quantized`: such kernels can be quantized)."""
  if len(axes) != len(shape):
    raise ValueError(f"axes {tuple(axes)} do not match shape {tuple(shape)}")
  if decay is None:
    decay = len([a for a in axes if a != "layers"]) >= 2
  meta = {} if dense_in is None else {"dense_in": dense_in}
  if frozen:
    meta["frozen"] = True
  return kind(init(key, tuple(shape), dtype), axes=tuple(axes), decay=decay, **meta)


def uniform_fan_in(fan_in: int):
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch.nn.Linear's bias init, and its weight init
  kaiming_uniform(a=sqrt(5)) (LoRA's A)."""
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -bound, bound)


def xavier_normal(gain: float = 1.0, fan_in_axes=(0,), fan_out_axes=(-1,), batch_axes=()):
  """Xavier/Glorot normal: std = gain * sqrt(2 / (fan_in + fan_out)); leading `batch_axes` (e.g.
  the stacked-layer axis) are not counted in the fans."""
  def init(key, shape, dtype):
    fan_in = 1
    for a in fan_in_axes:
      fan_in *= shape[a]
    fan_out = 1
    for a in fan_out_axes:
      fan_out *= shape[a]
    std = gain * (2.0 / (fan_in + fan_out)) ** 0.5
    return std * jax.random.normal(key, shape, dtype)
  return init
