"""REPORT.md and results.json of `gact/memory`: per family the paper's claims (activation memory,
executed batch, loss, adaptive bits) and every level's row, named by the paper's level; the
checkpointed rows (`ckpt`, `*_ckpt`) are compared with `ckpt`, the others with L0."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxpapers.core.report import Report, Row, fmt, plot_curves, write_report

MiB = lambda b: f"{b / 2**20:.1f} MiB"
PAPER = {"memory": "up to 8.1x (L2.2 vs L0, §6)", "batch": "4.2x-24.7x (§6 Fig. 6)",
         "loss": "within 0.5 points (§6 Table 3)", "variance": "< 1 (§4.3: adaptive bits lower "
         "the gradient variance at equal bits)"}


def _rows(fam: str, r: dict, c) -> list[Row]:
  lv, rows = r["levels"], []
  F = fam.upper() if fam != "transformer" else "Transformer"
  if r.get("memory_ratio_L2.2") is not None:
    x = lv["L2.2"]
    rows.append(Row(f"{F}: activation memory L0 / L2.2 (no checkpointing)", PAPER["memory"],
                    f"{r['memory_ratio_L2.2']:.2f}x",
                    "reproduced" if r["memory_ratio_L2.2"] >= 6 else "not reproduced",
                    f"XLA temp bytes of the train step, {2 * c[fam].memory_batch} minus "
                    f"{c[fam].memory_batch} samples: L0 {MiB(lv['L0']['act_bytes'])}, L2.2 "
                    f"{MiB(x['act_bytes'])} (average {x['avg_bits']:.2f} bits over "
                    f"{len(x['unit_sizes'])} saved tensors); bar: 6x"))
  if r.get("memory_ratio_L2.2_ckpt") is not None:
    rows.append(Row(f"{F}: activation memory ckpt / L2.2_ckpt (both checkpointed)",
                    "no figure (the official text benchmarks compare L1_ckpt with ckpt)",
                    f"{r['memory_ratio_L2.2_ckpt']:.2f}x", "n/a",
                    f"ckpt {MiB(lv['ckpt']['act_bytes'])}, L2.2_ckpt {MiB(lv['L2.2_ckpt']['act_bytes'])}: "
                    "each block keeps its (compressed) input and recomputes itself"))
  if "L2.2" in lv and "L0" in lv:
    a, b = lv["L0"], lv["L2.2"]
    if r.get("max_batch_ratio_L2.2") is not None:
      rows.append(Row(f"{F}: largest batch that ran, L2.2 / L0", PAPER["batch"],
                      f"{r['max_batch_ratio_L2.2']:.2f}x",
                      "reproduced" if r["max_batch_ratio_L2.2"] >= 4 else "not reproduced",
                      f"{a['max_batch']} vs {b['max_batch']} samples, the largest whose compiled "
                      f"step fits L0's temp bytes at batch {c[fam].budget_batch} (searched to "
                      f"{100 * c.batch_search.tol:.0f}%) "
                      f"({MiB(a['budget_bytes'])}), each run {c.executed_steps} steps in a child "
                      f"process; the CPU sets no cap: peak RSS (compilation included) "
                      f"{MiB(a['executed']['peak_rss_bytes'])} vs {MiB(b['executed']['peak_rss_bytes'])}"))
    elif a["max_batch_compiled"] and b["max_batch_compiled"]:
      rows.append(Row(f"{F}: largest batch that ran, L2.2 / L0", PAPER["batch"], "not run", "n/a",
                      f"compiled search only: {a['max_batch_compiled']} vs {b['max_batch_compiled']}"))
    if r.get("loss_delta_L2.2") is not None:
      d, sp = r["loss_delta_L2.2"], r.get("loss_seed_spread_L0")
      ok = abs(d) <= 0.01 or (sp is not None and abs(d) <= sp)
      per = ", ".join(f"{100 * v:+.2f}%" for v in r["loss_delta_L2.2_per_seed"])
      # the paper's bar is accuracy within 0.5 points: where the family has an accuracy, the
      # loss criterion (the issue's: within L0's seed spread or 1%) reproduces it only with it
      acc = [100 * (b["acc"] - a["acc"]) for a, b in zip(r["seeds"]["L0"], r["seeds"]["L2.2"])
             if a.get("acc") is not None and b.get("acc") is not None]
      acc_ok = not acc or float(np.mean(acc)) >= -0.5
      note = ("; accuracy per seed " + ", ".join(f"{v:+.2f}" for v in acc) + " points"
              if acc else "")
      rows.append(Row(f"{F}: held-out loss, L2.2 vs L0 (paired by seed)", PAPER["loss"],
                      f"{100 * d:+.2f}%",
                      ("reproduced" if acc_ok else "in part") if ok else "not reproduced",
                      f"per seed {per}; L0's seed spread (sample std / mean) "
                      f"{'n/a' if sp is None else f'{100 * sp:.2f}%'}; std of the paired "
                      f"differences {_std(r['loss_delta_L2.2_per_seed'])}{note}; equal steps"))
    if r.get("step_time_ratio_L2.2") is not None:
      rows.append(Row(f"{F}: step time L2.2 / L0", "overhead reported per model (§6)",
                      f"{r['step_time_ratio_L2.2']:.2f}x", "n/a", "median step, same process, CPU"))
  if r.get("adaptive_variance_ratio") is not None:
    x = lv["L2.2"]
    rows.append(Row(f"{F}: gradient variance, adaptive L2.2 / uniform 2 bits", PAPER["variance"],
                    f"{r['adaptive_variance_ratio']:.3f}",
                    "reproduced" if r["adaptive_variance_ratio"] < 1 else "not reproduced",
                    f"{fmt(x['variance_adaptive'])} vs {fmt(x['variance_uniform'])}, "
                    f"{c.variance_seeds} roundings on the probe batch, trained model"))
  return rows


def _std(xs) -> str:
  return f"{100 * float(np.std(xs, ddof=1)):.2f}%" if len(xs) > 1 else "n/a"


def _acc(ho: dict) -> str:
  return f"{100 * ho['acc']:.1f}%" if "acc" in ho else ""


def _bits(x: dict) -> str:
  return "32 (FP32)" if x["avg_bits"] is None else f"{x['avg_bits']:.2f}"


def _table(fam: str, r: dict) -> str:
  t = ["| level | checkpointed | held-out loss | accuracy | activation memory | vs reference | "
       "max batch (ran) | step time | average bits |", "|---|---|---|---|---|---|---|---|---|"]
  for name, x in r["levels"].items():
    ho = x["held_out"]
    loss = "not trained" if ho is None else f"{ho['loss']:.4f}"
    acc = "" if ho is None else _acc(ho)
    batch = ("not searched" if x["max_batch_compiled"] is None else
             f"{x['max_batch'] or 'not run'} (compiled: {x['max_batch_compiled']})")
    step = "n/a" if x["step_time"] is None else f"{1e3 * x['step_time']:.0f} ms"
    t.append(f"| {name} | {'yes' if name.endswith('ckpt') else 'no'} | {loss} | {acc} | "
             f"{MiB(x['act_bytes'])} | {x.get('memory_ratio', 1.0):.2f}x | {batch} | {step} | "
             f"{_bits(x)} |")
  return "\n".join(t)


def write(wd: Path, command: str, c, results: dict) -> None:
  rows, sections, plots = [], [], []
  for fam, r in results.items():
    rows += _rows(fam, r, c)
    sections.append((f"{fam}: {r['what']} (reference: L0; for *_ckpt rows: ckpt)", _table(fam, r)))
    x = r["levels"].get("L2.2")
    if x and x["allocations"]:
      a = x["allocations"][-1]
      plots.append((plot_curves(wd, f"{fam}_bits_L2.2.png",
                                [("bits", list(range(len(a["bits"]))), a["bits"]),
                                 ("log10 C_l", list(range(len(a["sensitivity"]))),
                                  [float(np.log10(max(s, 1e-30))) for s in a["sensitivity"]])],
                                xlabel="saved tensor (forward order)", ylabel="bits / log10 C"),
                    f"{fam} L2.2: bits per saved tensor chosen at step {a['step']}, and GACT's sensitivity"))
    series = [(n, list(range(len(x["losses"]))), x["losses"]) for n, x in r["levels"].items()
              if x["losses"]]
    plots.append((plot_curves(wd, f"{fam}_loss.png", series, ylabel="train loss (nats)"),
                  f"{fam}: train loss per level (seed {c.seed})"))
  rep = Report(title="GACT activation-compressed training (arXiv 2206.11357)", command=command,
               rows=rows, plots=plots, sections=sections)
  write_report(wd, rep, results)
