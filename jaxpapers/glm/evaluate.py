"""GLM loss and held-out evaluation: perplexity, LAMBADA-style last-word accuracy and
blank-infilling accuracy (GLM-130B §5 evaluates LAMBADA and language modelling)."""
from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxpapers.glm.objective import SpecialIds, gmask_sample, mask_sample


def token_nll(model, batch, dropout_key=None):
  """(-log p(target) [B,T], logits [B,T,V]). The cross-entropy is optax's, logsumexp minus the
  target's logit: it keeps the row logsumexp [B,T] for the backward, where log_softmax kept the
  whole log p [B,T,V] and its backward reduced the scattered [B,T,V] cotangent over the
  vocabulary once more (XLA also wrote one [V, B*T] transposed copy of it). The tied head's
  forward + backward at d_model 512, vocab 8,192, 2,048 tokens went 564 -> 347 ms on 2 CPU cores
  (experiments/glm/README.md, "Behind PyTorch")."""
  logits = model(batch["tokens"], batch["positions"], batch["context_len"], dropout_key=dropout_key)
  return optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"]), logits


def loss_fn(model, batch, dropout_key, eop: int | None = None):
  """Mean cross-entropy over the generated tokens, <eop> included (the blank-infilling loss that
  GLM trains, GLM §2.1). With `eop` (bind it with functools.partial), aux["text_loss"] is the
  same mean over the text tokens only, without the <eop> targets (one per span, none of them
  text), the loss that compares with the corpus's unigram entropy, which is over text tokens."""
  nll, _ = token_nll(model, batch, dropout_key)
  w = batch["weights"]
  aux = {"tokens": w.sum()}
  if eop is not None:
    wt = w * (batch["targets"] != eop)
    aux["text_loss"] = (nll * wt).sum() / jnp.maximum(wt.sum(), 1.0)
  return (nll * w).sum() / jnp.maximum(w.sum(), 1.0), aux


@functools.partial(jax.jit, static_argnums=0)
def _eval_batch(graphdef, params, batch, eop):
  model = nnx.merge(graphdef, params)
  nll, logits = token_nll(model, batch)
  w = batch["weights"]
  hit = (jnp.argmax(logits, -1) == batch["targets"]).astype(jnp.float32)
  wt = w * (batch["targets"] != eop)                      # the text, not the <eop> targets
  we = w - wt
  return {"nll": (nll * wt).sum(), "n": wt.sum(), "eop_nll": (nll * we).sum(), "n_eop": we.sum(),
          "hit": (hit * wt).sum(), "n_tok": wt.sum(),
          "all_hit": ((hit * wt).sum(-1) == wt.sum(-1)).astype(jnp.float32).sum(),
          "rows": jnp.float32(w.shape[0])}


def evaluate(model, batches: list[dict], eop: int) -> dict:
  graphdef, params = nnx.split(model)   # all state: Params and quantized kernels
  tot = None
  for b in batches:
    out = jax.device_get(_eval_batch(graphdef, params, {k: jnp.asarray(v) for k, v in b.items()}, eop))
    tot = out if tot is None else {k: tot[k] + out[k] for k in tot}
  return {k: float(v) for k, v in tot.items()}


def _batched(samples: list[dict], batch: int) -> list[dict]:
  out = []
  for i in range(0, len(samples), batch):
    chunk = samples[i:i + batch]
    out.append({k: np.stack([s[k] for s in chunk]) for k in chunk[0]})
  return out


def ppl_set(val_tokens: np.ndarray, ids: SpecialIds, seq_len: int, count: int, batch: int,
            two_d: bool) -> list[dict]:
  """`count` held-out windows spread evenly over all the held-out text (every novel's tail;
  non-overlapping while count windows fit) as [gMASK] samples: the first half is bidirectional
  context, the perplexity is over the second half's text tokens (the final <eop>, an artefact of
  cutting the text into windows, is scored apart: `val_eop_loss`)."""
  n = seq_len - 2
  if len(val_tokens) < n:
    raise ValueError(f"the held-out text has {len(val_tokens)} tokens, fewer than a window of {n}")
  starts = np.unique(np.linspace(0, len(val_tokens) - n, count).astype(int))
  samples = [gmask_sample(val_tokens[s:s + n], n // 2, ids, seq_len, two_d) for s in starts]
  return _batched(samples, batch)


def blank_set(val_tokens: np.ndarray, ids: SpecialIds, seq_len: int, count: int, batch: int,
              two_d: bool, seed: int = 1234) -> list[dict]:
  """Held-out [MASK] samples (15% in Poisson(3) spans); accuracy = greedy token accuracy."""
  rng = np.random.default_rng(seed)
  starts = np.linspace(0, len(val_tokens) - seq_len - 1, count).astype(int)
  return _batched([mask_sample(val_tokens[s:s + seq_len], rng, ids, seq_len, two_d=two_d)
                   for s in starts], batch)


_FINAL_WORD = re.compile(r" ([A-Za-z]{3,})(?=[.!?])")


def last_word_set(val_text: str, tok, ids: SpecialIds, seq_len: int, count: int, batch: int,
                  two_d: bool) -> list[dict]:
  """LAMBADA-style: a held-out passage up to a sentence-final word (3+ letters) is the [gMASK]
  context; the sample is right when every token of the word is predicted greedily. Passages are
  spread evenly over the held-out text."""
  matches = [m for m in _FINAL_WORD.finditer(val_text) if m.start() > 2000]
  if not matches:
    return []
  picks = [matches[i] for i in np.linspace(0, len(matches) - 1, min(count, len(matches))).astype(int)]
  samples = []
  for m in picks:
    word = tok.encode(" " + m.group(1)).ids
    if len(word) > seq_len // 2:   # leave room for context
      continue
    ctx = tok.encode(val_text[max(0, m.start() - 6 * seq_len):m.start()]).ids
    ctx = ctx[-(seq_len - 3 - len(word)):]
    raw = np.asarray(ctx + word, np.int32)
    s = gmask_sample(raw, len(ctx), ids, len(raw) + 2, two_d)
    pad = seq_len - len(s["tokens"])
    samples.append({k: (np.pad(v, [(0, 0)] * (v.ndim - 1) + [(0, pad)]) if np.ndim(v) else v)
                    for k, v in s.items()})
  return _batched(samples, batch)


def summarize(ppl: dict, blank: dict, last: dict | None) -> dict:
  """val_loss / val_ppl: per text token of the held-out windows (without <eop>);
  val_eop_loss: the mean loss of their final <eop>; blank_infill_acc: greedy accuracy on the
  text tokens of held-out [MASK] samples; last_word_acc: the share of passages whose last word
  is predicted whole, greedily."""
  out = {"val_loss": ppl["nll"] / ppl["n"], "val_ppl": float(np.exp(ppl["nll"] / ppl["n"])),
         "val_eop_loss": ppl["eop_nll"] / max(ppl["n_eop"], 1.0),
         "blank_infill_acc": blank["hit"] / blank["n_tok"]}
  if last is not None:
    out["last_word_acc"] = last["all_hit"] / last["rows"]
  return out
