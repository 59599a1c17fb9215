"""The static HTML dashboard of `jaxpapers reproduce`: an index with one row per paper and one
page per paper, rendered with Jinja2 from each experiment's workdir (report.json: the
claim-vs-measured rows, plots and sections that REPORT.md shows; results.json; config.json).

A claim row is coloured by its verdict (`verdict_class`): green where the claim held, amber where
it held in part, red where it did not, grey where nothing is claimed (n/a, descriptive). Plots and
animations (every PNG and GIF the run wrote) are copied beside the page, so the directory can be
served or zipped as it is.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import jinja2
from markdown_it import MarkdownIt

from jaxpapers import registry
from jaxpapers.core.workdir import atomic_write_text, read_json

CLASSES = ("held", "partial", "failed", "info")
MAX_JSON = 200_000            # characters of config.json / results.json shown per experiment


# what the reports' free-text verdicts say (tests/core/test_dashboard.py lists the ones in use)
_INCONCLUSIVE = ("not established", "no clear difference", "not measurable", "inconclusive",
                 "not comparable", "n/a")
_FAILED = ("not reproduced", "not met", "hurts", "worse", "reversed")
_PARTIAL = ("partly", "partial", "direction", "mixed", " but ", "helps on")
_HELD = ("reproduced", "met", "held", "helps", "yes", "confirmed")


def verdict_class(verdict: str) -> str:
  """held / partial / failed / info from a report's free-text verdict: info where nothing was
  claimed or the evidence decides nothing (n/a, not established), failed where the claim did
  not hold, partial where it held in part or only in direction, held where it held."""
  v = " ".join(verdict.strip().lower().split())
  if v.startswith(_INCONCLUSIVE):
    return "info"
  if any(v.startswith(w) or f" {w}" in v for w in _FAILED):
    return "failed"
  if any(w in v for w in _PARTIAL):
    return "partial"
  if v.startswith(_HELD):
    return "held"
  return "info"


def _markdown() -> MarkdownIt:
  return MarkdownIt("commonmark", {"html": False}).enable("table")


def _render(md: MarkdownIt, body: str, media_dir: str) -> str:
  """A report section as HTML, its relative image and link targets (files of the run, e.g. the
  GIFs a report shows inline) pointed at `media_dir`, where the run's media are copied."""
  tokens = md.parse(body)
  for tok in tokens:
    for t in [tok, *(tok.children or [])]:
      for attr in ("src", "href"):
        url = t.attrGet(attr) if t.type in ("image", "link_open") else None
        if url and "://" not in url and not url.startswith(("/", "#", "mailto:")):
          t.attrSet(attr, f"{media_dir}/{url}")
  return md.renderer.render(tokens, md.options, {})


def _experiment(name: str, st: dict, dest: Path, md: MarkdownIt) -> dict:
  """What the paper page shows of one experiment; media copied under dest."""
  wd = Path(st["workdir"])
  exp = {"name": name, "status": "finished" if st["returncode"] == 0 else "failed",
         "command": st["command"], "seconds": st.get("seconds"), "log": st.get("log"),
         "machine": st.get("machine"), "preset": st.get("preset"),
         "report": None, "rows": [], "plots": [], "media": [], "sections": [], "config": None,
         "results": None}
  report_file = wd / "report.json"
  if report_file.is_file():
    report = read_json(report_file)
    exp["report"] = report
    exp["rows"] = [r | {"cls": verdict_class(r["verdict"])} for r in report["rows"]]
    exp["sections"] = [(h, _render(md, body, dest.name)) for h, body in report["sections"]]
    dest.mkdir(parents=True, exist_ok=True)
    for png, caption in report["plots"]:
      if (wd / png).is_file():
        shutil.copy2(wd / png, dest / png)
        exp["plots"].append({"src": f"{dest.name}/{png}", "caption": caption})
    shown = {p for p, _ in report["plots"]}
    for f in sorted([*wd.glob("*.gif"), *wd.glob("*.png")]):
      if f.name not in shown:
        shutil.copy2(f, dest / f.name)
        exp["media"].append({"src": f"{dest.name}/{f.name}", "caption": f.name})
  elif exp["status"] == "finished":
    exp["status"] = f"finished, but no report.json in {wd} (a run of an older version?)"
  for key, file in (("config", "config.json"), ("results", "results.json")):
    if (wd / file).is_file():
      text = json.dumps(read_json(wd / file), indent=1)
      exp[key] = text if len(text) <= MAX_JSON else text[:MAX_JSON] + f"\n... ({len(text)} chars)"
  log = Path(st.get("log", ""))
  if exp["status"] == "failed" and log.is_file():      # the log travels with the dashboard
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(log, dest / log.name)
    exp["log"] = f"{dest.name}/{log.name}"
  return exp


def write(out: str | Path, status: dict, papers: list[str] | None = None) -> Path:
  """Writes out/index.html and out/<paper>.html from `status` (experiment name -> paper,
  returncode, workdir, log, command, preset, machine: what `reproduce` records); returns the
  index path. Every value from a report or a file is HTML-escaped."""
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  env = jinja2.Environment(loader=jinja2.PackageLoader("jaxpapers", "templates"),
                           autoescape=True, undefined=jinja2.StrictUndefined)
  md = _markdown()
  keys = papers or [k for k in registry.PAPERS if any(s["paper"] == k for s in status.values())]
  index_rows = []
  for key in keys:
    paper = registry.paper(key)
    exps = [_experiment(name, status[name], out / f"{key}_{name.replace('/', '_')}", md)
            for name in paper.experiments if name in status]
    counts = {c: sum(r["cls"] == c for e in exps for r in e["rows"]) for c in CLASSES}
    ran = [e for e in exps if e["status"].startswith("finished")]
    state = ("not run" if not exps else "finished" if len(ran) == len(paper.experiments)
             else f"{len(ran)} of {len(paper.experiments)} experiments finished")
    page = f"{key}.html"
    atomic_write_text(out / page, env.get_template("paper.html.j2").render(
        paper=paper, experiments=exps, counts=counts))
    index_rows.append({"paper": paper, "page": page, "counts": counts, "state": state,
                       "seconds": sum(e["seconds"] or 0 for e in exps)})
  index = out / "index.html"
  machines = []                                       # each machine once, in run order
  for st in status.values():
    if st.get("machine") and st["machine"] not in machines:
      machines.append(st["machine"])
  atomic_write_text(index, env.get_template("index.html.j2").render(
      rows=index_rows, machines=machines))
  return index
