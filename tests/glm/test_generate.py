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


_full_forward = nnx.jit(lambda model, tokens, pos, c: model(tokens, pos, c))


def _uncached_greedy(model, context, gen_position, counting, n, total=32):
  """Greedy tokens from the full forward pass over context + <sop> + tokens so far (no cache),
  padded to `total` (a position attends only to the context and to earlier positions, so the
  padding after it changes nothing; one compiled program for every length)."""
  import jax.numpy as jnp
  from jaxpapers.glm.generate import generated_position
  c, out = len(context), []
  for _ in range(n):
    inputs = [IDS.sop] + out
    pos = list(range(c)) + [generated_position(c, gen_position, i, counting, False)[0]
                            for i in range(len(inputs))]
    last = len(pos) - 1
    pad = total - len(pos)
    logits = _full_forward(model, jnp.asarray([context + inputs + [IDS.pad] * pad], jnp.int32),
                           jnp.asarray([pos + [0] * pad], jnp.int32), jnp.asarray([c], jnp.int32))
    tok = int(jnp.argmax(logits[0, last]))
    if tok == IDS.eop:
      break
    out.append(tok)
  return out


def test_bucketed_cached_generation_equals_uncached_greedy():
  """Prompts padded to a power-of-two bucket and a bucketed cache give the tokens of the
  uncached forward pass, for [gMASK] and [MASK] prompts of several lengths."""
  model = GLM(GLMConfig(vocab_size=40, num_layers=2, d_model=16, num_heads=2, dropout=0.0),
              rngs=nnx.Rngs(params=3))
  rng = np.random.default_rng(0)
  for c in (3, 6, 11, 19):
    ctx = rng.integers(5, 40, c - 1).tolist()
    assert (generate_blank(model, ctx + [IDS.gmask], c, IDS, max_new_tokens=5, counting=True)
            == _uncached_greedy(model, ctx + [IDS.gmask], c, True, 5))
    m = c // 2
    masked = ctx[:m] + [IDS.mask] + ctx[m:]
    assert (generate_blank(model, masked, m, IDS, max_new_tokens=5)
            == _uncached_greedy(model, masked, m, False, 5))


def test_compilations_grow_with_the_log_of_the_prompt_length():
  """Prompts of 3..40 tokens compile one prefill per (prompt bucket, cache bucket) and one decode
  step per cache bucket (8, 16, 32, 64), not one per length; a second pass compiles nothing."""
  from jaxpapers.glm.generate import bucket, forward_cached
  model = GLM(GLMConfig(vocab_size=41, num_layers=1, d_model=16, num_heads=2, dropout=0.0),
              rngs=nnx.Rngs(params=0))   # a config of its own: no program compiled before
  lengths = range(3, 41)
  before = forward_cached._cache_size()
  for c in lengths:
    generate_blank(model, [7] * (c - 1) + [IDS.gmask], c, IDS, max_new_tokens=4, counting=True)
  compiled = forward_cached._cache_size() - before
  caches = {bucket(max(bucket(c), c + 4)) for c in lengths}
  prefills = {(bucket(c), bucket(max(bucket(c), c + 4))) for c in lengths}
  assert compiled == len(prefills) + len(caches) == 11   # vs 2 x 38 lengths unbucketed
  for c in lengths[::7]:
    generate_blank(model, [7] * (c - 1) + [IDS.gmask], c, IDS, max_new_tokens=4, counting=True)
  assert forward_cached._cache_size() - before == compiled


def test_fill_loop_fills_each_prompt_blank_once(monkeypatch):
  """mode 'mask' fills the prompt's blanks left to right, once each: a [MASK] id the model
  generates is left in place (the loop used to refill it, without end)."""
  import jaxpapers.glm.generate as gen
  calls = []

  def fake_blank(model, context, gen_position, ids, **kw):
    calls.append(gen_position)
    assert len(calls) <= 5, "the fill loop did not stop"
    return [ids.mask, 20 + len(calls)]
  monkeypatch.setattr(gen, "generate_blank", fake_blank)

  class Tok:
    def encode(self, text):
      return type("E", (), {"ids": [IDS.mask if w == "[MASK]" else 10 for w in text.split()]})()

    def decode(self, ids):
      return ids

    def token_to_id(self, token):
      return None

  class Model:
    def decode_weights(self):
      return {}
  out = gen.complete(Model(), Tok(), "a [MASK] b [MASK]", IDS, mode="mask", max_new_tokens=4)
  assert calls == [1, 4] and out == [10, IDS.mask, 21, 10, IDS.mask, 22]


