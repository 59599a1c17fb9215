"""Parameter-efficient tuning (PET) as variable kinds, so that what a stage trains is an NNX filter.

Three PET methods of the 2022 literature, as the EH-FT paper (arXiv 2210.16771 §3) uses them:
- LoRA (Hu et al. 2021): W x + (alpha / r) B A x on a frozen W; A Kaiming-uniform, B zero, so a
  fresh adapter leaves the model unchanged (`LoRA` variables).
- BitFit (Ben Zaken et al. 2021): only the bias terms train (`Bias` variables: every bias of the
  backbone).
- Prefix tuning / P-tuning v2 (Liu et al. 2021): L trainable key and value vectors at every layer,
  prepended to each layer's keys and values; every real token may attend to them (`Prefix`
  variables; the attention mask is extended in `jaxpapers.nn.bert`).

A training stage chooses its trainable leaves with `trainable_filter(method)`; `core.train` splits
the model with that filter, so the optimizer holds state for, and updates, only those leaves.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

METHODS = ("full", "head", "lora", "bitfit", "prefix")


class Bias(nnx.Param):
  """A bias term of the backbone (trained alone by BitFit)."""


class LoRA(nnx.Param):
  """A low-rank adapter factor (A or B)."""


class Prefix(nnx.Param):
  """A deep prompt: per-layer prefix keys or values."""


def lora_delta(x, a, b, scale: float):
  """(alpha/r) * x A B for x [..., in], A [in, r], B [r, out...] (B's trailing axes kept)."""
  low = jnp.einsum("...i,ir->...r", x, a)
  return scale * jnp.tensordot(low, b, axes=1)


def head_filter():
  return nnx.PathContains("head")


def trainable_filter(method: str):
  """The NNX filter of the leaves a stage trains: `full` every parameter that is not a PET
  parameter; `head` the classification head alone (linear probing); `lora`, `bitfit`, `prefix`
  the head plus that method's parameters (the backbone frozen)."""
  head = head_filter()
  if method == "full":
    return nnx.All(nnx.Param, nnx.Not(nnx.Any(LoRA, Prefix)))
  if method == "head":
    return nnx.All(nnx.Param, head)
  if method == "lora":
    return nnx.Any(LoRA, nnx.All(nnx.Param, head))
  if method == "bitfit":
    return nnx.Any(Bias, nnx.All(nnx.Param, head))
  if method == "prefix":
    return nnx.Any(Prefix, nnx.All(nnx.Param, head))
  raise ValueError(f"unknown PET method {method!r}; one of {METHODS}")


def count(model: nnx.Module, flt) -> int:
  """Number of scalars in the leaves of `model` that `flt` selects."""
  return sum(int(x.size) for x in jax.tree.leaves(nnx.state(model, flt)))
