"""REPORT.md of vpt/pipeline: VPT's claims beside what was measured over replications (paired
differences on shared test worlds), BC validation curves, success per achievement and policy, the
IDM's confusion and data-scaling curve, and GIFs of episodes."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from jaxpapers.core.report import Report, Row, plot_curves, write_report
from jaxpapers.core.stats import verdict
from jaxpapers.core.workdir import atomic_path
from jaxpapers.vpt import env as E

log = logging.getLogger("jaxpapers")


def save_gif(path: Path, frames: np.ndarray, alive: np.ndarray, scale: int = 4, fps: int = 8) -> None:
  """frames [T+1, H, W, 3] uint8 of one episode (cut where it ended), upscaled for viewing."""
  import imageio.v2 as imageio  # noqa: PLC0415 (installed with craftax)
  n = int(alive.sum()) + 1
  big = np.repeat(np.repeat(frames[:n], scale, axis=1), scale, axis=2)
  with atomic_path(path) as tmp:
    imageio.mimsave(tmp, list(big), duration=1.0 / fps, loop=0)


def achievement_table(results: dict) -> str:
  pols = list(results["success"])
  rate = {p: results["success"][p]["per_achievement"] for p in pols}
  demo = results["demonstrator"]["per_achievement"]
  shown = [a for a in E.ACHIEVEMENT_NAMES if max([rate[p][a] for p in pols] + [demo[a]]) > 0]
  lines = ["| achievement | demonstrator (its own worlds, first replication) | " + " | ".join(pols) + " |",
           "|---" * (len(pols) + 2) + "|"]
  for a in shown:
    lines.append(f"| {a} | {100 * demo[a]:.0f}% | " + " | ".join(f"{100 * rate[p][a]:.0f}%" for p in pols) + " |")
  lines.append(f"| **score** (achievements per episode) | {results['demonstrator']['score']:.2f} | "
               + " | ".join(pm(results["success"][p]["score"]) for p in pols) + " |")
  return "\n".join(lines)


def pm(d: dict, digits: int = 2, scale: float = 1.0) -> str:
  """mean ± sample std (the std left out for one replication)."""
  m = f"{scale * d['mean']:.{digits}f}"
  return m if d["std"] is None else f"{m} ± {scale * d['std']:.{digits}f}"


def confusion_table(idm: dict) -> str:
  conf = np.array(idm["confusion"])
  used = [i for i in range(len(E.ACTION_NAMES)) if conf[i].sum() or conf[:, i].sum()]
  names = [E.ACTION_NAMES[i] for i in used]
  lines = ["| true \\ predicted | " + " | ".join(names) + " | accuracy |", "|---" * (len(used) + 2) + "|"]
  for i in used:
    acc = conf[i, i] / conf[i].sum() if conf[i].sum() else float("nan")
    lines.append(f"| {E.ACTION_NAMES[i]} | " + " | ".join(str(conf[i, j]) for j in used) + f" | {100 * acc:.1f}% |")
  return "\n".join(lines)


def paired_table(results: dict) -> str:
  lines = ["| difference of test scores | mean | sample std | standard error | 95% interval | per seed |",
           "|---|---|---|---|---|---|"]
  for name, d in results["paired"].items():
    ci = f"[{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]" if "ci95" in d else "n/a"
    sd = "n/a" if d["std"] is None else f"{d['std']:.2f}"
    se = "n/a" if d["se"] is None else f"{d['se']:.2f}"
    lines.append(f"| {name} | {d['mean']:+.2f} | {sd} | {se} | {ci} | "
                 + " / ".join(f"{x:+.2f}" for x in d["values"]) + " |")
  return "\n".join(lines)


def replication_table(results: dict) -> str:
  pols = ("bc_idm", "bc_small", "bc_true", "random")
  lines = ["| seed | IDM non-noop | IDM + tile_motion | pseudo-label agreement | bc_idm trained on (agreement) | "
           + " | ".join(pols) + " | BC steps chosen (idm / small / true) |", "|---" * (len(pols) + 6) + "|"]
  for r in results["replications"]:
    tm = "n/a" if not r["idm_tile_motion"] else f"{100 * r['idm_tile_motion']['accuracy_non_noop']:.1f}%"
    lines.append(
        f"| {r['seed']} | {100 * r['idm']['accuracy_non_noop']:.1f}% | {tm} | "
        f"{100 * r['pseudo_labels']['accuracy']:.1f}% | {100 * r['bc_idm_labels']['agreement_with_hidden']:.1f}% | "
        + " | ".join(f"{r['policies'][p]['test']['score']:.2f}" for p in pols) + " | "
        + " / ".join(str(r["policies"][p]["selected_step"]) for p in pols[:3]) + " |")
  return "\n".join(lines)


def demonstrator_text(demo: dict) -> str:
  """The styles played and the action distribution of the demonstrations."""
  styles = ", ".join(f"{n} {k}" for n, k in demo["styles"].items())
  acts = " | ".join(f"{n} {100 * v:.1f}%" for n, v in demo["actions"].items() if v > 0)
  return (f"Episodes per style: {styles}; mean episode length {demo['episode_length']:.0f} steps, "
          f"{demo['score']:.2f} achievements per episode.\n\nActions (share of played steps): {acts}")


def write(wd: Path, command: str, c, results: dict) -> Path:
  s, paired = results["score"], results["paired"]
  n = len(results["seeds"])
  learned = verdict(paired["bc_true - random"]) == "reproduced" or (n == 1 and s["bc_true"] > s["random"])
  ratio = results["bc_idm_over_bc_true"]
  idm = results["idm_accuracy_over_seeds"]
  tm, ceiling = results["idm_accuracy_tile_motion"], results["identifiability_ceiling"]
  rows = [
      Row("IDM held-out non-noop accuracy, learned from pixels (issue 23's goal: >= 90%)",
          "90.6% is VPT's keypress accuracy in Minecraft: another task and metric, not compared",
          f"{pm(idm, 1, 100)}%", "n/a",
          f"{n} replication{'s' if n > 1 else ''}; all actions {100 * results['idm_accuracy_all']:.1f}%; "
          + ("goal met" if results["idm_accuracy"] >= 0.9 else "goal not met") + "; two-frame ceiling "
          + ("not measured" if ceiling is None else f"{100 * ceiling:.1f}% (above it = the IDM reads the "
             "demonstrator's habits)")),
      Row("IDM with tile_motion (hand-made motion features; an ablation, not VPT's IDM)", "—",
          "not run" if tm is None else f"{100 * tm:.1f}%", "n/a"),
      Row("BC on IDM labels >= 80% of BC on true labels (test score)", "IDM labels suffice",
          f"{s['bc_idm']:.2f} vs {s['bc_true']:.2f} = {100 * ratio:.0f}%",
          ("not measurable" if not learned else verdict(results["bc_idm_minus_0.8_bc_true"])),
          "judged by the 95% t-interval of bc_idm - 0.8 bc_true per replication" if learned else
          "BC on true labels does not clearly beat the random policy, so the ratio says nothing"),
      Row("BC on IDM labels beats BC on the small labelled set (paired)", "yes (the point of VPT)",
          f"{paired['bc_idm - bc_small']['mean']:+.2f} achievements per episode",
          verdict(paired["bc_idm - bc_small"]), "judged by the 95% t-interval of the paired difference"),
      Row("BC on IDM labels beats a random policy (paired)", "yes",
          f"{paired['bc_idm - random']['mean']:+.2f}", verdict(paired["bc_idm - random"])),
  ]
  rl = results.get("rl")
  if rl:
    d = rl["paired"]
    rows.append(Row(f"RL from the BC(IDM) prior above RL from scratch at {rl['env_steps']:,} env steps "
                    "(paired, test score)", "yes (VPT 4.4: fine-tuning from the prior reaches what "
                    "RL from scratch does not)",
                    f"{results['rl_from_prior']:.2f} vs {results['rl_from_scratch']:.2f} ({d['mean']:+.2f}; "
                    f"BC(IDM) before fine-tuning {rl['bc_idm_before']['mean']:.2f})",
                    verdict(d) if rl["replications"] > 1 else "n/a (one replication)",
                    f"{rl['replications']} replication(s); PPO with a KL penalty to the prior, "
                    "not VPT's PPG"))
  else:
    rows.append(Row("RL from the BC(IDM) prior above RL from scratch", "yes (VPT 4.4)", "not run",
                    "n/a", "this preset runs no RL (rl.replications or rl.iterations is 0); the default preset does"))
  plots = []
  reps = results["replications"]
  curves = []
  for p in ("bc_idm", "bc_small", "bc_true"):
    steps = [pt["step"] for pt in reps[0]["policies"][p]["curve"]]
    mean = np.mean([[pt["validation_score"] for pt in r["policies"][p]["curve"]] for r in reps], axis=0)
    curves.append((p, steps, mean.tolist()))
  plots.append((plot_curves(wd, "bc_validation_curves.png", curves, xlabel="BC steps",
                            ylabel="achievements per episode (validation)"),
                "BC policies on the validation worlds against training steps (mean over replications); "
                "each policy's reported point is its best here"))
  if rl:
    plots.append((plot_curves(wd, "rl_curves.png", [(n, c["env_steps"], c["score"]) for n, c in rl["curves"].items()],
                              xlabel="environment steps", ylabel="achievements per training episode"),
                  "PPO from the BC(IDM) prior (KL penalty) and from scratch: achievements of the "
                  "training rollouts against environment steps (mean over replications)"))
  sc = results["idm_scaling"]
  if sc and len(sc) > 1:
    plots.append((plot_curves(wd, "idm_scaling.png", [("held-out non-noop accuracy", [x["steps"] for x in sc],
                                                        [x["accuracy_non_noop"] for x in sc])],
                              xlabel="labelled steps (IDM training data)", ylabel="IDM accuracy"),
                  "IDM held-out accuracy (non-noop actions) against the labelled-set size (first replication)"))
  gifs = [f"![{g.stem}]({g.name})" for g in sorted(wd.glob("episode_*.gif"))]
  t = results["timing_seconds"]
  sections = [
      ("Replications", "Each seed redraws the demonstrations, the labelled split, the IDM, every BC "
       "policy and the validation and test worlds. BC lengths are chosen on the validation worlds; "
       "the scores are on the test worlds.\n\n" + replication_table(results)),
      ("Paired differences (policies of one replication share its worlds)", paired_table(results)),
      ("Success per achievement (test worlds, mean over replications)", achievement_table(results)),
      ("Demonstrators (first replication)", demonstrator_text(results["demonstrator"])),
      ("IDM confusion on held-out demonstrations (first replication)", confusion_table(results["idm"])),
      ("Episodes (first replication, test worlds, each policy at its chosen step)", " ".join(gifs)),
      ("Time", ", ".join(f"{k} {v:.0f} s" for k, v in t.items())),
  ]
  if sc and len(sc) > 1:
    sections.insert(4, ("IDM data scaling (first replication)",
                        "| labelled episodes | labelled steps | non-noop accuracy | accuracy |\n|---|---|---|---|\n"
                        + "\n".join(f"| {x['episodes']} | {x['steps']} | {100 * x['accuracy_non_noop']:.1f}% | "
                                     f"{100 * x['accuracy']:.1f}% |" for x in sc)))
  report = Report(title="VPT in Craftax-Classic: IDM, pseudo-labels and behavioural cloning",
                  command=command, rows=rows, plots=plots, sections=sections)
  return write_report(wd, report, results)
