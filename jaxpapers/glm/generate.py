"""Generation with a KV cache: [MASK] fills a blank, [gMASK] continues (GLM-130B §2.1, App. A).

The context is encoded once, bidirectionally (prefill); then one token at a time attends to the
cache. Generated tokens take GLM-130B's 1-D positions: the [MASK] token's position for a blank,
counting on from the context for [gMASK] (2-D: the mask position plus an intra-block counter)."""
from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np

from jaxpapers.glm.model import decode_step
from jaxpapers.glm.objective import SpecialIds
from jaxpapers.nn.sampling import sample_logits

log = logging.getLogger("jaxpapers")


# (cfg, weights, tokens, positions, context_len, cache, index) -> (logits, cache); the cache is
# donated, so each token updates it in place
forward_cached = jax.jit(decode_step, static_argnums=0, donate_argnums=5)

MIN_BUCKET = 8


def bucket(n: int) -> int:
  """The padded length for n: the next power of two (at least MIN_BUCKET), so prompts and caches
  of any length compile at most log2(max length) programs."""
  return max(MIN_BUCKET, 1 << max(n - 1, 0).bit_length())


def _pos(p, b, two_d):
  p = jnp.asarray(p, jnp.int32).reshape(1, -1)
  if two_d:
    return jnp.stack([p, jnp.asarray(b, jnp.int32).reshape(1, -1)], axis=1)
  return p


def generated_position(context_len: int, gen_position: int, i: int, counting: bool,
                       two_d: bool) -> tuple[int, int]:
  """(position, block position) of the i-th generated input token (<sop> is i = 0), as the
  training samples of `objective.py` lay them out."""
  if two_d:   # 2-D: every token of the span sits at the mask position; the block id counts
    return (context_len - 1 if counting else gen_position), i + 1
  return (gen_position + i if counting else gen_position), 0


def prefill(model, weights: dict, context: list[int], max_new_tokens: int, pad: int):
  """(context_len [1], KV cache) after encoding `context` for max_new_tokens decode steps.

  The prompt is padded to its bucket and the cache sized to one (so prompts of any length
  compile O(log) programs): the pad tokens' keys sit past the context, where no query looks
  (context_len = c; the input token at c + i sees only j < c or j <= c + i, each written by an
  earlier step or by itself), so the result is the unpadded one."""
  two_d = model.cfg.positions == "2d"
  c = len(context)
  p = bucket(c)
  cache = model.init_cache(1, bucket(max(p, c + max_new_tokens)))   # inputs sit at c .. c+n-1
  ctx_len = jnp.asarray([c], jnp.int32)
  padded = np.full((1, p), pad, np.int32)
  padded[0, :c] = context
  _, cache = forward_cached(model.cfg, weights, jnp.asarray(padded),
                            _pos(np.arange(p), np.zeros(p), two_d), ctx_len, cache, 0)
  return ctx_len, cache


def generate_blank(model, context: list[int], gen_position: int, ids: SpecialIds, *,
                   max_new_tokens: int = 32, strategy: str = "greedy", top_k: int = 0,
                   top_p: float = 1.0, temperature: float = 1.0, seed: int = 0,
                   counting: bool = False, weights: dict | None = None) -> list[int]:
  """Tokens generated after <sop> for a context holding [MASK] or ending in [gMASK].

  gen_position: the 1-D position of <sop> (the [MASK] index, or len(context) for [gMASK]);
  counting: positions count on (gMASK) instead of staying at gen_position ([MASK]);
  weights: `model.decode_weights()` when the caller already holds them (made here otherwise)."""
  two_d = model.cfg.positions == "2d"
  if weights is None:   # each layer's arrays on their own (FP or quantized), copied once
    weights = model.decode_weights()
  c = len(context)
  ctx_len, cache = prefill(model, weights, context, max_new_tokens, ids.pad)
  key = jax.random.key(seed)
  out, tok = [], ids.sop
  for i in range(max_new_tokens):
    pos, block = generated_position(c, gen_position, i, counting, two_d)
    logits, cache = forward_cached(model.cfg, weights, jnp.asarray([[tok]], jnp.int32),
                                   _pos([pos], [block], two_d), ctx_len, cache, c + i)
    key, sub = jax.random.split(key)
    tok = int(sample_logits(logits[:, -1], sub, strategy, top_k, top_p, temperature)[0])
    if tok == ids.eop:
      break
    out.append(tok)
  return out


