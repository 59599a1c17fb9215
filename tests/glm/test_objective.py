"""The blank-infilling objective: masks, sample layout and positions (GLM-130B §2.1)."""
import math

import numpy as np

from jaxpapers.glm import attention_mask
from jaxpapers.glm.model import attention_mask_from_context
from jaxpapers.glm.objective import (BatchSampler, SpecialIds, gmask_sample, mask_sample,
                                     span_length_pmf)

IDS = SpecialIds(pad=0, mask=1, gmask=2, sop=3, eop=4)


def test_gmask_attention_mask():
  """Context is bidirectional, the generated part causal (GLM-130B §2.1)."""
  m = attention_mask(context_len=3, total_len=5)
  expected = np.array([[1, 1, 1, 0, 0],
                       [1, 1, 1, 0, 0],
                       [1, 1, 1, 0, 0],
                       [1, 1, 1, 1, 0],
                       [1, 1, 1, 1, 1]], bool)
  np.testing.assert_array_equal(m, expected)


def test_mask_attention_mask_of_a_two_blank_sample():
  """x1 [M] x3 [M] | sop a | sop b c: 4 context tokens see each other, spans causal."""
  m = attention_mask(context_len=4, total_len=9)
  expected = np.array([[1, 1, 1, 1, 0, 0, 0, 0, 0]] * 4 +
                      [[1, 1, 1, 1, 1, 0, 0, 0, 0],
                       [1, 1, 1, 1, 1, 1, 0, 0, 0],
                       [1, 1, 1, 1, 1, 1, 1, 0, 0],
                       [1, 1, 1, 1, 1, 1, 1, 1, 0],
                       [1, 1, 1, 1, 1, 1, 1, 1, 1]], bool)
  np.testing.assert_array_equal(m, expected)


def test_model_mask_equals_objective_mask():
  ctx = np.array([3, 0, 7], np.int32)
  got = np.asarray(attention_mask_from_context(ctx, np.arange(9), 9))
  for b, c in enumerate(ctx):
    np.testing.assert_array_equal(got[b], attention_mask(int(c), 9))


