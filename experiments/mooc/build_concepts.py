"""Builds jaxpapers/data/assets/mooc_courses.json.xz, the concept hierarchy of the MOOC simulator
(jaxpapers/mooc/simulator.py), from WordNet 3.0 (the workplace's shared copy).

A course is a noun synset whose hyponym subtree, in its own lexicographer file, holds 16-80
synsets; disjoint subtrees are taken greedily, largest lexnames first, at most 6 per lexname.
Each course keeps its first `MAX_CONCEPTS` synsets in breadth-first order; a concept's parent
(its hypernym inside the course) is its prerequisite. Per concept: the lemma (underscores as
spaces), the gloss and the first example, which become the videos' subtitles.

    python experiments/mooc/build_concepts.py ../shared/data/wordnet/synsets.jsonl.xz
"""
import collections
import json
import lzma
import sys
from pathlib import Path

MAX_CONCEPTS = 24
MIN_TREE, MAX_TREE = 16, 80
PER_LEXNAME = 6


def main(src: str) -> None:
  syn = {}
  with lzma.open(src, "rt") as f:
    for line in f:
      s = json.loads(line)
      if s["pos"] == "n":
        syn[s["id"]] = s
  children = {i: [t for r, t, _ in s["relations"] if r == "hyponym" and t in syn
                  and syn[t]["lexname"] == s["lexname"]] for i, s in syn.items()}

  def subtree(root):
    order, seen, queue = [], {root}, collections.deque([root])
    while queue:
      n = queue.popleft()
      order.append(n)
      for c in sorted(children[n]):
        if c not in seen:
          seen.add(c)
          queue.append(c)
    return order

  sizes = {}
  for i, s in syn.items():
    if s["lexname"] == "noun.Tops" or not children[i]:
      continue
    n = len(subtree(i))
    if MIN_TREE <= n <= MAX_TREE:
      sizes[i] = n
  used, per_lex, courses = set(), collections.Counter(), []
  for i in sorted(sizes, key=lambda i: (-sizes[i], i)):
    s = syn[i]
    if per_lex[s["lexname"]] >= PER_LEXNAME:
      continue
    tree = subtree(i)
    if used & set(tree):
      continue
    used |= set(tree)
    per_lex[s["lexname"]] += 1
    keep = tree[:MAX_CONCEPTS]
    index = {k: j for j, k in enumerate(keep)}
    parent = {c: p for p in keep for c in children[p]}
    concepts = [dict(id=k, lemma=syn[k]["lemmas"][0].replace("_", " "), gloss=syn[k]["gloss"],
                     example=(syn[k]["examples"] or [""])[0],
                     parent=index.get(parent.get(k), -1) if k != i else -1) for k in keep]
    courses.append(dict(name=s["lemmas"][0].replace("_", " "), field=s["lexname"],
                        concepts=concepts))
  out = Path(__file__).resolve().parents[2] / "jaxpapers/data/assets/mooc_courses.json.xz"
  with lzma.open(out, "wt", preset=9) as f:
    json.dump(courses, f, separators=(",", ":"))
  print(f"{len(courses)} courses, {sum(len(c['concepts']) for c in courses)} concepts, "
        f"{len(per_lex)} fields -> {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
  main(sys.argv[1])
