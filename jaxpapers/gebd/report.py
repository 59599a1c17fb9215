"""REPORT.md of gebd/ladder: the ladder against the paper's Table 1, every model with and without
alignment, the paired step differences, the F1-threshold curve, and frame strips of test videos
with the raters' and the best pipeline's boundaries."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxpapers.core.report import Report, Row, plot_curves, write_report
from jaxpapers.core.stats import verdict
from jaxpapers.core.workdir import atomic_path
from jaxpapers.gebd.boundaries import SECTION

LADDER_ROW = dict(baseline="baseline", soft="soft", pseudo="pseudo", align="pseudo+align",
                  mae="mae+align", ensemble="ensemble+align")
WHAT = dict(baseline="BoundaryNet, hard targets", soft="+ soft targets",
            pseudo="+ pseudo-labelled pool", align="+ segmentation alignment",
            mae="video MAE (pre-trained), + pool, aligned",
            ensemble="0.77 x base models + 0.23 x MAE, aligned")


def _cell(d: dict) -> str:
  s = f"{100 * d['mean']:.2f}"
  return s + (f" ± {100 * d['std']:.2f}" if d.get("std") is not None else "")


AGAINST = dict(soft="baseline", pseudo="soft", align="pseudo", mae="align", ensemble="align")


def ladder_table(results: dict) -> str:
  lines = ["| step | what | paper F1 (Kinetics-GEBD val) | ours F1 x100 (test, mean ± sd) | per seed | "
           "paired change (against) |", "|---|---|---|---|---|---|"]
  for step in LADDER_ROW:
    st = results["f1_stats"][step]
    ch = results["steps_paired"].get(f"{step}-{AGAINST.get(step)}")
    ch = "" if not ch else (f"{100 * ch['mean']:+.2f}" + (f" ± {100 * ch['std']:.2f}" if ch.get("std") is not None else "")
                            + f" (vs {AGAINST[step]})")
    per = ", ".join(f"{100 * x:.2f}" for x in results["f1_per_seed"][step])
    lines.append(f"| {step} | {WHAT[step]} | {results['paper_f1'][step]:.2f} | {_cell(st)} | {per} | {ch} |")
  for k, v in results.get("f1_extra", {}).items():
    ch = results["steps_paired"][f"mae-{k}"]
    lines.append(f"| ({k}) | ours: the MAE architecture without pre-training, aligned | – | {_cell(v)} | | "
                 f"mae - {k}: {100 * ch['mean']:+.2f} |")
  return "\n".join(lines)


def rows_table(results: dict) -> str:
  lines = ["| model / pipeline | F1 | precision | recall |", "|---|---|---|---|"]
  for r, d in results["rows"].items():
    lines.append(f"| {r} | {_cell(d['f1'])} | {_cell(d['precision'])} | {_cell(d['recall'])} |")
  return "\n".join(lines)


def frame_strips(wd: Path, seed_out: dict, row: str, n_videos: int = 4) -> str:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  bench = seed_out["_bench"]["test"]
  preds = seed_out["rows"][row]["_preds"]
  rng = np.random.default_rng(0)
  ok = [i for i, v in enumerate(bench.videos.values()) if v.f1_consis_avg >= 0.3]
  pick = sorted(rng.choice(ok, size=min(n_videos, len(ok)), replace=False))
  fig, axes = plt.subplots(2 * len(pick), 1, figsize=(12, 2.1 * len(pick)), dpi=100,
                           gridspec_kw=dict(height_ratios=[2, 1.4] * len(pick)))
  for k, i in enumerate(pick):
    vid = bench.ids[i]
    v = bench.videos[vid]
    strip = np.concatenate(list(bench.frames[i][:v.num_frames:2]), axis=1)
    ax = axes[2 * k]
    ax.imshow(strip, extent=(0, 2 * SECTION * ((v.num_frames + 1) // 2), 0, 1), aspect="auto")
    ax.set_xlim(0, v.duration)
    ax.set_yticks([])
    ax.set_title(f"{vid}: every 2nd frame; events " +
                 ", ".join(f"{t:.2f}s {kd}" for t, kd in bench.events[i]), fontsize=7, loc="left")
    ax.set_xticks([])
    ax = axes[2 * k + 1]
    for r, times in enumerate(v.raters):
      ax.plot(times, [r] * len(times), "|", color="tab:blue", ms=8)
    ax.plot(preds[vid], [len(v.raters) + 0.5] * len(preds[vid]), "v", color="tab:red", ms=7)
    ax.set_xlim(0, v.duration)
    ax.set_ylim(-0.7, len(v.raters) + 1.2)
    ax.set_yticks(list(range(len(v.raters))) + [len(v.raters) + 0.5],
                  [f"rater {r}" for r in range(len(v.raters))] + [row], fontsize=6)
    ax.tick_params(axis="x", labelsize=7)
  axes[-1].set_xlabel("seconds")
  fig.tight_layout()
  png = "test_videos.png"
  with atomic_path(wd / png) as tmp:
    fig.savefig(tmp)
  plt.close(fig)
  return png


def write(wd: Path, c, results: dict, per_seed: list[dict]) -> Path:
  best = results["best"]
  rep = Report(title="MAE-GEBD ladder on generated GEBD videos (Kinetics-GEBD F1 protocol)",
               command=results["command"])
  for step in LADDER_ROW:
    paper = results["paper_f1"][step]
    rep.rows.append(Row(f"F1@0.05 {step}", f"{paper:.2f}", _cell(results["f1_stats"][step]),
                        "n/a", "different videos (generated, not Kinetics): levels are not comparable; "
                        "see the step changes"))
  paper = results["paper_f1"]
  for pair, d in results["steps_paired"].items():   # the ladder's claims are its changes
    b, _, a = pair.partition("-")
    if b not in paper or a not in paper:
      continue
    ci = (f" [{100 * d['ci95'][0]:+.2f}, {100 * d['ci95'][1]:+.2f}]" if "ci95" in d else "")
    claim = ("level with it (MAE single model vs the aligned base)" if b == "mae" else
             "a gain")
    rep.rows.append(Row(f"F1@0.05 change {b} - {a}", f"{paper[b] - paper[a]:+.2f} ({claim})",
                        f"{100 * d['mean']:+.2f}{ci} over {d['n']} seeds, paired",
                        verdict(d), "95% t-interval of the paired change; the claimed sign is a "
                        "gain (for MAE: not below the aligned base)"))
  helped = []
  for step_pair, d in results["steps_paired"].items():
    ci = (f", 95% interval [{100 * d['ci95'][0]:+.2f}, {100 * d['ci95'][1]:+.2f}]" if "ci95" in d else "")
    helped.append(f"- {step_pair}: {100 * d['mean']:+.2f} F1 points" +
                  (f" ± {100 * d['std']:.2f} (sample sd over {d['n']} seeds{ci})" if d.get("std") is not None else
                   " (one seed)") + "; per seed " + ", ".join(f"{100 * x:+.2f}" for x in d["per_seed"]))
  b0 = per_seed[0]["benchmark"]
  rep.sections += [
      ("The ladder", ladder_table(results) + "\n\nThe paper's numbers are Kinetics-GEBD validation "
       "F1 (its Table 1; the MAE row is a single model, the ensemble row is its 20 base + 4 MAE "
       "models); ours are the same protocol on the generated benchmark's test split."),
      ("Paired changes (same videos and raters per seed; the three base steps share their "
       "initialisation, baseline and soft also their batches)", "\n".join(helped)),
      ("Every model, with and without alignment (test, mean ± sd over seeds)", rows_table(results)),
      ("Benchmark (seed %d)" % c.seed, "\n".join(f"- {k}: {v:.3f}" if isinstance(v, float) else f"- {k}: {v}"
                                                   for k, v in b0.items()) +
       f"\n- pseudo labels: {per_seed[0]['pseudo_labels']}"),
      ("Training (seed %d)" % c.seed, "\n".join(
          f"- {k}: best validation F1 {v.get('best_val_f1', float('nan')):.4f} at step {v.get('best_step')}, "
          f"final loss {v['final_loss']:.4f}, {v['seconds']:.0f} s" for k, v in per_seed[0]["train"].items())),
  ]
  curve = results["f1_curve"]
  xs = [float(t) for t in curve]
  plot_curves(wd, "f1_curve.png", [(LADDER_ROW[best], xs, list(curve.values()))],
              xlabel="relative distance threshold", ylabel="F1")
  rep.plots.append(("f1_curve.png", f"F1 against the protocol's threshold for the step best on "
                                    f"validation ({best}), test, mean over seeds"))
  rep.plots.append((frame_strips(wd, per_seed[0], LADDER_ROW[best]),
                    f"Test videos (seed {c.seed}): frames, each rater's boundaries (blue) and "
                    f"{LADDER_ROW[best]}'s (red)"))
  return write_report(wd, rep, results)
