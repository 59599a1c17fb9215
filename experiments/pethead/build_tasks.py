"""Builds `jaxpapers/data/assets/pethead_tasks.jsonl.xz`, the six classification tasks of the
PET-head suite, from the workplace's shared data (run once; the output is vendored):

  python experiments/pethead/build_tasks.py ../shared/data

Each line is one example: {"task", "text", ["text_pair"], "label"}. The selection is a fixed
function of the source files (numpy seed 0); the per-run train/dev/test splits are drawn later,
by the run's seed (`jaxpapers.pethead.tasks.split`).

- drugs: drug review -> rating (positive / negative / neutral), all 979 reviews (imbalanced).
- polarity: Pang & Lee movie-review sentence -> pos / neg, all 200.
- lexname: WordNet gloss -> lexicographer file (45 classes), up to 40 synsets per class.
- wic: a word and two WordNet example sentences that use it -> same sense or not (WiC-like;
  balanced; positives are two examples of one synset, negatives examples of two synsets of the
  same part of speech).
- gloss_match: a lemma and a gloss -> is it a gloss of that lemma (balanced; half the negatives
  are the gloss of a hypernym or hyponym, half a random gloss of the same part of speech).
- manpage: man-page DESCRIPTION -> section (1, 2, 3, 4, 5, 7, 8), section 3 capped at 300.

Every task keeps one copy of each text (pair); a text with two labels is dropped.
"""
from __future__ import annotations

import collections
import json
import lzma
import re
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[2] / "jaxpapers/data/assets/pethead_tasks.jsonl.xz"


def read(path: Path) -> list[dict]:
  with lzma.open(path, "rt") as f:
    return [json.loads(line) for line in f]


def clean(text: str) -> str:
  text = text.replace("&rsquo;", "'").replace("&quot;", '"').replace("&amp;", "&").replace("&#039;", "'")
  return re.sub(r"\s+", " ", text).strip().strip('"').strip()


def drugs(src: Path, rng) -> list[dict]:
  return [dict(text=clean(r["review"]), label=r["rating"])
          for r in read(src / "classification/drugreviews.jsonl.xz")]


def polarity(src: Path, rng) -> list[dict]:
  return [dict(text=clean(r["text"]), label=r["label"])
          for r in read(src / "classification/pang_lee_polarity.jsonl.xz")]


def lexname(synsets, rng) -> list[dict]:
  by = collections.defaultdict(list)
  for s in synsets:
    by[s["lexname"]].append(s)
  rows = []
  for name in sorted(by):
    pick = rng.permutation(len(by[name]))[:40]
    rows += [dict(text=by[name][i]["gloss"], label=name) for i in sorted(pick)]
  return rows


def _uses(word: str, sentence: str) -> bool:
  return re.search(rf"\b{re.escape(word)}\b", sentence.lower()) is not None


def wic(synsets, rng, n_each: int = 600) -> list[dict]:
  # word -> pos -> synset id -> examples using the word
  uses = collections.defaultdict(lambda: collections.defaultdict(dict))
  for s in synsets:
    for lemma in s["lemmas"]:
      if " " in lemma or "_" in lemma:
        continue
      ex = [e for e in s["examples"] if _uses(lemma, e)]
      if ex:
        uses[lemma.lower()][s["pos"]][s["id"]] = ex
  pos_pairs, neg_pairs = [], []
  for word in sorted(uses):
    for pos, senses in sorted(uses[word].items()):
      ids = sorted(senses)
      for sid in ids:
        if len(senses[sid]) >= 2:
          pos_pairs.append((word, senses[sid][0], senses[sid][1]))
      for a in range(len(ids)):
        for b in range(a + 1, len(ids)):
          neg_pairs.append((word, senses[ids[a]][0], senses[ids[b]][0]))
  n = min(n_each, len(pos_pairs), len(neg_pairs))
  rows = [dict(text=f"{w}: {x}", text_pair=y, label="same")
          for w, x, y in (pos_pairs[i] for i in sorted(rng.permutation(len(pos_pairs))[:n]))]
  rows += [dict(text=f"{w}: {x}", text_pair=y, label="different")
           for w, x, y in (neg_pairs[i] for i in sorted(rng.permutation(len(neg_pairs))[:n]))]
  return rows


def gloss_match(synsets, rng, n_each: int = 600) -> list[dict]:
  by_id = {s["id"]: s for s in synsets}
  by_pos = collections.defaultdict(list)
  for s in synsets:
    by_pos[s["pos"]].append(s)
  chosen = [synsets[i] for i in rng.permutation(len(synsets))[:3 * n_each]]
  rows = []
  for k, s in enumerate(chosen[:n_each]):
    rows.append(dict(text=s["lemmas"][0].replace("_", " "), text_pair=s["gloss"], label="match"))
  for k, s in enumerate(chosen[n_each:]):
    if len([r for r in rows if r["label"] == "other"]) >= n_each:
      break
    lemma = s["lemmas"][0].replace("_", " ")
    if k % 2 == 0:   # a related synset: hypernym or hyponym
      rel = [t for name, t, _ in s["relations"] if name in ("hypernym", "hyponym") and t in by_id]
      if not rel:
        continue
      other = by_id[rel[int(rng.integers(len(rel)))]]
    else:
      pool = by_pos[s["pos"]]
      other = pool[int(rng.integers(len(pool)))]
    if any(lemma == l.replace("_", " ") for l in other["lemmas"]):
      continue
    rows.append(dict(text=lemma, text_pair=other["gloss"], label="other"))
  return rows


def manpage(src: Path, rng) -> list[dict]:
  pages = read(src / "retrieval/manpages.jsonl.xz")
  by = collections.defaultdict(list)
  for p in pages:
    if p["doc"].strip():
      by[p["section"]].append(p)
  rows = []
  for sec in sorted(by):
    pick = sorted(rng.permutation(len(by[sec]))[:300])
    rows += [dict(text=clean(by[sec][i]["doc"]), label=sec) for i in pick]
  return rows


def dedupe(rows: list[dict]) -> list[dict]:
  """One copy of each example (text and pair); a text that carries two labels is dropped (many
  man pages share one DESCRIPTION: without this, copies fall into train and test alike)."""
  labels = collections.defaultdict(set)
  for r in rows:
    labels[(r["text"], r.get("text_pair"))].add(r["label"])
  seen, out = set(), []
  for r in rows:
    key = (r["text"], r.get("text_pair"))
    if key not in seen and len(labels[key]) == 1:
      out.append(r)
    seen.add(key)
  return out


def main(src: str) -> None:
  src = Path(src)
  rng = np.random.default_rng(0)
  synsets = read(src / "wordnet/synsets.jsonl.xz")
  tasks = {"drugs": drugs(src, rng), "polarity": polarity(src, rng), "lexname": lexname(synsets, rng),
           "wic": wic(synsets, rng), "gloss_match": gloss_match(synsets, rng),
           "manpage": manpage(src, rng)}
  tasks = {name: dedupe(rows) for name, rows in tasks.items()}
  with lzma.open(OUT, "wt", preset=9) as f:
    for name, rows in tasks.items():
      for r in rows:
        f.write(json.dumps({"task": name, **r}, ensure_ascii=False) + "\n")
  for name, rows in tasks.items():
    print(name, len(rows), dict(collections.Counter(r["label"] for r in rows).most_common(8)))
  print(OUT, OUT.stat().st_size, "bytes")


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
