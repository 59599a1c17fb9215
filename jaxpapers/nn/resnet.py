"""A small ResNet (He et al. 2016) for 28x28 images, with GroupNorm (no running statistics, so
every block is a pure function of its parameters and input)."""
from __future__ import annotations

from typing import Callable, Sequence

import jax
from flax import nnx


class BasicBlock(nnx.Module):
  """relu(GN(conv3x3(relu(GN(conv3x3(x))))) + skip(x)); skip is a strided 1x1 conv when the
  shape changes."""

  def __init__(self, cin: int, cout: int, stride: int, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(cin, cout, (3, 3), strides=stride, padding="SAME", use_bias=False, rngs=rngs)
    self.norm1 = nnx.GroupNorm(cout, num_groups=min(8, cout), rngs=rngs)
    self.conv2 = nnx.Conv(cout, cout, (3, 3), padding="SAME", use_bias=False, rngs=rngs)
    self.norm2 = nnx.GroupNorm(cout, num_groups=min(8, cout), rngs=rngs)
    self.skip = (nnx.Conv(cin, cout, (1, 1), strides=stride, use_bias=False, rngs=rngs)
                 if stride != 1 or cin != cout else None)

  def __call__(self, x):
    h = jax.nn.relu(self.norm1(self.conv1(x)))
    h = self.norm2(self.conv2(h))
    return jax.nn.relu(h + (x if self.skip is None else self.skip(x)))


class ResNet(nnx.Module):
  """stem conv -> stages of BasicBlocks (the first block of a stage strides by 2 after stage 0)
  -> global average pool -> linear classifier."""

  def __init__(self, widths: Sequence[int] = (16, 32, 64), blocks_per_stage: int = 2,
               num_classes: int = 10, in_channels: int = 1, *, rngs: nnx.Rngs):
    self.stem = nnx.Conv(in_channels, widths[0], (3, 3), padding="SAME", rngs=rngs)
    blocks, cin = [], widths[0]
    for s, w in enumerate(widths):
      for b in range(blocks_per_stage):
        blocks.append(BasicBlock(cin, w, 2 if (b == 0 and s > 0) else 1, rngs=rngs))
        cin = w
    self.blocks = nnx.List(blocks)
    self.head = nnx.Linear(cin, num_classes, rngs=rngs)

  def __call__(self, x, block_wrapper: Callable | None = None):
    """block_wrapper(index, block) -> callable(x): e.g. activation compression (jaxpapers.gact)."""
    h = jax.nn.relu(self.stem(x))
    for i, blk in enumerate(self.blocks):
      h = blk(h) if block_wrapper is None else block_wrapper(i, blk)(h)
    return self.head(h.mean(axis=(1, 2)))
