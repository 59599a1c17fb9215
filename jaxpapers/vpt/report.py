"""REPORT.md of vpt/pipeline: VPT's claims beside what was measured, success per achievement and
policy, the IDM's data-scaling curve and confusion, and GIFs of episodes."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from jaxpapers.core.report import Report, Row, plot_curves, write_report
from jaxpapers.vpt import env as E

log = logging.getLogger("jaxpapers")


def save_gif(path: Path, frames: np.ndarray, alive: np.ndarray, scale: int = 4, fps: int = 8) -> None:
  """frames [T+1, H, W, 3] uint8 of one episode (cut where it ended), upscaled for viewing."""
  import imageio.v2 as imageio  # noqa: PLC0415 (installed with craftax)
  n = int(alive.sum()) + 1
  big = np.repeat(np.repeat(frames[:n], scale, axis=1), scale, axis=2)
  imageio.mimsave(path, list(big), duration=1.0 / fps, loop=0)


def achievement_table(results: dict) -> str:
  pols = list(results["success"])
  shown = [a for a in E.ACHIEVEMENT_NAMES
           if max([results["success"][p][a] for p in pols] + [results["demonstrator"]["per_achievement"][a]]) > 0]
  lines = ["| achievement | demonstrator | " + " | ".join(pols) + " |", "|---" * (len(pols) + 2) + "|"]
  for a in shown:
    lines.append(f"| {a} | {100 * results['demonstrator']['per_achievement'][a]:.0f}% | "
                 + " | ".join(f"{100 * results['success'][p][a]:.0f}%" for p in pols) + " |")
  lines.append(f"| **score** (achievements per episode) | {results['demonstrator']['score']:.2f} | "
               + " | ".join(f"{results['score'][p]:.2f} ± {results['score_std'][p]:.2f}" for p in pols) + " |")
  lines.append(f"| return | {results['demonstrator']['return']:.2f} | "
               + " | ".join(f"{results['return'][p]:.2f}" for p in pols) + " |")
  return "\n".join(lines)


def confusion_table(idm: dict) -> str:
  conf = np.array(idm["confusion"])
  used = [i for i in range(len(E.ACTION_NAMES)) if conf[i].sum() or conf[:, i].sum()]
  names = [E.ACTION_NAMES[i] for i in used]
  lines = ["| true \\ predicted | " + " | ".join(names) + " | accuracy |", "|---" * (len(used) + 2) + "|"]
  for i in used:
    acc = conf[i, i] / conf[i].sum() if conf[i].sum() else float("nan")
    lines.append(f"| {E.ACTION_NAMES[i]} | " + " | ".join(str(conf[i, j]) for j in used) + f" | {100 * acc:.1f}% |")
  return "\n".join(lines)


def write(wd: Path, command: str, c, results: dict, rollouts: dict) -> Path:
  s = results["score"]
  ratio = results["bc_idm_over_bc_true"]
  n_seeds = len(results["seeds"])
  std = results["score_std"]
  learned = s["bc_true"] > s["random"] + std["bc_true"] + std["random"]   # the upper bound learned something
  rows = [
      Row("IDM accuracy on held-out non-noop actions", "90.6% (keypresses, Minecraft)",
          f"{100 * results['idm_accuracy']:.1f}%", "reproduced" if results["idm_accuracy"] >= 0.9 else "not reproduced",
          f"{results['data']['labelled_steps']} labelled steps"),
      Row("BC on IDM labels vs BC on true labels (score)", ">= 80% (issue); VPT: IDM labels suffice",
          f"{s['bc_idm']:.2f} vs {s['bc_true']:.2f} = {100 * ratio:.0f}%",
          ("not measurable" if not learned else "reproduced" if ratio >= 0.8 else "not reproduced"),
          f"{n_seeds} seeds" + ("" if learned else "; BC on true labels does not beat the random policy, "
                                "so the ratio says nothing")),
      Row("BC on IDM labels beats BC on the small labelled set", "yes (the point of VPT)",
          f"{s['bc_idm']:.2f} vs {s['bc_small']:.2f} ± {results['score_std']['bc_small']:.2f}",
          "reproduced" if s["bc_idm"] > s["bc_small"] + results["score_std"]["bc_small"] + results["score_std"]["bc_idm"]
          else "not reproduced", "clearly = by more than the two seed std devs"),
      Row("BC on IDM labels beats a random policy", "yes", f"{s['bc_idm']:.2f} vs {s['random']:.2f}",
          "reproduced" if s["bc_idm"] > s["random"] else "not reproduced"),
  ]
  sc = results["idm_scaling"]
  plots = [(plot_curves(wd, "idm_scaling.png", [("held-out non-noop accuracy", [x["steps"] for x in sc],
                                                  [x["accuracy_non_noop"] for x in sc])],
                        xlabel="labelled steps (IDM training data)", ylabel="IDM accuracy",
                        hlines=[("VPT 90.6%", 0.906)]),
            "IDM held-out accuracy (non-noop actions) against the labelled-set size")]
  gifs = []
  for name, r in rollouts.items():
    for i in range(min(c.eval.gif_episodes, r.frames.shape[1])):
      png = f"episode_{name}_{i}.gif"
      save_gif(wd / png, r.frames[:, i], r.alive[:, i])
      gifs.append(f"![{name} episode {i}]({png})")
  t = results["timing_seconds"]
  sections = [
      ("Success per achievement (mean over seeds)", achievement_table(results)),
      ("IDM confusion on held-out demonstrations", confusion_table(results["idm"])),
      ("IDM data scaling", "| labelled episodes | labelled steps | non-noop accuracy | accuracy |\n|---|---|---|---|\n"
       + "\n".join(f"| {x['episodes']} | {x['steps']} | {100 * x['accuracy_non_noop']:.1f}% | "
                   f"{100 * x['accuracy']:.1f}% |" for x in sc)),
      ("Pseudo-labels", f"The IDM labelled {results['data']['unlabelled_steps']} unlabelled steps; against the "
       f"hidden true actions they agree on {100 * results['pseudo_labels']['accuracy']:.1f}% "
       f"({100 * results['pseudo_labels']['accuracy_non_noop']:.1f}% of non-noop actions)."),
      ("Episodes (first seed)", " ".join(gifs)),
      ("Time", ", ".join(f"{k} {v:.0f} s" for k, v in t.items())),
  ]
  report = Report(title="VPT in Craftax-Classic: IDM, pseudo-labels and behavioural cloning",
                  command=command, rows=rows, plots=plots, sections=sections)
  return write_report(wd, report, results)
