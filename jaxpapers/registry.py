"""Every experiment `jaxpapers run` knows: its run function and its config file."""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

from jaxpapers.core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Experiment:
  name: str
  run: str              # "module:function", called as fn(config, workdir, command) -> results
  config: str           # path under jaxpapers/configs/ (installed with the package)
  quick_minutes: float | None  # measured wall time of --preset quick on 2 CPU cores (None: not
                               # yet timed since the preset last changed); the current values are
                               # experiments/measured/'s snapshots (each records its date and machine)
  summary: str

  def function(self):
    module, fn = self.run.split(":")
    return getattr(importlib.import_module(module), fn)

  def validate(self, cfg) -> None:
    """The run module's `validate(cfg)`, if it has one: bad values fail before any work."""
    check = getattr(importlib.import_module(self.run.split(":")[0]), "validate", None)
    if check is not None:
      check(cfg)


EXPERIMENTS = {e.name: e for e in [
    Experiment("glm/pretrain", "jaxpapers.glm.experiments:pretrain", "glm/pretrain.py", 2.7,
               "GLM-130B blank-infilling pretraining on Austen; ppl, last-word, blank-infill, MFU"),
    Experiment("glm/quantize", "jaxpapers.glm.quantize_experiment:run", "glm/quantize.py", 5.7,
               "GLM-130B INT8/INT4 weight quantization: ppl per scheme, CPU decode speed and memory, streaming quantization RSS"),
    Experiment("gact/memory", "jaxpapers.gact.experiments:run", "gact/memory.py", 24.9,
               "GACT levels (L0 plain, L1-L2.2 every saved activation compressed, checkpointed rows) on a GLM, a ResNet and a jraph GCN: activation memory, executed max batch, held-out loss, adaptive vs uniform bits"),
    Experiment("kgt/queries", "jaxpapers.kgt.experiments:run", "kgt/queries.py", 11.1,
               "kgTransformer vs GQE/Q2B/BetaE on 9 BetaE query types (UMLS, Kinships, 2 seeds): MRR per type at validation-chosen checkpoints, paired differences, pre-training ablation"),
    Experiment("cogvideo/t2v", "jaxpapers.cogvideo.experiments:run", "cogvideo/t2v.py", 15.3,
               "CogVideo on a captioned moving-object world: inherited vs scratch vs one-stage at equal compute; caption accuracy, Frechet distance, frame-rate control"),
    Experiment("gebd/ladder", "jaxpapers.gebd.experiments:run", "gebd/ladder.py", 8.4,
               "MAE-GEBD ladder on generated multi-annotator GEBD videos: baseline, soft labels, pseudo labels, alignment, video MAE, ensemble; Kinetics-GEBD F1"),
    Experiment("gebd/score", "jaxpapers.gebd.score:run", "gebd/score.py", 0.1,
               "the Kinetics-GEBD F1 protocol on your annotation and prediction pickles"),
    Experiment("pethead/suite", "jaxpapers.pethead.experiments:run", "pethead/suite.py", 8.4,
               "EH-FT on pretrained MiniLM: PET (LoRA/BitFit/prefix) + head, then full fine-tuning, vs FT, LP-FT, PET alone; 6 tasks, seeds, feature shift"),
    Experiment("retrieval/transfer", "jaxpapers.retrieval.experiments:run", "retrieval/transfer.py", 7.5,
               "P-tuning v2 dense retrieval on MiniLM vs FT, BitFit, zero-shot, BM25: in domain, cross-topic, man pages, Python docs; nDCG@10, ECE"),
    Experiment("iaad/sweep", "jaxpapers.iaad.experiments:run", "iaad/sweep.py", 0.8,
               "IAAD: ego-only, intra-frame, inter-frame, planning fusion and the adaptive choice in a closed-loop road simulator, swept over network levels"),
    Experiment("mooc/pretrain", "jaxpapers.mooc.experiments:run", "mooc/pretrain.py", 7.5,
               "MOOC behaviour pre-training on a student simulator: recommendation, resource evaluation, knowledge tracing, dropout vs scratch, SASRec, DKT, SAKT, LR"),
    Experiment("vpt/pipeline", "jaxpapers.vpt.experiments:run", "vpt/pipeline.py", 13.1,
               "VPT in Craftax: IDM on labelled demos, pseudo-labels, BC with memory (IDM / small / true labels), RL from the BC prior vs scratch"),
]}


@dataclasses.dataclass(frozen=True)
class Paper:
  key: str
  title: str
  arxiv: str
  experiments: tuple[str, ...]   # what `jaxpapers reproduce` runs for it, in order


PAPERS = {p.key: p for p in [
    Paper("glm", "GLM-130B: pretraining and INT8/INT4 weight quantization", "2210.02414",
          ("glm/pretrain", "glm/quantize")),
    Paper("gact", "GACT: activation-compressed training", "2206.11357", ("gact/memory",)),
    Paper("kgt", "kgTransformer: pre-training for complex logical queries", "2208.07638",
          ("kgt/queries",)),
    Paper("cogvideo", "CogVideo: text-to-video generation", "2205.15868", ("cogvideo/t2v",)),
    Paper("vpt", "VPT: video pretraining with an inverse dynamics model", "2206.11795",
          ("vpt/pipeline",)),
    Paper("gebd", "MAE-GEBD: generic event boundary detection", "2206.08610", ("gebd/ladder",)),
    Paper("pethead", "PET head (EH-FT): parameter-efficient tuning as a classification head",
          "2210.16771", ("pethead/suite",)),
    Paper("retrieval", "Prompt-tuned dense retrievers", "2207.07087", ("retrieval/transfer",)),
    Paper("iaad", "IAAD: fusion in infrastructure-augmented driving", "2207.00737",
          ("iaad/sweep",)),
    Paper("mooc", "Pre-training for adaptive learning in MOOCs", "2208.04708",
          ("mooc/pretrain",)),
]}


def paper(key: str) -> Paper:
  if key not in PAPERS:
    raise ConfigError(f"unknown paper {key!r}; papers: {', '.join(PAPERS)}")
  return PAPERS[key]


def configs_root() -> Path:
  """The experiments' config files, which ship inside the package (so a wheel or a
  `pip install git+URL` runs every experiment, not only an editable checkout)."""
  root = Path(__file__).resolve().parent / "configs"
  if not root.is_dir():
    raise ConfigError(f"experiment configs not found at {root}: this jaxpapers install is "
                      "incomplete; reinstall the package")
  return root


def config_path(exp: Experiment) -> Path:
  return configs_root() / exp.config


def get(name: str) -> Experiment:
  if name not in EXPERIMENTS:
    raise ConfigError(f"unknown experiment {name!r}; `jaxpapers list` shows: {', '.join(EXPERIMENTS)}")
  return EXPERIMENTS[name]


def presets(exp: Experiment) -> list[str]:
  import ast
  tree = ast.parse(config_path(exp).read_text())
  for node in tree.body:
    if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "PRESETS" for t in node.targets):
      return [p for p in ast.literal_eval(node.value) if p]
  return []