def test_padded_prefill_and_bucketed_cache_give_the_uncached_logits():
  """The logits of each decode step after `prefill` (prompt padded to its bucket, cache to its
  bucket) equal the full uncached forward pass at that token, to 1e-5 of the logits' scale, with
  1-D and 2-D positions and a [MASK] inside the prompt: no pad key is ever attended."""
  import jax.numpy as jnp
  from jaxpapers.glm.generate import _pos, forward_cached, generated_position, prefill
  for positions in ("1d", "2d"):
    model = GLM(GLMConfig(vocab_size=40, num_layers=2, d_model=16, num_heads=2, dropout=0.0,
                          positions=positions), rngs=nnx.Rngs(params=4))
    two_d = positions == "2d"
    context = [7, 8, 9, IDS.mask, 10, 11, 12, 13, 14]        # c = 9: padded to 16
    inputs = [IDS.sop, 20, 21, 22, 23]
    c, weights = len(context), model.decode_weights()
    ctx_len, cache = prefill(model, weights, context, len(inputs), IDS.pad)
    assert cache[0]["k"].shape[1] == 16
    pos_block = [generated_position(c, 3, i, False, two_d) for i in range(len(inputs))]
    for i, tok in enumerate(inputs):
      pos, block = pos_block[i]
      got, cache = forward_cached(model.cfg, weights, jnp.asarray([[tok]], jnp.int32),
                                  _pos([pos], [block], two_d), ctx_len, cache, c + i)
      full_pos = list(range(c)) + [p for p, _ in pos_block[:i + 1]]
      full_block = [0] * c + [b for _, b in pos_block[:i + 1]]
      ref = model(jnp.asarray([context + inputs[:i + 1]], jnp.int32),
                  _pos(full_pos, full_block, two_d), jnp.asarray([c], jnp.int32))
      scale = float(jnp.abs(ref[0, -1]).max())
      np.testing.assert_allclose(np.asarray(got[0, -1]), np.asarray(ref[0, -1]),
                                 atol=1e-5 * scale, rtol=0)


def test_a_space_before_a_blank_goes_with_the_blank():
  """'very [MASK] to' is 'Ġvery', '[MASK]', 'Ġto' as the model saw blanks in training (a span
  replaces whole tokens with their leading space), not 'Ġvery', 'Ġ', '[MASK]'; the filled text
  reads as written."""
  from jaxpapers.data.text import train_tokenizer
  from jaxpapers.glm.data import special_ids
  from jaxpapers.glm.generate import encode_prompt
  tok = train_tokenizer("Emma was very pleased to see him. She was very glad to see her.\n\n" * 20, 300)
  ids = special_ids(tok)
  got = encode_prompt(tok, "Emma was very [MASK] to see him. [gMASK]", ids)
  assert [tok.id_to_token(t) for t in got] == ["Emma", "Ġwas", "Ġvery", "[MASK]", "Ġto", "Ġsee",
                                               "Ġhim", ".", "[gMASK]"]
  m = got.index(ids.mask)
  filled = got[:m] + tok.encode(" pleased").ids + got[m + 1:-1]
  assert tok.decode(filled) == "Emma was very pleased to see him."
  two = encode_prompt(tok, "Emma was very  [MASK] to see him. [gMASK]", ids)   # two spaces
  assert two == got
  ending = encode_prompt(tok, "Emma was very ", ids, gmask_after=True)   # [gMASK] appended after
  assert ending == tok.encode("Emma was very").ids
  assert encode_prompt(tok, "Emma was very ", ids) == tok.encode("Emma was very ").ids
  newline = encode_prompt(tok, "him.\n[MASK]", ids)
  assert tok.decode(newline[:-1]) == "him.\n" and newline[-1] == ids.mask
