"""The GLM pretraining data of a run: corpus -> train/val split -> BPE tokenizer -> token arrays,
cached in the workdir so a resumed run uses the very same tokenizer and tokens."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from jaxpapers.core.errors import DataError
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


def prepare(corpus: str, vocab_size: int, val_fraction: float, workdir: str | Path,
            seq_len: int) -> Corpus:
  workdir = Path(workdir)
  text = textdata.load_corpus(corpus)
  train_text, val_text = textdata.train_val_split(text, val_fraction)
  train_text, val_text = textdata.normalize(train_text), textdata.normalize(val_text)
  tok_path, cache = workdir / "tokenizer.json", workdir / "tokens.npz"
  if tok_path.exists() and cache.exists():
    tok = textdata.load_tokenizer(tok_path)
    arrays = np.load(cache)
    train, val = arrays["train"], arrays["val"]
  else:
    tok = textdata.train_tokenizer(train_text, vocab_size)
    train, val = textdata.encode(tok, train_text), textdata.encode(tok, val_text)
    tok.save(str(tok_path))
    np.savez(cache, train=train, val=val)
  for name, arr in (("training", train), ("held-out", val)):
    if len(arr) < 4 * seq_len:
      raise DataError(f"corpus {corpus!r} gives only {len(arr)} {name} tokens; need at least "
                      f"{4 * seq_len} for seq_len={seq_len}")
  return Corpus(tokenizer=tok, ids=special_ids(tok), train=train, val=val, val_text=val_text)
