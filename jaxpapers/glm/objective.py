"""GLM's autoregressive blank-infilling objective, as GLM-130B uses it (arXiv 2210.02414 §2.1).

A sample is `context ++ generated`: the context (text with blanks) attends bidirectionally, the
generated part causally. [MASK]: Poisson(lambda=3) spans totalling 15% of the tokens are replaced
by one [MASK] each and regenerated, in a random order, each span after an <sop> and followed by
<eop>. [gMASK]: a prefix is kept as context, ending in [gMASK], and the rest is generated.

1-D positions (GLM-130B): context token i has position i; the generated tokens of a [MASK] span
all take the position of their [MASK] token; a [gMASK] continuation counts on from the context.
2-D positions (original GLM, Du et al. 2022 §2.2): (position, intra-block position) with the
intra-block id 0 in the context and 1, 2, ... inside a generated span.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class SpecialIds:
  pad: int
  mask: int
  gmask: int
  sop: int
  eop: int


def attention_mask(context_len: int, total_len: int) -> np.ndarray:
  """[total_len, total_len] bool: row i may attend column j (context bidirectional, rest causal)."""
  i = np.arange(total_len)[:, None]
  j = np.arange(total_len)[None, :]
  return (j < context_len) | (j <= i)


def _sample(context, gen, targets, pos, block, seq_len, ids, two_d):
  n = len(context) + len(gen)
  if n > seq_len:
    raise ValueError(f"sample of length {n} exceeds seq_len {seq_len}")
  pad = seq_len - n
  tokens = np.array(list(context) + list(gen) + [ids.pad] * pad, np.int32)
  tgt = np.array([0] * len(context) + list(targets) + [0] * pad, np.int32)
  weights = np.array([0.0] * len(context) + [1.0] * len(gen) + [0.0] * pad, np.float32)
  positions = np.array(list(pos) + [0] * pad, np.int32)
  blocks = np.array(list(block) + [0] * pad, np.int32)
  out = {"tokens": tokens, "targets": tgt, "weights": weights,
         "context_len": np.int32(len(context))}
  out["positions"] = np.stack([positions, blocks]) if two_d else positions
  return out


def mask_sample(raw: np.ndarray, rng: np.random.Generator, ids: SpecialIds, seq_len: int,
                mask_ratio: float = 0.15, span_lambda: float = 3.0, two_d: bool = False) -> dict:
  """A [MASK] sample from the front of `raw` (at least seq_len tokens), exactly seq_len long."""
  n = seq_len
  for _ in range(8):  # n + 2k must equal seq_len for k spans: shrink n until it fits
    target = max(1, int(round(mask_ratio * n)))
    lengths = []
    while sum(lengths) < target:
      lengths.append(max(1, int(rng.poisson(span_lambda))))
    lengths[-1] -= sum(lengths) - target
    lengths = [l for l in lengths if l > 0]
    k = len(lengths)
    if n + 2 * k <= seq_len:
      break
    n = seq_len - 2 * k
  m = sum(lengths)
  raw = raw[:n]
  # stars and bars: k spans among n - m kept tokens, spans may touch (GLM's span sampler).
  slots = np.sort(rng.choice(n - m + k, size=k, replace=False))
  starts, offset = [], 0
  for i, s in enumerate(slots):
    starts.append(s - i + offset)
    offset += lengths[i]
  context, pos_of_span, cursor = [], [], 0
  for st, ln in zip(starts, lengths):
    context.extend(raw[cursor:st].tolist())
    pos_of_span.append(len(context))
    context.append(ids.mask)
    cursor = st + ln
  context.extend(raw[cursor:n].tolist())
  gen, targets, pos, block = [], [], list(range(len(context))), [0] * len(context)
  for s in rng.permutation(k):  # spans are generated in a random order (GLM §2.1)
    span = raw[starts[s]:starts[s] + lengths[s]].tolist()
    gen.extend([ids.sop] + span)
    targets.extend(span + [ids.eop])
    pos.extend([pos_of_span[s]] * (len(span) + 1))
    block.extend(range(1, len(span) + 2))
  return _sample(context, gen, targets, pos, block, seq_len, ids, two_d)


def gmask_sample(raw: np.ndarray, prefix_len: int, ids: SpecialIds, seq_len: int,
                 two_d: bool = False) -> dict:
  """A [gMASK] sample: raw[:prefix_len] + [gMASK] as context, then <sop> raw[prefix_len:n]."""
  n = seq_len - 2
  raw = raw[:n]
  if not 0 <= prefix_len < n:
    raise ValueError(f"prefix_len {prefix_len} outside [0, {n})")
  context = raw[:prefix_len].tolist() + [ids.gmask]
  rest = raw[prefix_len:].tolist()
  gen = [ids.sop] + rest
  targets = rest + [ids.eop]
  c = len(context)
  if two_d:
    pos = list(range(c)) + [c - 1] * len(gen)
    block = [0] * c + list(range(1, len(gen) + 1))
  else:
    pos = list(range(c + len(gen)))
    block = [0] * (c + len(gen))
  return _sample(context, gen, targets, pos, block, seq_len, ids, two_d)


class BatchSampler:
  """Deterministic batches: batch `step` is a pure function of (seed, step), so the data-iterator
  position of a checkpoint is its step and a resumed run sees the same data."""

  def __init__(self, tokens: np.ndarray, ids: SpecialIds, *, seq_len: int, batch: int, seed: int,
               gmask_prob: float, mask_ratio: float, span_lambda: float, two_d: bool):
    if len(tokens) < seq_len + 1:
      raise ValueError(f"corpus has {len(tokens)} tokens, fewer than seq_len={seq_len}")
    self.tokens, self.ids, self.seq_len, self.batch, self.seed = tokens, ids, seq_len, batch, seed
    self.gmask_prob, self.mask_ratio, self.span_lambda, self.two_d = (
        gmask_prob, mask_ratio, span_lambda, two_d)

  def one(self, rng: np.random.Generator) -> dict:
    start = int(rng.integers(0, len(self.tokens) - self.seq_len))
    raw = self.tokens[start:start + self.seq_len]
    if rng.random() < self.gmask_prob:
      prefix = int(rng.integers(1, self.seq_len - 2))
      return gmask_sample(raw, prefix, self.ids, self.seq_len, self.two_d)
    return mask_sample(raw, rng, self.ids, self.seq_len, self.mask_ratio, self.span_lambda,
                       self.two_d)

  def __call__(self, step: int) -> dict:
    rng = np.random.default_rng([self.seed, step])
    samples = [self.one(rng) for _ in range(self.batch)]
    return {k: np.stack([s[k] for s in samples]) for k in samples[0]}
