"""REPORT.md of mooc/pretrain: per task, every method's test metrics (mean ± sample std over
seeds), the paired pre-trained - scratch difference with per-seed bootstrap intervals, the
simulator's statistics, the pre-training loss curve and the knowledge-tracing file comparison."""
from __future__ import annotations

from pathlib import Path

from jaxpapers.core.metrics import read_metrics
from jaxpapers.core.report import Report, Row, plot_curves, write_report

TASK_TITLES = {"recommendation": "Learning recommendation (next video, ranked against every video)",
               "knowledge_tracing": "Knowledge tracing (next answer)",
               "dropout": "Dropout prediction (after the first observed tokens)",
               "resource": "Learning-resource evaluation (video quality, frozen features + ridge)"}


def cell(d: dict, digits: int = 3) -> str:
  if d["mean"] != d["mean"]:
    return "–"
  return f"{d['mean']:.{digits}f}" + (f" ± {d['std']:.{digits}f}" if d.get("std") is not None else "")


def task_table(t: dict) -> str:
  methods = [m for m in t if m != "pretrained_minus_scratch"]
  keys = list(t[methods[0]])
  lines = ["| method | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
  lines += [f"| {m} | " + " | ".join(cell(t[m][k]) for k in keys) + " |" for m in methods]
  return "\n".join(lines)


def diff_text(d: dict) -> str:
  per = ", ".join(f"{x:+.3f} [{lo:+.3f}, {hi:+.3f}]" for x, (lo, hi) in
                  zip(d["per_seed"], d["bootstrap95"]))
  return (f"{d['metric']}: mean {d['mean']:+.3f}" + (f" ± {d['std']:.3f}" if d.get("std") else "")
          + f" over {d['n']} seeds; per seed (bootstrap 95% over test students/videos): {per}")


def verdict(d: dict, lower_is_better: bool) -> str:
  """From the per-seed bootstrap intervals of pre-trained - scratch, oriented so that > 0 favours
  pre-training: `helps` / `hurts` when every seed's interval is on one side of 0, `helps (k of n
  seeds)` / `hurts (k of n seeds)` when only that side's intervals exclude 0, else `no clear
  difference`."""
  ivs = [(-hi, -lo) if lower_is_better else (lo, hi) for lo, hi in d["bootstrap95"]]
  up, down, n = sum(lo > 0 for lo, _ in ivs), sum(hi < 0 for _, hi in ivs), len(ivs)
  if up == n:
    return "helps (every seed's interval above 0)"
  if down == n:
    return "hurts (every seed's interval below 0)"
  if up and not down:
    return f"helps on {up} of {n} seeds (the others' intervals hold 0)"
  if down and not up:
    return f"hurts on {down} of {n} seeds (the others' intervals hold 0)"
  return "no clear difference"


def write(wd: Path, c, results: dict, per_seed: list[dict]) -> Path:
  rows, sections, plots = [], [], []
  for task in ("recommendation", "knowledge_tracing", "dropout", "resource"):
    d = results[task]["pretrained_minus_scratch"]
    low = d["metric"] == "mae"
    rows.append(Row(f"{task}: pre-trained vs scratch ({d['metric']})",
                    "pre-trained information \"can be shared across downstream tasks to facilitate "
                    "effectiveness\" (abstract; the body's numbers were not available to us)",
                    f"{d['mean']:+.3f}", verdict(d, low), diff_text(d)))
    sections.append((TASK_TITLES[task], task_table({k: v for k, v in results[task].items()})
                     + "\n\n" + diff_text(d)))
  sim = per_seed[0]["simulation"]
  sections.append(("Simulated data (first seed)", "\n".join(
      f"- {k}: {v:.3g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in sim.items())))
  if "knowledge_tracing_file" in results:
    f = results["knowledge_tracing_file"]
    lines = [f"File `{f['file']}` ({f['format']}): {f['students']} students with >= 2 answers, "
             f"{f['questions']} questions, {f['answers']} answers, of which each student's first "
             f"{f['max_len']} are used ({f['answers_kept']}); {f['dropped_rows']} rows without a "
             "skill dropped.",
             "", "| method | test AUC |", "|---|---|"]
    lines += [f"| {m} | {cell(f[m]['auc'])} |" for m in ("pretrained", "scratch", "dkt", "sakt")]
    sections.append(("Knowledge tracing on a file", "\n".join(lines)))
  series = []
  for k, s in enumerate(per_seed):
    rows_ = [r for r in read_metrics(wd / f"seed{c.seed + k}" / "pretrain") if "loss" in r]
    if rows_:
      series.append((f"seed {c.seed + k}", [r["step"] for r in rows_], [r["loss"] for r in rows_]))
  if series:
    plots.append((plot_curves(wd, "pretrain_loss.png", series, ylabel="masked-behaviour loss"),
                  "pre-training loss (item + response cross-entropy at masked tokens)"))
  report = Report(title="Pre-training for adaptive learning in MOOCs (arXiv 2208.04708), simulated",
                  command=results["command"], rows=rows, plots=plots, sections=sections)
  return write_report(wd, report, results)