def test_gmask_sample_layout_1d_and_2d():
  raw = np.arange(10, 18, dtype=np.int32)            # 8 tokens, seq_len 10
  s = gmask_sample(raw, 3, IDS, 10)
  np.testing.assert_array_equal(s["tokens"], [10, 11, 12, 2, 3, 13, 14, 15, 16, 17])
  np.testing.assert_array_equal(s["targets"], [0, 0, 0, 0, 13, 14, 15, 16, 17, 4])
  np.testing.assert_array_equal(s["weights"], [0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
  np.testing.assert_array_equal(s["positions"], np.arange(10))   # counts on from the context
  assert s["context_len"] == 4
  s2 = gmask_sample(raw, 3, IDS, 10, two_d=True)
  np.testing.assert_array_equal(s2["positions"][0], [0, 1, 2, 3, 3, 3, 3, 3, 3, 3])
  np.testing.assert_array_equal(s2["positions"][1], [0, 0, 0, 0, 1, 2, 3, 4, 5, 6])


def test_mask_sample_positions_and_reconstruction():
  """Each generated span sits at its [MASK]'s position; filling the blanks gives the text back;
  about 15% of the tokens are masked."""
  rng = np.random.default_rng(0)
  raw = np.arange(100, 400, dtype=np.int32)
  for _ in range(20):
    s = mask_sample(raw, rng, IDS, 128)
    tok, pos, c = s["tokens"], s["positions"], int(s["context_len"])
    assert len(tok) == 128
    context = tok[:c].tolist()
    mask_at = [i for i, t in enumerate(context) if t == IDS.mask]
    spans, i = {}, c
    while i < 128 and tok[i] == IDS.sop:
      j = i + 1
      while j < 128 and tok[j] not in (IDS.sop, IDS.pad):
        j += 1
      assert len(set(pos[i:j].tolist())) == 1 and pos[i] in mask_at
      np.testing.assert_array_equal(s["targets"][i:j - 1], tok[i + 1:j])
      assert s["targets"][j - 1] == IDS.eop
      spans[int(pos[i])] = tok[i + 1:j].tolist()
      i = j
    assert sorted(spans) == mask_at
    filled = []
    for k, t in enumerate(context):
      filled.extend(spans[k] if t == IDS.mask else [t])
    n = len(filled)
    np.testing.assert_array_equal(filled, raw[:n])
    masked = sum(len(v) for v in spans.values())
    target = int(0.15 * n)      # GLM draws spans until they cover it; the last one is not cut
    assert target <= masked < target + max(len(v) for v in spans.values())
    assert n + 2 * len(spans) <= 128 < n + 2 * len(spans) + 2 * len(spans)
    np.testing.assert_array_equal(pos[:c], np.arange(c))


def test_sampler_is_a_function_of_seed_and_step():
  tokens = np.arange(5, 5000, dtype=np.int32)
  a = BatchSampler(tokens, IDS, seq_len=32, batch=4, seed=1, gmask_prob=0.5, mask_ratio=0.15,
                   span_lambda=3.0, two_d=False)
  b = BatchSampler(tokens, IDS, seq_len=32, batch=4, seed=1, gmask_prob=0.5, mask_ratio=0.15,
                   span_lambda=3.0, two_d=False)
  for k in a(7):
    np.testing.assert_array_equal(a(7)[k], b(7)[k])
  assert not np.array_equal(a(7)["tokens"], a(8)["tokens"])


def test_mask_sample_2d_block_positions():
  """Original GLM 2-D positions: a span's tokens sit at its [MASK] position with intra-block ids
  1, 2, ...; the context has block id 0 (Du et al. 2022 §2.2)."""
  s = mask_sample(np.arange(100, 160, dtype=np.int32), np.random.default_rng(5), IDS, 40, two_d=True)
  pos, block = s["positions"]
  c, tok = int(s["context_len"]), s["tokens"]
  np.testing.assert_array_equal(block[:c], 0)
  np.testing.assert_array_equal(pos[:c], np.arange(c))
  i = c
  while i < 40 and tok[i] == IDS.sop:
    j = i + 1
    while j < 40 and tok[j] not in (IDS.sop, IDS.pad):
      j += 1
    assert tok[pos[i]] == IDS.mask
    np.testing.assert_array_equal(pos[i:j], pos[i])
    np.testing.assert_array_equal(block[i:j], np.arange(1, j - i + 1))
    i = j


def _spans_of(s, seq_len):
  """The generated spans' lengths and the context of a [MASK] sample."""
  tok, c = s["tokens"], int(s["context_len"])
  lengths, i = [], c
  while i < seq_len and tok[i] == IDS.sop:
    j = i + 1
    while j < seq_len and tok[j] not in (IDS.sop, IDS.pad):
      j += 1
    lengths.append(j - i - 1)
    i = j
  return lengths, tok[:c]


def test_span_lengths_follow_glms_truncated_poisson():
  """GLM's block_length_distribution: Poisson(3) on 1..39, renormalised (P(1) = 0.1572; a draw
  of 0 mapped to 1 gives 0.20-0.23). Each draw of the stopping rule "until 15% is covered" is
  from that pmf, so the pooled lengths of many samples are too: a chi-square test over lengths
  1..8 and 9+ (8 degrees of freedom, critical value 26.1 at p = 0.001)."""
  pmf = span_length_pmf(3.0)
  assert len(pmf) == 39 and abs(pmf.sum() - 1) < 1e-12
  tail = sum(np.exp(-3) * 3.0 ** k / math.factorial(k) for k in range(40, 80))   # P(len >= 40)
  p1 = 3 * np.exp(-3) / (1 - np.exp(-3) - tail)
  np.testing.assert_allclose(pmf[0], p1, rtol=1e-12)
  np.testing.assert_allclose(pmf[0], 0.15719, atol=1e-5)
  rng = np.random.default_rng(0)
  raw = np.arange(100, 400, dtype=np.int32)
  lengths = np.concatenate([_spans_of(mask_sample(raw, rng, IDS, 64), 64)[0] for _ in range(3000)])
  assert len(lengths) > 8000
  observed = np.bincount(np.minimum(lengths, 9), minlength=10)[1:]
  expected = np.append(pmf[:8], pmf[8:].sum()) * len(lengths)
  chi2 = float(((observed - expected) ** 2 / expected).sum())
  assert chi2 < 26.1, (chi2, observed, expected.round(1))
  assert abs((lengths == 1).mean() - pmf[0]) < 0.015


def test_place_spans_draws_glms_distribution():
  """GLM's sample_spans: k slots drawn uniformly *with replacement* from 0..free and sorted, one
  gap token added after each span. Two 1-token spans in 4 tokens: free = 1, slots (0,0), (0,1),
  (1,1) with probabilities 1/4, 1/2, 1/4, so starts (0,2), (0,3), (1,3). (Without replacement
  only (0,3) would come out; with two gap tokens nothing would fit.)"""
  from jaxpapers.glm.objective import place_spans
  rng = np.random.default_rng(2)
  draws = [tuple(place_spans([1, 1], 4, rng)) for _ in range(4000)]
  freq = {s: draws.count(s) / len(draws) for s in set(draws)}
  assert set(freq) == {(0, 2), (0, 3), (1, 3)}
  for s, p in {(0, 2): 0.25, (0, 3): 0.5, (1, 3): 0.25}.items():
    assert abs(freq[s] - p) < 0.03, (s, freq[s])


def test_spans_never_touch_but_may_start_or_end_the_text():
  """GLM's sample_spans keeps at least one unmasked token between spans (so no two [MASK] tokens
  are adjacent in the context); the first span may start the text and (ours, with no end-of-
  document token in a window; GLM keeps a document's last token) the last may end it."""
  rng = np.random.default_rng(1)
  raw = np.arange(100, 400, dtype=np.int32)
  first = last = 0
  for _ in range(2000):
    _, ctx = _spans_of(mask_sample(raw, rng, IDS, 32), 32)
    is_mask = ctx == IDS.mask
    assert not np.any(is_mask[1:] & is_mask[:-1])
    first += bool(is_mask[0])
    last += bool(is_mask[-1])
  assert first > 0 and last > 0
