"""Our GQE / Query2Box / BetaE beside KGReasoning's own implementation (snap-stanford/KGReasoning,
PyTorch, run in a separate environment: not a dependency of this project) on the same query files.

  # 1. the quick preset's UMLS queries of one seed, in BetaE's layout (KGReasoning reads it as is)
  python experiments/kgt/kgreasoning_side_by_side.py write DIR --seed 0
  # 2. ours on those files (the README's run: the whole quick preset; its first seed is compared)
  jaxpapers run kgt/queries --preset quick --workdir OURS --config.datasets="('betae:DIR',)"
  # 3. theirs, with torch, at the same budget (experiments/kgt/README.md has the command)
  # 4. the table: per type, each run's test MRR at its validation-chosen evaluation point
  python experiments/kgt/kgreasoning_side_by_side.py table OURS NAME=LOG [NAME=LOG ...]

A KGReasoning log's evaluation points are its `Valid`/`Test` lines at every `--valid_steps`
steps; per type the point with the best validation Hits@3 (the earliest of ties) is chosen, as
`kgt.selection` chooses ours."""
from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

TYPES = ("1p", "2p", "3p", "2i", "3i", "ip", "pi", "2u", "up")
IN, OUT = TYPES[:5], TYPES[5:]
LINE = re.compile(r"(Valid|Test) (\w+)(?:-DNF)? (MRR|HITS3) at step (\d+): ([0-9.eE+-]+)")


def write(directory: str, seed: int) -> None:
  from jaxpapers.configs.kgt.queries import get_config
  from jaxpapers.kgt import betae_format
  from jaxpapers.kgt.experiments import load_queries, seed_config
  c = seed_config(get_config("quick"), seed)
  data, ents, rels, _ = load_queries(c, "umls")
  betae_format.write_betae(data, directory, ents, rels)
  print(f"wrote {directory}: " + ", ".join(f"{s} {sum(v.counts().values())}" for s, v in data.splits.items()))


def parse_log(path: Path) -> dict:
  """{type: test MRR at the point of best valid HITS3}, plus avg_in/avg_out and the points."""
  points: dict[int, dict] = defaultdict(lambda: defaultdict(dict))
  for line in path.read_text().splitlines():
    m = LINE.search(line)
    if m:
      split, qtype, metric, step, value = m.groups()
      if qtype in TYPES:
        points[int(step)][split][f"{qtype} {metric}"] = float(value)
  evaluated = sorted(s for s, p in points.items() if p.get("Valid") and p.get("Test"))
  if not evaluated:
    raise SystemExit(f"{path}: no evaluation point with both Valid and Test lines")
  out, chosen = {}, {}
  for t in TYPES:
    have = [s for s in evaluated if f"{t} HITS3" in points[s]["Valid"]]
    if have:
      best = min(have, key=lambda s: (-points[s]["Valid"][f"{t} HITS3"], s))
      chosen[t], out[t] = best, points[best]["Test"][f"{t} MRR"]
  for name, group in (("avg_in", IN), ("avg_out", OUT)):
    if all(t in out for t in group):
      out[name] = sum(out[t] for t in group) / len(group)
  return {"mrr": out, "chosen": chosen, "points": evaluated}


def table(ours: str, logs: list[str]) -> None:
  r = json.loads((Path(ours) / "results.json").read_text())
  ds = next(k for k in r if k not in ("config", "details", "seeds", "paired"))
  first = f"seed{r['config']['seeds'][0]}"            # ours: the first seed, as KGReasoning's one
  rows = [(f"ours {m} ({first})", {k: v["mrr"] for k, v in d["test"].items() if k in TYPES + ("avg_in", "avg_out")})
          for m, d in r["details"][ds][first].items() if m != "queries"]
  for arg in logs:                      # NAME=PATH, or PATH (named by its run folder)
    name, _, path = arg.rpartition("=")
    rows.append((f"KGReasoning {name or Path(path).parent.name}", parse_log(Path(path))["mrr"]))
  cols = list(TYPES) + ["avg_in", "avg_out"]
  print("| run | " + " | ".join(cols) + " |")
  print("|---" * (len(cols) + 1) + "|")
  for name, m in rows:
    print(f"| {name} | " + " | ".join(f"{100 * m[k]:.1f}" if k in m else "—" for k in cols) + " |")


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="cmd", required=True)
  w = sub.add_parser("write")
  w.add_argument("directory")
  w.add_argument("--seed", type=int, default=0)
  t = sub.add_parser("table")
  t.add_argument("ours")
  t.add_argument("logs", nargs="+", help="NAME=train.log of a KGReasoning run")
  a = p.parse_args()
  if a.cmd == "write":
    write(a.directory, a.seed)
  else:
    table(a.ours, a.logs)


if __name__ == "__main__":
  main()
