"""Mesh from the config and one table of logical-axis rules (MaxText style).

Parameters carry logical axis names in their `axes` metadata (see `jaxpapers.nn.param`); the
rules below map each logical name to a mesh axis (or to None: replicated). Changing the
parallelism strategy means changing this table or the mesh shape, never model code.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from jaxpapers.core.errors import ConfigError

# logical axis -> mesh axis. Order does not matter; an axis absent from the mesh is ignored.
DEFAULT_RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", "data"),
    ("length", None),
    ("layers", None),
    ("embed", None),
    ("vocab", "model"),
    ("heads", "model"),
    ("kv", None),
    ("mlp", "model"),
    ("glu", None),
    ("expert", "expert"),
)


def make_mesh(shape: Sequence[int], axes: Sequence[str], devices=None) -> Mesh:
  """A mesh with Auto axes; one -1 in `shape` takes the remaining devices."""
  devices = list(jax.devices() if devices is None else devices)
  shape = list(shape)
  if len(shape) != len(axes):
    raise ConfigError(f"--config.mesh.shape {tuple(shape)} and mesh.axes {tuple(axes)} differ in length")
  if shape.count(-1) > 1:
    raise ConfigError("--config.mesh.shape may hold at most one -1")
  if -1 in shape:
    rest = math.prod(s for s in shape if s != -1)
    if rest <= 0 or len(devices) % rest:
      raise ConfigError(f"--config.mesh.shape {tuple(shape)} does not divide {len(devices)} devices")
    shape[shape.index(-1)] = len(devices) // rest
  if math.prod(shape) != len(devices):
    raise ConfigError(f"--config.mesh.shape {tuple(shape)} needs {math.prod(shape)} devices, "
                      f"this process sees {len(devices)}")
  grid = np.asarray(devices).reshape(shape)
  return Mesh(grid, tuple(axes), axis_types=(AxisType.Auto,) * len(axes))


def logical_to_spec(logical: Sequence[str | None] | None, mesh: Mesh,
                    rules=DEFAULT_RULES) -> P:
  """PartitionSpec for a tuple of logical axis names; unused mesh axes are never reused."""
  if logical is None:
    return P()
  table = dict(rules)
  used, out = set(), []
  for name in logical:
    axis = table.get(name) if name is not None else None
    if axis is not None and (axis not in mesh.axis_names or axis in used or mesh.shape[axis] == 1):
      axis = None
    if axis is not None:
      used.add(axis)
    out.append(axis)
  return P(*out)


def _divisible(spec: P, shape, mesh: Mesh) -> P:
  """Drops a mesh axis from a dimension it does not divide (e.g. a vocab of 4099 over 2)."""
  fixed = []
  for dim, axis in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    fixed.append(axis if axis is None or dim % mesh.shape[axis] == 0 else None)
  return P(*fixed)


def state_shardings(state: nnx.State, mesh: Mesh, rules=DEFAULT_RULES):
  """NamedSharding for every Variable of an nnx.State, from its `axes` metadata."""
  def one(var):
    axes = getattr(var, "axes", None) if isinstance(var, nnx.Variable) else None
    value = var.get_value() if isinstance(var, nnx.Variable) else var
    spec = _divisible(logical_to_spec(axes, mesh, rules), np.shape(value), mesh)
    sharding = NamedSharding(mesh, spec)
    return var.replace(sharding) if isinstance(var, nnx.Variable) else sharding
  return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def sharding_for(mesh: Mesh, *logical: str | None, shape=None, rules=DEFAULT_RULES) -> NamedSharding:
  spec = logical_to_spec(logical, mesh, rules)
  if shape is not None:
    spec = _divisible(spec, shape, mesh)
  return NamedSharding(mesh, spec)


def constrain(x, *logical: str | None, rules=DEFAULT_RULES):
  """with_sharding_constraint by logical names under the mesh set by `jax.set_mesh` (no-op outside)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh is None or mesh.empty:
    return x
  spec = _divisible(logical_to_spec(logical, mesh, rules), x.shape, mesh)
  return jax.lax.with_sharding_constraint(x, spec)


def global_array(host: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A global array from a host array that every process holds in full (deterministic data)."""
  return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])
