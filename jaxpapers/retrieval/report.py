"""REPORT.md of retrieval/transfer: nDCG@10 per setting and mode (mean ± std over seeds), the
paper's claims beside the paired PT - FT differences, recall@100, MRR@10 and calibration."""
from __future__ import annotations

from pathlib import Path

from jaxpapers.core.report import Report, Row, write_report
from jaxpapers.core.stats import verdict

# The paper's figures (arXiv 2207.07087, as its abstract and tables state them): DPR on BERT-base,
# FT vs P-tuning v2. Other data, another encoder: only directions and sizes of PT - FT compare.
PAPER = {
    "in_domain": "PT ~ FT in domain: top-20 accuracy 80.6 vs 80.6 (DPR, NQ-style OpenQA)",
    "ood": "PT > FT out of domain: BEIR nDCG@10 Quora 24.8 -> 50.9, SciFact 31.8 -> 43.6 (FT -> PT);"
           " gains across OAG-QA topics",
    "ece": "PT better calibrated than FT (lower ECE of the top-5 softmax)",
}


def _cell(d: dict, scale: float = 100.0) -> str:
  return f"{scale * d['mean']:.1f}" + (f" ± {scale * d['std']:.1f}" if d.get("std") is not None
                                       else "")


def _ci(d: dict, scale: float = 100.0) -> str:
  if d["n"] < 2:
    return f"{scale * d['mean']:+.2f} (one seed)"
  lo, hi = d["ci95"]
  return (f"{scale * d['mean']:+.2f} (95% CI [{scale * lo:+.2f}, {scale * hi:+.2f}]; seeds "
          + ", ".join(f"{scale * v:+.1f}" for v in d["values"]) + ")")


def within(d: dict, margin: float) -> str:
  """Whether a paired difference (in the metric's units) is no worse than -margin, from its 95%
  interval."""
  lo, hi = d["ci95"]
  return ("reproduced" if lo > -margin else "not reproduced" if hi < -margin
          else "not established")


def sign(d: dict, smaller_is_claim: bool = False) -> str:
  """The claim's sign from a 95% interval (over seeds, or a query bootstrap, which has no n)."""
  return verdict(d if "n" in d else dict(d, n=2), smaller_is_claim)


def _boot(d: dict) -> str:
  lo, hi = d["ci95"]
  return (f"{100 * d['mean']:+.2f} (95% CI over {d['queries']} queries of {d['seeds']} seed(s) "
          f"[{100 * lo:+.2f}, {100 * hi:+.2f}])")


def _both(p: dict, s: str) -> str:
  return f"{_boot(p['ndcg10_query_bootstrap'][s])}; over seeds {_ci(p['ndcg10'][s])}"


def table(results: dict, key: str, scale: float = 100.0) -> str:
  settings = results["settings"] + (["ood_avg"] if results["out_of_domain"] else [])
  lines = ["| mode | " + " | ".join(settings) + " |", "|---" * (len(settings) + 1) + "|"]
  for m in results["modes"]:
    cells = [_cell(results["detail"][m][s][key], scale) if s in results["detail"][m]
             else f"{scale * results[key][m][s]:.1f}" for s in settings]
    lines.append(f"| {m} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def write(wd: Path, c, results: dict) -> Path:
  rows = []
  paired = results["paired"]
  if "pt_minus_ft" in paired:
    p = paired["pt_minus_ft"]
    boot = p["ndcg10_query_bootstrap"]
    rows.append(Row("PT - FT, in-domain nDCG@10 (x100, paired per query)", PAPER["in_domain"],
                    _both(p, "in_domain"), within(boot["in_domain"], 0.01),
                    "claim: PT within 1 point of FT; verdict from the query interval"))
    if "ood_avg" in p["ndcg10"]:
      rows.append(Row("PT - FT, nDCG@10 averaged over " + ", ".join(results["out_of_domain"]),
                      PAPER["ood"], _both(p, "ood_avg"), sign(boot["ood_avg"]),
                      "claim: PT above FT; verdict from the query interval"))
      for s in results["out_of_domain"]:
        rows.append(Row(f"PT - FT, {s} nDCG@10", "PT > FT", _both(p, s), sign(boot[s]), ""))
    rows.append(Row("PT - FT, ECE (top-5 softmax, 10 bins) averaged over settings", PAPER["ece"],
                    _ci(p["ece_avg"]), sign(p["ece_avg"], smaller_is_claim=True),
                    f"claim: PT lower; scores are {c.model.score}"
                    + (f" x {c.model.scale:g} (a fixed scale, not learned)" if c.model.score == "cos"
                       else "") + "; verdict over seeds"))
  if "pt_param_fraction" in results:
    rows.append(Row("tuned parameters, PT", "0.1% (BERT-base)",
                    f"{100 * results['pt_param_fraction']:.2f}% "
                    f"({results['trained_params']['pt']:,} of the dual encoder)", "n/a",
                    f"prompt length {c.model.prefix_len} x {2} (keys, values) x layers x hidden, "
                    f"{c.model.towers} towers"))
  sizes = results["sizes"]
  sections = [
      ("nDCG@10 (x100), mean ± std over seeds", table(results, "ndcg10")),
      ("Recall@100 (x100)", table(results, "recall100")),
      ("MRR@10 (x100)", table(results, "mrr10")),
      ("ECE (x100; top-5 softmax of each mode's own scores, 10 uniform bins, every (query, "
       "document) pair)", table(results, "ece")),
      ("Paired differences to FT (nDCG@10 x100; over queries, seeds pooled, then over seeds)",
       "\n".join(f"- {name}: " + "; ".join(f"{s} {_both(v, s)}" for s in v["ndcg10"])
                 for name, v in paired.items()) or "(FT not run)"),
      ("Setup",
       f"{results['seeds']} seed(s); learning rates {results['lr']} (dev nDCG@10 of the grid on "
       f"the tuning seed: {results['lr_search']}); final training loss "
       + ", ".join(f"{m} {v['mean']:.3f}" for m, v in results["final_train_loss"].items())
       + "; collection sizes " + ", ".join(f"{s} {v['queries']} queries / {v['docs']} docs"
                                           for s, v in sizes.items())
       + "; truncated documents per seed " + ", ".join(f"{s} {v['docs']}"
                                                       for s, v in results["truncated"].items())
       + (f"; BEIR loading dropped {results['dropped']}" if results["dropped"] else "")),
  ]
  report = Report(title="Prompt-tuned dense retrievers: P-tuning v2 vs fine-tuning, in and out of "
                        "domain (WordNet-trained MiniLM dual encoder)",
                  command=results["command"], rows=rows, sections=sections)
  return write_report(wd, report, results)
