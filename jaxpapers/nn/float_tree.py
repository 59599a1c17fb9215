"""Splitting a pytree into its floating leaves (the differentiable part) and the rest, for
`jax.custom_vjp` rules that re-run `jax.vjp` of a function with integer or key inputs."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def is_float(x) -> bool:
  return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def split_float(tree):
  """(float leaves or None, other leaves or None, treedef): differentiate only the float part."""
  leaves, treedef = jax.tree.flatten(tree)
  return ([l if is_float(l) else None for l in leaves],
          [None if is_float(l) else l for l in leaves], treedef)


def merge_float(fl, other, treedef):
  return jax.tree.unflatten(treedef, [f if o is None else o for f, o in zip(fl, other)])


def cotangent_tree(primal, float_cts):
  """Cotangents for `primal`: the float leaves from `float_cts` (as `split_float` lists them),
  None (zero) for integer and key leaves."""
  leaves, treedef = jax.tree.flatten(primal)
  cts = jax.tree.leaves(float_cts, is_leaf=lambda x: x is None)
  it = iter(c for c in cts if c is not None)
  return jax.tree.unflatten(treedef, [next(it) if is_float(l) else None for l in leaves])
