"""Held-out metrics as defined in REPORT.md: perplexity on text tokens only (<eop> apart), over
windows spread across all the held-out text."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxpapers.glm import evaluate as ev
from jaxpapers.glm.model import GLM, GLMConfig
from jaxpapers.glm.objective import SpecialIds

IDS = SpecialIds(pad=0, mask=1, gmask=2, sop=3, eop=4)


def test_ppl_windows_spread_over_all_the_held_out_text():
  val = np.arange(1000, 3000, dtype=np.int32)       # 2,000 held-out tokens, windows of 30
  batches = ev.ppl_set(val, IDS, 32, 5, 2, False)
  firsts = np.concatenate([b["tokens"][:, 0] for b in batches]) - 1000
  np.testing.assert_array_equal(firsts, [0, 492, 985, 1477, 1970])   # the last ends the text
  assert sum(len(b["tokens"]) for b in batches) == 5


def test_val_ppl_counts_text_tokens_and_scores_eop_apart():
  """val_loss = mean NLL of the generated text tokens, recomputed by hand from the logits; the
  <eop> target (always at the window's last position) is in val_eop_loss only."""
  model = GLM(GLMConfig(vocab_size=50, num_layers=1, d_model=16, num_heads=2, dropout=0.0),
              rngs=nnx.Rngs(params=0))
  val = np.random.default_rng(0).integers(5, 50, 400).astype(np.int32)
  batches = ev.ppl_set(val, IDS, 16, 6, 3, False)
  tot = ev.evaluate(model, batches, IDS.eop)
  text, eop = [], []
  for b in batches:
    logp = jax.nn.log_softmax(model(jnp.asarray(b["tokens"]), jnp.asarray(b["positions"]),
                                    jnp.asarray(b["context_len"])), -1)
    nll = -np.take_along_axis(np.asarray(logp), b["targets"][..., None], -1)[..., 0]
    on = b["weights"] > 0
    text.append(nll[on & (b["targets"] != IDS.eop)])
    eop.append(nll[on & (b["targets"] == IDS.eop)])
  text, eop = np.concatenate(text), np.concatenate(eop)
  assert len(eop) == 6 and len(text) == 6 * 7    # 7 text targets + <eop> per 16-token window
  out = ev.summarize(tot, tot, None)
  np.testing.assert_allclose(out["val_loss"], text.mean(), rtol=1e-5)
  np.testing.assert_allclose(out["val_ppl"], np.exp(text.mean()), rtol=1e-5)
  np.testing.assert_allclose(out["val_eop_loss"], eop.mean(), rtol=1e-5)
  assert abs(out["val_loss"] - np.concatenate([text, eop]).mean()) > 1e-4   # the old definition


def test_training_text_loss_leaves_out_eop():
  model = GLM(GLMConfig(vocab_size=50, num_layers=1, d_model=16, num_heads=2, dropout=0.0),
              rngs=nnx.Rngs(params=0))
  val = np.random.default_rng(1).integers(5, 50, 400).astype(np.int32)
  b = {k: jnp.asarray(v) for k, v in ev.ppl_set(val, IDS, 16, 4, 4, False)[0].items()}
  loss, aux = ev.loss_fn(model, b, None, eop=IDS.eop)
  nll, _ = ev.token_nll(model, b)
  w = np.asarray(b["weights"])
  text = w * (np.asarray(b["targets"]) != IDS.eop)
  np.testing.assert_allclose(loss, (nll * w).sum() / w.sum(), rtol=1e-6)   # trained: with <eop>
  np.testing.assert_allclose(aux["text_loss"], (nll * text).sum() / text.sum(), rtol=1e-6)
