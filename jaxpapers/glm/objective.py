"""GLM's autoregressive blank-infilling objective, as GLM-130B uses it (arXiv 2210.02414 §2.1).

A sample is `context ++ generated`: the context (text with blanks) attends bidirectionally, the
generated part causally. [MASK]: spans with Poisson(lambda=3) lengths (truncated to 1..39)
covering 15% of the tokens, never touching, are replaced by one [MASK] each and regenerated in a
random order, each span after an <sop> and followed by <eop> (GLM's sampler, `mask_sample`).
[gMASK]: a prefix is kept as context, ending in [gMASK], and the rest is generated.

1-D positions (GLM-130B): context token i has position i; the generated tokens of a [MASK] span
all take the position of their [MASK] token; a [gMASK] continuation counts on from the context.
2-D positions (original GLM, Du et al. 2022 §2.2): (position, intra-block position) with the
intra-block id 0 in the context and 1, 2, ... inside a generated span.
"""
from __future__ import annotations

import dataclasses
import math

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


MAX_SPAN = 39   # GLM's max_block_length = 40: span lengths are drawn from 1..39


def span_length_pmf(span_lambda: float, max_span: int = MAX_SPAN) -> np.ndarray:
  """P(length = 1..max_span): the Poisson(span_lambda) pmf restricted to 1..max_span and
  renormalised, as GLM's `block_length_distribution` (THUDM/GLM `blocklm_utils.py`)."""
  k = np.arange(1, max_span + 1)
  log_pmf = k * np.log(span_lambda) - span_lambda - np.array([math.lgamma(i + 1) for i in k])
  pmf = np.exp(log_pmf)
  return pmf / pmf.sum()


def place_spans(lengths: list[int], total: int, rng: np.random.Generator) -> list[int]:
  """Start offsets of spans of `lengths` (in this order) in a text of `total` tokens, with at least
  one unmasked token between consecutive spans (GLM's `sample_spans`): k slot indices drawn
  uniformly with replacement from 0..total - sum(lengths) - k + 1 and sorted; span i starts at its
  slot plus the lengths of the spans before it plus one gap token each."""
  k = len(lengths)
  free = total - sum(lengths) - k + 1
  if free < 0:
    raise ValueError(f"{k} spans of {sum(lengths)} tokens with gaps do not fit in {total} tokens")
  places = np.sort(rng.integers(0, free + 1, size=k))
  starts, offset = [], 0
  for place, length in zip(places, lengths):
    starts.append(int(place) + offset)
    offset += length + 1
  return starts


def mask_sample(raw: np.ndarray, rng: np.random.Generator, ids: SpecialIds, seq_len: int,
                mask_ratio: float = 0.15, span_lambda: float = 3.0, two_d: bool = False) -> dict:
  """A [MASK] sample from the front of `raw` (at least seq_len tokens), exactly seq_len long.

  GLM's span sampler (THUDM/GLM `blocklm_utils.py`; GLM §2.1, GLM-130B §2.1): span lengths i.i.d.
  from `span_length_pmf(span_lambda)`, drawn until they cover int(mask_ratio * n) of the n text
  tokens (the last span is not cut, so slightly more than the ratio is masked), shuffled, and
  placed by `place_spans` (never touching). k spans add 2k tokens (a [MASK] and a <sop> each), so
  the text takes n <= seq_len - 2k tokens: n is lowered from seq_len until the sample fits, and
  the rest is padding (at seq_len 64: 0-4 tokens, 2 in about a third of the samples).
  Unlike GLM, which splits its samples at end-of-document tokens (each document with its own
  15%) and never masks a document's last token, a window here is running text with no document
  boundary inside. Lengths are capped at seq_len // 2 when that is below 39 (P(len > 8) < 0.4%)."""
  pmf = span_length_pmf(span_lambda, min(MAX_SPAN, seq_len // 2))
  draws = rng.choice(np.arange(1, len(pmf) + 1), size=seq_len, p=pmf)   # one i.i.d. stream
  cum = np.cumsum(draws)
  n = seq_len
  while True:   # at most two rounds: k can only shrink when n does
    target = int(mask_ratio * n)
    k = int(np.searchsorted(cum, target)) + 1 if target > 0 else 0   # first sum >= target
    if n + 2 * k <= seq_len:
      break
    n = seq_len - 2 * k
  lengths = draws[:k].tolist()
  rng.shuffle(lengths)
  starts = place_spans(lengths, n, rng)
  raw = raw[:n]
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
