"""Builds `jaxpapers/data/assets/retrieval_sets.jsonl.xz`, the retrieval collections of
`retrieval/transfer`, from the workplace's shared data (run once; the output is vendored):

  python experiments/retrieval/build_data.py ../shared/data

One line per query-document pair: {"set", "id", "query", "doc", ...}.
- `wordnet`: a WordNet 3.0 synset; query = its gloss, doc = its lemmas and example sentences
  ("lemma, lemma: example; example"), `topic` = its lexicographer file. Twelve lexnames, up to
  `PER_TOPIC` synsets each (numpy seed 0); a synset whose doc or gloss text occurs twice is
  dropped (every query has one relevant document that no other document duplicates).
- `manpages`: a Linux man page; query = the NAME one-line summary, doc = the DESCRIPTION.
  Pages with identical DESCRIPTION text (aliases such as exp/expf/expl) are one document; a
  summary shared by several documents makes all of them relevant (see retrieval/data.py).
- `pydocs`: Python 3.11 documentation; a module's synopsis -> its page, an FAQ question -> its
  answer. Lines of a module page that state the synopsis or the module's title (the RST title,
  `:synopsis:`, `.. module::` directives) are removed so that the query is not in its document
  verbatim.
"""
from __future__ import annotations

import collections
import json
import lzma
import re
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[2] / "jaxpapers/data/assets/retrieval_sets.jsonl.xz"
TRAIN_TOPICS = ("noun.animal", "noun.plant", "noun.food", "noun.artifact", "noun.body",
                "noun.substance")
CROSS_TOPICS = ("noun.cognition", "noun.communication", "noun.act", "noun.state", "verb.motion",
                "verb.change")
PER_TOPIC = 1500


def read(path: Path) -> list[dict]:
  with lzma.open(path, "rt") as f:
    return [json.loads(line) for line in f]


def squash(text: str) -> str:
  return re.sub(r"\s+", " ", text).strip()


def wordnet(src: Path) -> list[dict]:
  rng = np.random.default_rng(0)
  synsets = [s for s in read(src / "wordnet/synsets.jsonl.xz")
             if s["lexname"] in TRAIN_TOPICS + CROSS_TOPICS]
  rows = []
  for s in synsets:
    doc = ", ".join(s["lemmas"])
    if s["examples"]:
      doc += ": " + "; ".join(squash(e).strip('"') for e in s["examples"])
    # a few glosses quote their own example sentence: the quotation is dropped from the query
    gloss = squash(re.sub(r'[;,]?\s*"[^"]*"', "", s["gloss"])).strip(" ;,")
    rows.append(dict(set="wordnet", id=s["id"], topic=s["lexname"], query=gloss, doc=squash(doc)))
  docs = collections.Counter(r["doc"] for r in rows)
  glosses = collections.Counter(r["query"] for r in rows)
  rows = [r for r in rows if docs[r["doc"]] == 1 and glosses[r["query"]] == 1 and r["query"]]
  out = []
  for topic in TRAIN_TOPICS + CROSS_TOPICS:
    mine = [r for r in rows if r["topic"] == topic]
    keep = sorted(rng.permutation(len(mine))[:PER_TOPIC])
    out += [mine[i] for i in keep]
  return out


def manpages(src: Path) -> list[dict]:
  return [dict(set="manpages", id=r["id"], section=r["section"], query=squash(r["query"]),
               doc=squash(r["doc"])) for r in read(src / "retrieval/manpages.jsonl.xz")
          if r["query"].strip() and r["doc"].strip()]


# directives whose whole block (the line and its indented continuation) is markup, not text
_RST_BLOCK = re.compile(r"^(\s*)\.\. (module|moduleauthor|sectionauthor|currentmodule|index|include|"
                        r"testsetup|testcleanup|highlight|_[^:]*)::?")
_RST_LINE = re.compile(r"^\s*(:synopsis:.*|:platform:.*|[=\-*~^#]{3,}\s*)$")


def _clean_rst(doc: str, query: str, title: str) -> str:
  lines, block = [], None
  for line in doc.splitlines():
    indent = len(line) - len(line.lstrip())
    if block is not None and (not line.strip() or indent > block):
      continue                                          # inside a dropped directive's block
    block = None
    m = _RST_BLOCK.match(line)
    if m:
      block = len(m.group(1))
      continue
    if _RST_LINE.match(line) or line.strip().startswith(f":mod:`{title}`"):
      continue
    lines.append(line)
  text = squash("\n".join(lines))
  if query:        # the synopsis wherever it is still stated (e.g. a title wrapped over two lines)
    text = squash(re.sub(re.escape(query), " ", text, flags=re.IGNORECASE))
  return text


def pydocs(src: Path) -> list[dict]:
  out = []
  for r in read(src / "retrieval/pydocs.jsonl.xz"):
    query = squash(r["query"])
    doc = _clean_rst(r["doc"], query, r["title"]) if r["kind"] == "module" else squash(r["doc"])
    if query and doc:
      out.append(dict(set="pydocs", id=r["id"], kind=r["kind"], query=query, doc=doc))
  return out


def main(src: str) -> None:
  src = Path(src)
  rows = wordnet(src) + manpages(src) + pydocs(src)
  with lzma.open(OUT, "wt", preset=9) as f:
    for r in rows:
      f.write(json.dumps(r, ensure_ascii=False) + "\n")
  counts = collections.Counter(r["set"] for r in rows)
  topics = collections.Counter(r["topic"] for r in rows if r["set"] == "wordnet")
  print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB): {dict(counts)}; topics {dict(topics)}")


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
