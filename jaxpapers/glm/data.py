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

from jaxpapers.core.errors import DataError, WorkdirError
from jaxpapers.core.workdir import atomic_write_text, read_json, validating_workdir
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


def _file_key(corpus: str):
  """What identifies a corpus's content cheaply: an embedded name, or a file's resolved path,
  size and modification time (an edited file is tokenized anew)."""
  if corpus in textdata.EMBEDDED:
    return corpus
  st = Path(corpus).stat()
  return (str(Path(corpus).resolve()), st.st_size, st.st_mtime_ns)


def tokenize(corpus: str, vocab_size: int, val_fraction: float):
  """(tokenizer, training tokens, held-out tokens) of a corpus: its train/val split, a BPE
  tokenizer trained on the training part, both parts encoded. Cached in the process (by the
  file's content key), so the check before a run writes anything (`check_tokens`) and the run's
  `prepare` tokenize once; `prepare` drops the cache once it has written the tokens."""
  return _tokenize(corpus, _file_key(corpus), vocab_size, val_fraction)


@functools.lru_cache(maxsize=2)
def _tokenize(corpus: str, _key, vocab_size: int, val_fraction: float):
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


def _data_key(corpus: str, vocab_size: int, val_fraction: float) -> dict:
  return {"corpus": corpus if corpus in textdata.EMBEDDED else str(Path(corpus).resolve()),
          "vocab_size": vocab_size, "val_fraction": val_fraction}


def prepared(workdir: Path | None, corpus: str, vocab_size: int, val_fraction: float) -> bool:
  """Whether `workdir` already holds this corpus's tokenizer and tokens (an earlier start of the
  same run checked and wrote them)."""
  if workdir is None:
    return False
  workdir = Path(workdir)
  files = [workdir / n for n in ("tokenizer.json", "tokens.npz", "data.json")]
  if not all(f.is_file() for f in files):
    return False
  try:
    return read_json(files[2]) == _data_key(corpus, vocab_size, val_fraction)
  except WorkdirError:
    return False     # (prepare names the damaged file)


def check_tokens(corpus: str, vocab_size: int, val_fraction: float, seq_len: int) -> None:
  """DataError unless the corpus exists, is UTF-8 text and gives at least 4 * seq_len tokens in
  each split: what a run checks before it writes anything (the bytes first, then the tokens).
  A resumed run whose workdir holds the prepared tokens is not tokenized again here (`prepare`
  checks the counts of what it loads)."""
  textdata.check_corpus(corpus, 8 * seq_len)
  if prepared(validating_workdir(), corpus, vocab_size, val_fraction):
    return
  _, train, val = tokenize(corpus, vocab_size, val_fraction)
  _check_counts(corpus, train, val, seq_len)


def check_tokenizer(corpus: str, vocab_size: int, val_fraction: float):
  """The tokenizer a run will use, for checks before it starts: the prepared one of a resumed
  run, else the one `check_tokens` trained (cached)."""
  wd = validating_workdir()
  if prepared(wd, corpus, vocab_size, val_fraction):
    return textdata.load_tokenizer(Path(wd) / "tokenizer.json")
  return tokenize(corpus, vocab_size, val_fraction)[0]


def prepare(corpus: str, vocab_size: int, val_fraction: float, workdir: str | Path,
            seq_len: int) -> Corpus:
  workdir = Path(workdir)
  text = textdata.load_corpus(corpus)
  _, val_text = textdata.train_val_split(text, val_fraction)
  val_text = textdata.normalize(val_text)
  tok_path, cache, key_path = workdir / "tokenizer.json", workdir / "tokens.npz", workdir / "data.json"
  key = _data_key(corpus, vocab_size, val_fraction)
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
    _tokenize.cache_clear()            # written: the tokens are read from the workdir from now on
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("jaxpapers_glm_data")
  tok = textdata.load_tokenizer(tok_path)
  arrays = np.load(cache)
  train, val = arrays["train"], arrays["val"]
  _check_counts(corpus, train, val, seq_len)
  return Corpus(tokenizer=tok, ids=special_ids(tok), train=train, val=val, val_text=val_text)
