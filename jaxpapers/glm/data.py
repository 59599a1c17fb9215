"""The GLM pretraining data of a run: corpus -> train/val split -> BPE tokenizer -> token arrays,
cached in the workdir so a resumed run uses the very same tokenizer and tokens."""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path

import jax
import numpy as np

from jaxpapers.core.errors import DataError
from jaxpapers.core.workdir import atomic_write_text, read_json
from jaxpapers.data import text as textdata
from jaxpapers.glm.objective import SpecialIds


@dataclasses.dataclass
class Corpus:
  tokenizer: object
  ids: SpecialIds
  train: np.ndarray
  val: np.ndarray
  val_text: str

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.get_vocab_size()


def special_ids(tok) -> SpecialIds:
  get = tok.token_to_id
  return SpecialIds(pad=get("<pad>"), mask=get("[MASK]"), gmask=get("[gMASK]"), sop=get("<sop>"),
                    eop=get("<eop>"))


@functools.lru_cache(maxsize=4)
def tokenize(corpus: str, vocab_size: int, val_fraction: float):
  """(tokenizer, training tokens, held-out tokens) of a corpus: its train/val split, a BPE
  tokenizer trained on the training part, both parts encoded. Cached in the process, so the
  check before a run writes anything (`check_tokens`) and the run's `prepare` tokenize once."""
  text = textdata.load_corpus(corpus)
  train_text, val_text = textdata.train_val_split(text, val_fraction)
  train_text, val_text = textdata.normalize(train_text), textdata.normalize(val_text)
  tok = textdata.train_tokenizer(train_text, vocab_size)
  return tok, textdata.encode(tok, train_text), textdata.encode(tok, val_text)


def _check_counts(corpus: str, train: np.ndarray, val: np.ndarray, seq_len: int) -> None:
  for name, arr in (("training", train), ("held-out", val)):
    if len(arr) < 4 * seq_len:
      raise DataError(f"corpus {corpus!r} gives only {len(arr)} {name} tokens; need at least "
                      f"{4 * seq_len} for seq_len={seq_len}")


def check_tokens(corpus: str, vocab_size: int, val_fraction: float, seq_len: int) -> None:
  """DataError unless the corpus exists, is UTF-8 text and gives at least 4 * seq_len tokens in
  each split: what a run checks before it writes anything (the bytes first, then the tokens)."""
  textdata.check_corpus(corpus, 8 * seq_len)
  _, train, val = tokenize(corpus, vocab_size, val_fraction)
  _check_counts(corpus, train, val, seq_len)


def prepare(corpus: str, vocab_size: int, val_fraction: float, workdir: str | Path,
            seq_len: int) -> Corpus:
  workdir = Path(workdir)
  text = textdata.load_corpus(corpus)
  _, val_text = textdata.train_val_split(text, val_fraction)
  val_text = textdata.normalize(val_text)
  tok_path, cache, key_path = workdir / "tokenizer.json", workdir / "tokens.npz", workdir / "data.json"
  key = {"corpus": corpus if corpus in textdata.EMBEDDED else str(Path(corpus).resolve()),
         "vocab_size": vocab_size, "val_fraction": val_fraction}
  if key_path.exists() and (have := read_json(key_path)) != key:
    raise DataError(f"{workdir} holds data prepared as {have}, not {key}; use a new --workdir")
  if jax.process_index() == 0 and not (tok_path.exists() and cache.exists() and key_path.exists()):
    tok, train, val = tokenize(corpus, vocab_size, val_fraction)
    _check_counts(corpus, train, val, seq_len)      # (before anything is written)
    # written atomically, the key last: a killed preparation is redone, never half-read
    suffix = f".tmp{os.getpid()}"
    tok.save(str(tok_path) + suffix)
    with open(str(cache) + suffix, "wb") as f:
      np.savez(f, train=train, val=val)
    os.replace(str(cache) + suffix, cache)
    os.replace(str(tok_path) + suffix, tok_path)
    atomic_write_text(key_path, json.dumps(key))
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("jaxpapers_glm_data")
  tok = textdata.load_tokenizer(tok_path)
  arrays = np.load(cache)
  train, val = arrays["train"], arrays["val"]
  _check_counts(corpus, train, val, seq_len)
  return Corpus(tokenizer=tok, ids=special_ids(tok), train=train, val=val, val_text=val_text)
