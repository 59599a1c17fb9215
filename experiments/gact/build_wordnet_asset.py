"""Builds jaxpapers/data/assets/wordnet_lexname.npz from WordNet 3.0 synsets (JSON lines).

  python experiments/gact/build_wordnet_asset.py /path/to/synsets.jsonl.xz

Keeps, per synset (node): its lexicographer file (`lexname`, 45 classes: the label of GACT's GNN
node-classification task here) and its gloss as word ids (the 4,095 most frequent gloss words by
document frequency, in order of appearance, CSR); the graph is every relation as one undirected
edge (pairs deduplicated). The package ships the result; this script documents how it was made.
"""
from __future__ import annotations

import collections
import json
import lzma
import re
import sys

import numpy as np

VOCAB = 4095
WORD = re.compile(r"[a-z]+")


def main(path: str, out: str = "jaxpapers/data/assets/wordnet_lexname.npz") -> None:
  with lzma.open(path, "rt") as f:
    synsets = [json.loads(line) for line in f]
  index = {s["id"]: i for i, s in enumerate(synsets)}
  lexnames = sorted({s["lexname"] for s in synsets})
  labels = np.array([lexnames.index(s["lexname"]) for s in synsets], np.uint8)
  words = [WORD.findall(s["gloss"].lower()) for s in synsets]
  df = collections.Counter(w for ws in words for w in set(ws))
  vocab = [w for w, _ in df.most_common(VOCAB)]
  wid = {w: i for i, w in enumerate(vocab)}
  ids = [[wid[w] for w in ws if w in wid] for ws in words]
  indptr = np.cumsum([0] + [len(x) for x in ids]).astype(np.int32)
  tokens = np.array([t for x in ids for t in x], np.uint16)
  pairs = set()
  for i, s in enumerate(synsets):
    for _, target, _ in s["relations"]:
      j = index.get(target)
      if j is not None and j != i:
        pairs.add((min(i, j), max(i, j)))
  edges = np.array(sorted(pairs), np.int32)
  np.savez_compressed(out, labels=labels, lexnames=np.array(lexnames), gloss_indptr=indptr,
                      gloss_tokens=tokens, edges=edges)
  print(f"{len(synsets)} synsets, {len(lexnames)} lexnames, {len(edges)} undirected edges, "
        f"{len(tokens)} gloss tokens -> {out}")


if __name__ == "__main__":
  main(*sys.argv[1:])
