"""REPORT.md of kgt/queries: MRR per type for every model and dataset, the claims of the paper
beside what was measured, training curves and reasoning-path examples."""
from __future__ import annotations

import logging
from pathlib import Path

from jaxpapers.core.report import Report, Row, plot_curves, write_report
from jaxpapers.core.stats import verdict
from jaxpapers.kgt import queries as Q

log = logging.getLogger("jaxpapers")


def table(results: dict, dataset: str) -> str:
  """Mean test MRR (%) over seeds per type, ± the sample std where there are several seeds."""
  cols = list(Q.TYPES) + ["avg_in", "avg_out"]
  spread = results.get("seeds", {}).get(dataset, {})
  lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
  for model, r in results[dataset].items():
    def cell(k):
      if k not in r:
        return "—"
      sd = spread.get(model, {}).get(k, {}).get("std")
      return f"{100 * r[k]:.1f}" + (f" ± {100 * sd:.1f}" if sd is not None else "")
    lines.append(f"| {model} | " + " | ".join(cell(k) for k in cols) + " |")
  return "\n".join(lines)


def _diff(d: dict) -> str:
  ci = d.get("ci95")
  return f"{100 * d['mean']:+.1f}" + (f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci else "")


def _all_of(verdicts: list[str]) -> str:
  """The claim "above every one": reproduced when every paired interval is above zero, not
  reproduced when any is below, else not established (n/a with one seed)."""
  if any(v == "not reproduced" for v in verdicts):
    return "not reproduced"
  if all(v == "reproduced" for v in verdicts):
    return "reproduced"
  return verdicts[0] if len(set(verdicts)) == 1 else "not established"


def write(wd: Path, command: str, c, results: dict) -> Path:
  datasets = [k for k in results if k not in ("config", "details", "seeds", "paired")]
  rows, sections, plots = [], [], []
  n = len(results["config"].get("seeds", [0]))
  for ds in datasets:
    r, paired = results[ds], results.get("paired", {}).get(ds, {})
    if "kgtransformer" in r:
      for avg in ("avg_in", "avg_out"):
        base = [m for m in ("gqe", "q2b", "betae") if m in r and avg in paired.get(f"kgtransformer - {m}", {})]
        if base:
          ds_ = [paired[f"kgtransformer - {m}"][avg] for m in base]
          rows.append(Row(f"{ds}: {avg} MRR, kgTransformer minus each baseline (mean over {n} seeds, 95% CI)",
                          "kgTransformer above GQE/Q2B/BetaE (FB15k-237, NELL)",
                          f"{100 * r['kgtransformer'][avg]:.1f}; " + ", ".join(f"{m} {_diff(d)}" for m, d in zip(base, ds_)),
                          _all_of([verdict(d) for d in ds_])))
      for abl, what in (("kgtransformer_nopretrain", "pre-training"), ("kgtransformer_nomoe", "MoE")):
        d = paired.get(f"kgtransformer - {abl}", {}).get("avg_in")
        if d:
          rows.append(Row(f"{ds}: removing {what} lowers avg_in MRR", "yes (ablation)",
                          f"{100 * r['kgtransformer']['avg_in']:.1f} with, {100 * r[abl]['avg_in']:.1f} "
                          f"without: {_diff(d)}", verdict(d)))
    sections.append((f"{ds}: test MRR (%) on hard answers, filtered; mean ± sample std over seeds "
                     f"{results['config'].get('seeds')}", table(results, ds)))
    det = results["details"][ds]
    first = det[min((k for k in det if k.startswith("seed")), key=lambda k: int(k[4:]))]
    sections.append((f"{ds}: queries (first seed)", " · ".join(f"{s}: {v}" for s, v in first["queries"].items())))
    metric = results["config"].get("select_metric", "hits3")
    chosen = [f"- {m}: " + ", ".join(f"{t} {s}" for t, s in first[m]["selection"]["chosen"].items()
                                     if t != "*") for m in r]
    for m in r:
      for t, p in first[m].get("per_type", {}).items():
        chosen.append(f"- {m}, {t} after its own fine-tuning (from step {p['from_step']}): step "
                      f"{p['selection']['chosen'][t]} of it; test MRR {100 * first[m]['test'][t]['mrr']:.1f} "
                      f"(multi-task choice {100 * first[m]['test_multitask'][t]['mrr']:.1f})")
    sections.append((f"{ds}: steps chosen on validation {metric}, per type (first seed)", "\n".join(chosen)))
    series = []
    for model in r:
      for stage, info in first[model]["train"].items():
        h = info["history"]
        if h and model in ("kgtransformer", "gqe", "q2b", "betae"):
          series.append((f"{model} {stage}", list(range(1, len(h) + 1)), h))
    if series:
      png = plot_curves(wd, f"{ds}_loss.png", series, xlabel="step", ylabel="training loss")
      plots.append((png, f"{ds}: training loss per stage (first seed)"))
    timing = "\n".join(f"- {m}: " + ", ".join(f"{s} {info['seconds']:.0f} s ({1e3 * info['step_time']:.0f} ms/step)"
                                              for s, info in first[m]["train"].items())
                       + f"; evaluation {first[m]['eval_seconds']:.0f} s" for m in r)
    sections.append((f"{ds}: training time (first seed)", timing))
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
      sections.append((f"{ds}: reasoning paths (kgTransformer, first seed, test queries)", "\n".join(ex)))
  rep = Report(title="kgTransformer on BetaE query types (arXiv 2208.07638)", command=command,
               rows=rows, plots=plots, sections=sections)
  path = write_report(wd, rep, results)
  log.info("report: %s", path)
  return path
