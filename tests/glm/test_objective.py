"""The blank-infilling objective: masks, sample layout and positions (GLM-130B §2.1)."""
import numpy as np

from jaxpapers.glm import attention_mask
from jaxpapers.glm.model import attention_mask_from_context
from jaxpapers.glm.objective import BatchSampler, SpecialIds, gmask_sample, mask_sample

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
    assert abs(masked - 0.15 * n) <= 1
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
