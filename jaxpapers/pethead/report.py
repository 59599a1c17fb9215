"""REPORT.md of pethead/suite: tasks x methods (mean ± std over seeds), the paper's RoBERTa-large
averages beside, paired EH-FT - FT differences, and the feature shift of Fig. 1."""
from __future__ import annotations

from pathlib import Path

from jaxpapers.core.report import Report, Row, write_report
from jaxpapers.core.stats import verdict

# the paper's Table 1 averages (RoBERTa-large, nine GLUE/SuperGLUE dev sets), from the released
# code's results table (Efficient-Head-Finetuning, EH-FT/exp/exp1/README.md). Other tasks, another
# encoder: only the direction and size of EH-FT - FT compare, never the accuracies themselves.
PAPER_AVG = {"ft": 86.96, "ehft_bitfit": 87.86, "ehft_lora": 87.85}
PAPER_GAIN = {m: PAPER_AVG[m] - PAPER_AVG["ft"] for m in ("ehft_bitfit", "ehft_lora")}


def _cell(d: dict) -> str:
  return f"{d['mean']:.1f}" + (f" ± {d['std']:.1f}" if d.get("std") is not None else "")


def table(results: dict, key: str = "accuracy") -> str:
  tasks = results["tasks"]
  methods = [m for m in results if isinstance(results[m], dict) and "detail" in results[m]]
  lines = ["| method | " + " | ".join(tasks) + " | avg |", "|---" * (len(tasks) + 2) + "|"]
  for m in methods:
    r = results[m]
    avg = f"{r['avg']:.1f}" + (f" ± {r['avg_std']:.1f}" if r.get("avg_std") is not None else "")
    if key != "accuracy":
      vals = [r["detail"][t][key]["mean"] for t in tasks]
      avg = f"{sum(vals) / len(vals):.1f}"
    lines.append(f"| {m} | " + " | ".join(_cell(r["detail"][t][key]) for t in tasks) + f" | {avg} |")
  return "\n".join(lines)


def write(wd: Path, c, results: dict, per_task: dict) -> Path:
  rows = []
  paired = results.get("paired_vs_ft", {})
  for m in ("ehft_lora", "ehft_bitfit", "ehft_prefix", "lpft"):
    if m in paired:
      d = paired[m]["avg"]
      lo_hi = (f"; 95% CI [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}], seeds "
               + ", ".join(f"{v:+.1f}" for v in d["values"]) if d["n"] > 1 else "")
      paper = (f"{PAPER_GAIN[m]:+.2f} pts (the release's table: RoBERTa-large, 9 GLUE/SuperGLUE "
               "dev sets, best dev score)"
               if m in PAPER_GAIN else "not in the released table")
      rows.append(Row(f"{m} - ft, task-average test accuracy (paired by seed)", paper,
                      f"{d['mean']:+.2f} pts{lo_hi}", verdict(d),
                      f"{len(results['tasks'])} tasks, {d['n']} seed(s)"))
  fs = results.get("feature_shift", {})
  if "ft" in fs and "ehft_lora" in fs:
    d = results["feature_shift_vs_ft"]["ehft_lora"]
    ci = f"; paired 95% CI [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]" if d["n"] > 1 else ""
    rows.append(Row("feature shift, EH-FT(LoRA) vs FT: L2 of the final-layer [CLS] features of the "
                    "train set, relative to their norm", "smaller for EH-FT (Fig. 1)",
                    f"{fs['ehft_lora']['relative']:.3f} vs {fs['ft']['relative']:.3f}{ci}",
                    verdict(d, smaller_is_claim=True),
                    f"task-average per seed, {d['n']} seed(s)"))
  sections = [
      ("Test accuracy (%), mean ± std over seeds", table(results) + "\n\n" + results["score"]),
      ("Macro-F1 (%)", table(results, "macro_f1")),
      ("Final-step test accuracy (%)", table(results, "final_accuracy")),
      ("Paired differences to FT (pts of task-average accuracy)",
       "\n".join(f"- {m}: {_cell(d['avg'])} (per seed {', '.join(f'{v:+.1f}' for v in d['avg']['values'])})"
                 for m, d in paired.items()) or "(FT not run)"),
      ("Feature shift", "\n".join(f"- {m}: L2 {v['l2']:.3f} (relative {v['relative']:.3f}); per task "
                                  + ", ".join(f"{t} {x:.2f}" for t, x in v["per_task"].items())
                                  for m, v in fs.items())),
      ("Setup", f"tasks {results['tasks']}, {results['seeds']} seed(s), split sizes "
                f"{results['split_sizes']}; full fine-tuning lr per task {results['full_lr']} "
                f"(dev search {results['lr_search']}); truncated inputs per task and seed "
                f"{results['truncated']}; trained parameters per stage "
                + ", ".join(f"{m} {results[m]['trained_params']}" for m in c.methods)),
  ]
  report = Report(title="PET head (EH-FT): parameter-efficient tuning makes a good classification head",
                  command=results["command"], rows=rows, sections=sections)
  return write_report(wd, report, results)
