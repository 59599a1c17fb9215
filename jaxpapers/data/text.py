"""Plain-text corpora: the embedded ones, or a user's .txt / .txt.xz file, split into documents,
with a held-out tail of every document and a byte-level BPE tokenizer (HF `tokenizers`)."""
from __future__ import annotations

import lzma
import re
from importlib import resources
from pathlib import Path

import numpy as np

from jaxpapers.core.errors import DataError

EMBEDDED = {"austen": "austen.txt.xz"}
SPECIAL_TOKENS = ("<pad>", "[MASK]", "[gMASK]", "<sop>", "<eop>")
_DOC_SEP = re.compile(r"^=== (.+?) ===$", re.MULTILINE)


def check_corpus(name_or_path: str, min_tokens: int = 0) -> None:
  """DataError unless `name_or_path` names an embedded corpus or a readable UTF-8 file with at
  least `min_tokens` bytes (a byte-level BPE token holds at least one byte): what a run checks
  before it writes anything."""
  if name_or_path in EMBEDDED:
    return
  if not Path(name_or_path).is_file():
    raise DataError(f"corpus file not found: {name_or_path} (use one of {sorted(EMBEDDED)} or a "
                    ".txt/.txt.xz path)")
  n = len(load_corpus(name_or_path).encode("utf-8"))
  if n < min_tokens:
    raise DataError(f"corpus {name_or_path!r} holds {n} bytes, so at most {n} tokens; need at "
                    f"least {min_tokens}")


def load_corpus(name_or_path: str) -> str:
  """Text of an embedded corpus (`austen`) or of a .txt / .txt.xz file."""
  if name_or_path in EMBEDDED:
    data = resources.files("jaxpapers.data").joinpath("assets", EMBEDDED[name_or_path]).read_bytes()
    return lzma.decompress(data).decode("utf-8")
  path = Path(name_or_path)
  if not path.is_file():
    raise DataError(f"corpus file not found: {name_or_path} (use one of {sorted(EMBEDDED)} or a "
                    ".txt/.txt.xz path)")
  try:
    raw = path.read_bytes()
    if path.suffix == ".xz":
      raw = lzma.decompress(raw)
    text = raw.decode("utf-8")
  except (lzma.LZMAError, UnicodeDecodeError) as e:
    raise DataError(f"corpus file {path} is not UTF-8 text{' in xz' if path.suffix == '.xz' else ''}: {e}") from None
  if not text.strip():
    raise DataError(f"corpus file {path} is empty")
  return text


def split_documents(text: str) -> list[str]:
  """Documents separated by `=== title ===` lines; the whole text is one document otherwise."""
  parts = _DOC_SEP.split(text)
  if len(parts) == 1:
    return [text]
  return [body for body in parts[2::2] if body.strip()]


def train_val_split(text: str, val_fraction: float) -> tuple[str, str]:
  """The last `val_fraction` of every document (cut at a paragraph break) is held out."""
  train, val = [], []
  for doc in split_documents(text):
    cut = int(len(doc) * (1.0 - val_fraction))
    brk = doc.rfind("\n\n", 0, cut)
    cut = brk if brk > 0.5 * cut else cut
    train.append(doc[:cut])
    val.append(doc[cut:])
  return "\n\n".join(train), "\n\n".join(val)


def normalize(text: str) -> str:
  """Joins hard-wrapped lines of a paragraph; paragraphs stay separated by a blank line."""
  paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
  return "\n\n".join(p for p in paras if p)


def train_tokenizer(text: str, vocab_size: int):
  """Byte-level BPE trained on `text`, with GLM's special tokens."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  chunks = text.split("\n\n")
  tok.train_from_iterator(chunks, trainer=trainer)
  return tok


def load_tokenizer(path: str | Path):
  from tokenizers import Tokenizer
  return Tokenizer.from_file(str(path))


def encode(tok, text: str) -> np.ndarray:
  """Token ids of `text`, encoded paragraph by paragraph (parallel in the Rust tokenizer)."""
  paras = text.split("\n\n")
  encs = tok.encode_batch([p + "\n\n" for p in paras])
  ids = [i for e in encs for i in e.ids]
  return np.asarray(ids, np.int32)


def unigram_entropy(tokens: np.ndarray, vocab_size: int) -> float:
  """Entropy in nats of the empirical unigram distribution (the loss of a context-free model)."""
  counts = np.bincount(tokens, minlength=vocab_size).astype(np.float64)
  p = counts[counts > 0] / counts.sum()
  return float(-(p * np.log(p)).sum())