def _fit(context: list[int], max_new_tokens: int, max_len: int | None) -> int:
  """max_new_tokens, lowered (with a warning) so context + <sop> + generated inputs stay within
  max_len positions; a context that leaves no room is a ValueError."""
  if max_len is None:
    return max_new_tokens
  room = max_len - len(context)
  if room < 1:
    raise ValueError(f"the prompt is {len(context)} tokens with its mask token; the model's context "
                     f"is {max_len} tokens (objective.seq_len): shorten the prompt")
  if max_new_tokens > room:
    log.warning("generating at most %d tokens: the prompt leaves %d of the model's %d positions",
                room, room, max_len)
  return min(max_new_tokens, room)


def encode_prompt(tok, text: str, ids: SpecialIds, gmask_after: bool = False) -> list[int]:
  """A prompt's token ids, the spaces just before a [MASK] or [gMASK] given to the blank (and,
  with `gmask_after`, the spaces that end the prompt, before the [gMASK] the caller appends). In
  training a blank replaces whole tokens, which carry their leading space (byte-level BPE:
  'Ġpleased'), so a context never holds bare spaces before a blank; the tokenizer splits
  'very [MASK]' into 'Ġvery', 'Ġ', '[MASK]', and the model then fills the blank with a word piece
  ('ent', not ' pleased'). Newlines are kept (a span can follow one in training)."""
  out = tok.encode(text).ids
  spaces = {tok.token_to_id("Ġ" * n) for n in range(1, 9)} - {None}
  kept: list[int] = []
  for t in out + ([ids.gmask] if gmask_after else []):
    if t in (ids.mask, ids.gmask):
      while kept and kept[-1] in spaces:
        kept.pop()
    kept.append(t)
  return kept[:-1] if gmask_after else kept


def prompt_context(tok, text: str, ids: SpecialIds, mode: str, max_len: int | None) -> list[int]:
  """The context `complete` starts from; ValueError when it leaves no room in max_len."""
  gmask = mode == "gmask"
  context = encode_prompt(tok, text, ids, gmask_after=gmask) + ([ids.gmask] if gmask else [])
  _fit(context, 1, max_len)
  return context


def complete(model, tok, text: str, ids: SpecialIds, *, mode: str = "gmask",
             max_new_tokens: int = 32, max_len: int | None = None, **kw) -> str:
  """Text in, text out. mode 'gmask': continue `text`; mode 'mask': fill every [MASK] in `text`
  in turn (each filled blank becomes context for the next, as GLM-130B's generation script).
  max_len (the training seq_len): a prompt longer than it is a ValueError; generation stops
  there (stated in a warning)."""
  if mode == "gmask":
    context = prompt_context(tok, text, ids, mode, max_len)
    n = _fit(context, max_new_tokens, max_len)
    return tok.decode(generate_blank(model, context, len(context), ids, counting=True,
                                     max_new_tokens=n, **kw))
  if mode != "mask":
    raise ValueError(f"unknown mode {mode!r}; use gmask or mask")
  if "[MASK]" not in text:
    raise ValueError("mode 'mask' needs at least one [MASK] in the prompt")
  ids_list = encode_prompt(tok, text, ids)
  kw.setdefault("weights", model.decode_weights())   # once for all the blanks
  cursor = 0
  for _ in range(ids_list.count(ids.mask)):   # the prompt's blanks, left to right, each once
    m = ids_list.index(ids.mask, cursor)       # (a mask id the model generates is not refilled)
    n = _fit(ids_list, max_new_tokens, max_len)
    filled = generate_blank(model, ids_list, m, ids, max_new_tokens=n, **kw)
    ids_list = ids_list[:m] + filled + ids_list[m + 1:]
    cursor = m + len(filled)
  return tok.decode(ids_list)
