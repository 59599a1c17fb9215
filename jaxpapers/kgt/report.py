"""REPORT.md of kgt/queries: MRR per type for every model and dataset, the claims of the paper
beside what was measured, training curves and reasoning-path examples."""
from __future__ import annotations

import logging
from pathlib import Path

from jaxpapers.core.report import Report, Row, plot_curves, write_report
from jaxpapers.kgt import queries as Q

log = logging.getLogger("jaxpapers")


def table(results: dict, dataset: str) -> str:
  cols = list(Q.TYPES) + ["avg_in", "avg_out"]
  lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
  for model, r in results[dataset].items():
    lines.append(f"| {model} | " + " | ".join(f"{100 * r[k]:.1f}" if k in r else "—" for k in cols) + " |")
  return "\n".join(lines)


def write(wd: Path, command: str, c, results: dict) -> Path:
  datasets = [k for k in results if k not in ("config", "details")]
  rows, sections, plots = [], [], []
  for ds in datasets:
    r = results[ds]
    if "kgtransformer" in r:
      for avg in ("avg_in", "avg_out"):
        base = {m: r[m][avg] for m in ("gqe", "q2b", "betae") if m in r}
        if base:
          best = max(base.values())
          ok = r["kgtransformer"][avg] > best
          rows.append(Row(f"{ds}: {avg} MRR, kgTransformer vs best baseline",
                          "kgTransformer above GQE/Q2B/BetaE (FB15k-237, NELL)",
                          f"{100 * r['kgtransformer'][avg]:.1f} vs {100 * best:.1f} "
                          f"({max(base, key=base.get)})", "reproduced" if ok else "not reproduced"))
      for abl, what in (("kgtransformer_no_pretrain", "pre-training"), ("kgtransformer_no_moe", "MoE")):
        if abl in r:
          ok = r["kgtransformer"]["avg_in"] > r[abl]["avg_in"]
          rows.append(Row(f"{ds}: removing {what} lowers avg_in MRR", "yes (ablation)",
                          f"{100 * r['kgtransformer']['avg_in']:.1f} with, {100 * r[abl]['avg_in']:.1f} without",
                          "reproduced" if ok else "not reproduced"))
    sections.append((f"{ds}: test MRR (%) on hard answers, filtered", table(results, ds)))
    det = results["details"][ds]
    sections.append((f"{ds}: queries", " · ".join(f"{s}: {v}" for s, v in det["queries"].items())))
    series = []
    for model in r:
      for stage, info in det[model]["train"].items():
        h = info["history"]
        if h and model in ("kgtransformer", "gqe", "q2b", "betae"):
          series.append((f"{model} {stage}", list(range(1, len(h) + 1)), h))
    if series:
      png = plot_curves(wd, f"{ds}_loss.png", series, xlabel="step", ylabel="training loss")
      plots.append((png, f"{ds}: training loss per stage"))
    timing = "\n".join(f"- {m}: " + ", ".join(f"{s} {info['seconds']:.0f} s ({1e3 * info['step_time']:.0f} ms/step)"
                                              for s, info in det[m]["train"].items())
                       for m in r)
    sections.append((f"{ds}: training time", timing))
    if "explanations" in det:
      ex = []
      for e in det["explanations"]:
        path = " → ".join(f"[{v[0][0]} {v[0][1]:.2f}]" for v in e["variables"])
        ex.append(f"- {e['type']} anchors {e['anchors']} relations {e['relations']}: variables {path or '—'}; "
                  f"top answers {[f'{a} {p:.2f}' for a, p in e['answers']]}; hard answers {e['hard_answers']}")
      pv = det.get("path_validity_2p")
      if pv:
        ex.append(f"\nOn all {pv['queries']} test 2p queries the top variable lies on a true path "
                  f"(anchor -r1-> v -r2-> an answer) in {100 * pv['valid_top1']:.1f}% of cases; a random "
                  f"entity would in {100 * pv['chance']:.1f}%.")
      sections.append((f"{ds}: reasoning paths (kgTransformer, test queries)", "\n".join(ex)))
  rep = Report(title="kgTransformer on BetaE query types (arXiv 2208.07638)", command=command,
               rows=rows, plots=plots, sections=sections)
  path = write_report(wd, rep, results)
  log.info("report: %s", path)
  return path
