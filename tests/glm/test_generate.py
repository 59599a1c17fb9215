"""Generation with the KV cache: determinism, seeds, positions (the CLI: test_trained_run.py)."""
import numpy as np
from flax import nnx

from jaxpapers.glm.generate import complete, generate_blank
from jaxpapers.glm.model import GLM, GLMConfig
from jaxpapers.glm.objective import SpecialIds

IDS = SpecialIds(pad=0, mask=1, gmask=2, sop=3, eop=4)


def test_greedy_blank_generation_is_deterministic_and_sampling_uses_the_seed():
  model = GLM(GLMConfig(vocab_size=40, num_layers=2, d_model=16, num_heads=2, dropout=0.0),
              rngs=nnx.Rngs(params=0))
  ctx = [7, 8, IDS.mask, 9, 10]
  a = generate_blank(model, ctx, 2, IDS, max_new_tokens=6)
  b = generate_blank(model, ctx, 2, IDS, max_new_tokens=6)
  assert a == b and len(a) <= 6 and IDS.eop not in a
  s1 = generate_blank(model, ctx, 2, IDS, max_new_tokens=6, strategy="sample", seed=1)
  s2 = generate_blank(model, ctx, 2, IDS, max_new_tokens=6, strategy="sample", seed=1)
  assert s1 == s2


def test_sampling_depends_on_the_seed():
  model = GLM(GLMConfig(vocab_size=40, num_layers=2, d_model=16, num_heads=2, dropout=0.0),
              rngs=nnx.Rngs(params=0))
  ctx = [7, 8, IDS.gmask]
  runs = {tuple(generate_blank(model, ctx, 3, IDS, max_new_tokens=8, strategy="sample", seed=s,
                               counting=True)) for s in range(4)}
  assert len(runs) > 1


def test_generation_positions_match_training_samples():
  """The positions generate_blank feeds equal those of the training samples, 1-D and 2-D."""
  from jaxpapers.glm.generate import generated_position
  from jaxpapers.glm.objective import gmask_sample, mask_sample
  raw = np.arange(10, 40, dtype=np.int32)
  for two_d in (False, True):
    s = gmask_sample(raw, 7, IDS, 32, two_d)
    c = int(s["context_len"])
    for i in range(32 - c):
      pos, block = generated_position(c, c, i, True, two_d)
      if two_d:
        assert (s["positions"][0][c + i], s["positions"][1][c + i]) == (pos, block)
      else:
        assert s["positions"][c + i] == pos
    s = mask_sample(raw, np.random.default_rng(3), IDS, 32, two_d=two_d)
    c = int(s["context_len"])
    tokens = s["tokens"]
    first_span_pos = (s["positions"][0] if two_d else s["positions"])[c]
    j = c + 1
    while j < 32 and tokens[j] not in (IDS.sop, IDS.pad):
      j += 1
    for i in range(j - c):
      pos, block = generated_position(c, int(first_span_pos), i, False, two_d)
      if two_d:
        assert (s["positions"][0][c + i], s["positions"][1][c + i]) == (pos, block)
      else:
        assert s["positions"][c + i] == pos
