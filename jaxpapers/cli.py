"""The `jaxpapers` command: list, run and generate.

  jaxpapers list
  jaxpapers run glm/pretrain --preset quick --workdir DIR [--config.train.steps=100 ...]
  jaxpapers run --config=FILE.py:quick --workdir DIR
                (a config file: one of jaxpapers/configs/, or your edited copy of one)
                (a finished run is not run again; --restart: start over when the workdir holds
                only corrupt checkpoints)
  jaxpapers reproduce [PAPER ...] [--preset quick] [--out DIR]
                (every named paper's experiments, all by default, then DIR/dashboard/index.html;
                papers: glm gact kgt cogvideo vpt gebd pethead retrieval iaad mooc)
  jaxpapers generate --workdir DIR --prompt "text" [--mode gmask|mask] [--strategy top_p]
                     [--quantize int4_absmax]
  jaxpapers generate --workdir DIR --prompt "a sneaker moving left slowly" [--fps 8]
                     [--model inherited|scratch|one_stage] [--num 4] [--out video.gif]
                     (cogvideo/t2v: a GIF and a frame strip of generated videos)
  jaxpapers explain --workdir DIR --dataset umls --qtype 2p --anchors A --relations R1,R2
                    (kgt/queries: the reasoning path, predicted entities at the variable nodes)

Errors caused by input print one line and exit with code 2.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shlex
import sys
from pathlib import Path

from absl import flags

from jaxpapers.core.errors import CheckpointError, ConfigError, JaxpapersError, WorkdirError

USAGE = __doc__


def _flags() -> flags.FlagValues:
  fv = flags.FlagValues()
  flags.DEFINE_string("workdir", None, "run directory (created; resumed if it holds checkpoints)", flag_values=fv)
  flags.DEFINE_string("preset", None, "config preset, e.g. quick", flag_values=fv)
  flags.DEFINE_string("config", None, "FILE[:ARG] config file and its get_config argument", flag_values=fv)
  flags.DEFINE_string("coordinator", None, "host:port of the jax.distributed coordinator", flag_values=fv)
  flags.DEFINE_bool("restart", False, "run: start from step 0 although the workdir holds only "
                    "unusable (*.corrupt) checkpoints (they are kept)", flag_values=fv)
  flags.DEFINE_integer("num_processes", None, "number of processes (jax.distributed)", flag_values=fv)
  flags.DEFINE_integer("process_id", None, "this process's index (jax.distributed)", flag_values=fv)
  flags.DEFINE_string("prompt", None, "generate: the prompt ([MASK] marks a blank)", flag_values=fv)
  flags.DEFINE_string("mode", None, "generate: gmask (continue) or mask (fill blanks); default from the prompt", flag_values=fv)
  flags.DEFINE_string("strategy", "greedy", "generate: greedy, sample, top_k or top_p", flag_values=fv)
  flags.DEFINE_integer("max_new_tokens", 40, "generate: tokens per blank", flag_values=fv)
  flags.DEFINE_integer("top_k", 40, "generate: k of top_k", flag_values=fv)
  flags.DEFINE_float("top_p", 0.9, "generate: p of top_p", flag_values=fv)
  flags.DEFINE_float("temperature", 1.0, "generate: softmax temperature", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "generate: sampling seed", flag_values=fv)
  flags.DEFINE_string("quantize", None, "generate: quantize the weights first (int8, int4_absmax, "
                      "int4_zeropoint, int4_group; GLM-130B §5)", flag_values=fv)
  flags.DEFINE_integer("fps", 8, "generate (cogvideo): frame rate of the video (8: key frames at 4 "
                       "fps + interpolation; 4: key frames only)", flag_values=fv)
  flags.DEFINE_string("model", "inherited", "generate (cogvideo): inherited, scratch or one_stage",
                      flag_values=fv)
  flags.DEFINE_integer("num", 1, "generate (cogvideo): videos to sample", flag_values=fv)
  flags.DEFINE_string("out", None, "generate (cogvideo): GIF path (default: WORKDIR/generated.gif); "
                      "reproduce: output directory (default: ./reproduce)", flag_values=fv)
  flags.DEFINE_string("dataset", None, "explain: a dataset of the kgt/queries run", flag_values=fv)
  flags.DEFINE_string("qtype", None, "explain: query type (1p 2p 3p 2i 3i ip pi 2u up)", flag_values=fv)
  flags.DEFINE_list("anchors", [], "explain: anchor entity names, depth-first order", flag_values=fv)
  flags.DEFINE_list("relations", [], "explain: relation names, depth-first order (inverse: NAME-1)",
                    flag_values=fv)
  flags.DEFINE_integer("top", 3, "explain: entities shown per node", flag_values=fv)
  return fv


def _parse(argv: list[str]):
  overrides, rest = {}, []
  it = iter(argv)
  for a in it:
    if a.startswith("--config."):
      key, eq, value = a[len("--config."):].partition("=")
      if not eq:
        value = next(it, None)
        if value is None:
          raise ConfigError(f"--config.{key} needs a value")
      overrides[key] = value
    else:
      rest.append(a)
  fv = _flags()
  try:
    positional = fv(["jaxpapers"] + rest)[1:]
  except flags.Error as e:
    raise ConfigError(str(e).splitlines()[0]) from None
  return fv, positional, overrides


def _check_workdir(workdir: str | None) -> Path:
  if not workdir:
    raise WorkdirError("--workdir is required")
  path = Path(workdir)
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / ".write_probe"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise WorkdirError(f"workdir {path} is not writable: {e.strerror or e}") from None
  return path


def _setup_logging():
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)
  for name in ("orbax", "absl", "jax._src.xla_bridge"):
    logging.getLogger(name).setLevel(logging.WARNING)


def cmd_list() -> int:
  from jaxpapers import registry
  print(f"{'experiment':<22} {'presets':<24} {'quick (min, 2 cores)':<22} summary")
  for e in registry.EXPERIMENTS.values():
    minutes = "not timed" if e.quick_minutes is None else e.quick_minutes
    print(f"{e.name:<22} {','.join(registry.presets(e)):<24} {minutes:<22} {e.summary}")
  return 0


def _load(fv, positional, overrides):
  from jaxpapers import registry
  from jaxpapers.core import config as cfglib
  if fv.config:
    file, _, arg = fv.config.partition(":")
    if fv.preset:
      raise ConfigError("give either --config=FILE:ARG or --preset, not both")
    cfg = cfglib.load_config_file(file, arg or None)
    name = cfg.get("experiment")
    if positional and positional[0] != name:
      raise ConfigError(f"config {file} is for {name!r}, not {positional[0]!r}")
    exp = registry.get(name)
  else:
    if not positional:
      raise ConfigError("name an experiment (see `jaxpapers list`) or give --config=FILE:ARG")
    exp = registry.get(positional[0])
    cfg = cfglib.load_config_file(registry.config_path(exp), fv.preset)
  cfglib.apply_overrides(cfg, overrides)
  return exp, cfg


def cmd_run(fv, positional, overrides, argv: list[str]) -> int:
  from jaxpapers.core import config as cfglib
  from jaxpapers.core import workdir as wdlib
  from jaxpapers.core.distributed import maybe_initialize
  exp, cfg = _load(fv, positional, overrides)
  if not fv.workdir:
    raise WorkdirError("--workdir is required")
  maybe_initialize(fv.coordinator, fv.num_processes, fv.process_id)
  from jaxpapers.core.train import validate_train_sections
  validate_train_sections(cfg)       # every stage's optimizer settings, by their own keys
  with wdlib.validating(fv.workdir):
    exp.validate(cfg)                # everything checkable before a file is written
  workdir = _check_workdir(fv.workdir)
  import jax
  lead = jax.process_index() == 0
  with (wdlib.Lock(workdir) if lead else contextlib.nullcontext()), wdlib.fresh_start(fv.restart):
    new = json.loads(cfglib.to_json(cfg))
    if wdlib.check_rerun(workdir, new, write=lead) == "finished":
      if lead:
        print(f"{workdir} holds this run, finished; nothing to do. Report: {workdir / 'REPORT.md'}")
      return 0
    command = "jaxpapers " + shlex.join(argv)     # main's argv: right in a notebook kernel too
    exp.function()(cfg, str(workdir), command)
    if lead:
      wdlib.mark_finished(workdir, new)
  if lead:
    print(workdir / "REPORT.md")
  return 0


def _check_generate_flags(fv) -> None:
  if not fv.prompt:
    raise ConfigError("--prompt is required")
  if fv.mode not in (None, "gmask", "mask"):
    raise ConfigError(f"--mode must be gmask or mask, got {fv.mode!r}")
  if fv.strategy not in ("greedy", "sample", "top_k", "top_p"):
    raise ConfigError(f"unknown sampling strategy {fv.strategy!r}; use greedy, sample, top_k or top_p")
  if fv.max_new_tokens < 1:
    raise ConfigError(f"--max_new_tokens must be a positive int, got {fv.max_new_tokens}")
  if not (math.isfinite(fv.temperature) and fv.temperature > 0):
    raise ConfigError(f"--temperature must be a positive finite number, got {fv.temperature} "
                      "(--strategy greedy gives the deterministic output)")
  if not 0.0 < fv.top_p <= 1.0:
    raise ConfigError(f"--top_p must be in (0, 1], got {fv.top_p}")
  if fv.top_k < 1:
    raise ConfigError(f"--top_k must be a positive int, got {fv.top_k}")


def _experiment_of(workdir: Path) -> str | None:
  from jaxpapers.core import workdir as wdlib
  if not (workdir / "config.json").is_file():
    return None
  return wdlib.read_json(workdir / "config.json").get("experiment")


def cmd_generate_video(fv) -> int:
  from jaxpapers.cogvideo.experiments import generate_videos
  from jaxpapers.cogvideo.report import save_gif, save_strips
  if fv.prompt is None:
    raise ConfigError("--prompt (the caption) is required")
  out = Path(fv.out or Path(fv.workdir) / "generated.gif")
  if out.suffix.lower() != ".gif":
    raise ConfigError(f"--out must name a .gif file, got {str(out)!r}")
  videos = generate_videos(fv.workdir, fv.prompt, fv.fps, fv.model, fv.num, fv.seed)
  rows = [(f"{fv.model} {i}", v) for i, v in enumerate(videos)]
  save_gif(out, rows, per_row=min(4, len(rows)))
  save_strips(out.with_suffix(".png"), rows)
  print(f"{out} and {out.with_suffix('.png')}: {len(videos)} video(s) of {videos.shape[1]} frames at "
        f"{fv.fps} fps for {fv.prompt!r}")
  return 0


def cmd_generate(fv) -> int:
  experiment = _experiment_of(Path(fv.workdir or ""))
  if experiment == "cogvideo/t2v":
    return cmd_generate_video(fv)
  if experiment not in (None, "glm/pretrain"):
    raise ConfigError(f"{fv.workdir} is a {experiment!r} run; generate works on glm/pretrain "
                      "(text) and cogvideo/t2v (video) runs")
  import ml_collections
  from jaxpapers.core import workdir as wdlib
  from jaxpapers.glm import experiments as glmexp
  from jaxpapers.glm.generate import complete, prompt_context
  from jaxpapers.core.checkpoint import has_checkpoints
  from jaxpapers.core.train import load_params
  _check_generate_flags(fv)
  workdir = Path(fv.workdir or "")
  if not (workdir / "config.json").is_file():
    raise WorkdirError(f"{workdir} holds no config.json of a glm/pretrain run")
  cfg = ml_collections.ConfigDict(wdlib.read_json(workdir / "config.json"))
  if cfg.get("experiment") != "glm/pretrain":
    raise ConfigError(f"{workdir} is a {cfg.get('experiment')!r} run; generate needs glm/pretrain")
  if not has_checkpoints(workdir / "checkpoints"):
    raise CheckpointError(f"{workdir} holds no checkpoint yet: train it first (jaxpapers run)")
  corpus, model = glmexp.build(cfg, workdir)
  mode = fv.mode or ("mask" if "[MASK]" in fv.prompt else "gmask")
  try:
    prompt_context(corpus.tokenizer, fv.prompt, corpus.ids, mode, cfg.objective.seq_len)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  model = load_params(cfg, workdir, model)
  if fv.quantize:
    from jaxpapers.nn.quantized import quantize
    model = quantize(model, fv.quantize)
  try:
    out = complete(model, corpus.tokenizer, fv.prompt, corpus.ids, mode=mode,
                   max_new_tokens=fv.max_new_tokens, strategy=fv.strategy, top_k=fv.top_k,
                   top_p=fv.top_p, temperature=fv.temperature, seed=fv.seed,
                   max_len=cfg.objective.seq_len)
  except (ValueError, TypeError) as e:
    raise ConfigError(str(e).splitlines()[0]) from None
  print(out)
  return 0


def cmd_reproduce(fv, positional, overrides) -> int:
  from jaxpapers import registry, reproduce
  if overrides or fv.config:
    raise ConfigError("reproduce takes no --config (it runs several experiments); "
                      "use `jaxpapers run` for a changed config")
  for name in ("workdir", "coordinator", "num_processes", "process_id"):
    if getattr(fv, name) is not None:
      raise ConfigError(f"reproduce takes --out DIR, not --{name}")
  if fv.restart:
    raise ConfigError("reproduce takes no --restart; run the experiment with `jaxpapers run`")
  papers = list(dict.fromkeys(positional))    # each paper once, in the order given
  for key in papers or registry.PAPERS:       # unknown papers and presets fail before any run
    for name in registry.paper(key).experiments:
      exp = registry.get(name)
      if fv.preset and fv.preset not in registry.presets(exp):
        raise ConfigError(f"{name} has no preset {fv.preset!r} (it has: "
                          f"{', '.join(registry.presets(exp))})")
  return reproduce.run(papers, fv.preset, fv.out or "reproduce")


def cmd_explain(fv) -> int:
  from jaxpapers.kgt.experiments import explain_text
  for name in ("workdir", "dataset", "qtype"):
    if not getattr(fv, name):
      raise ConfigError(f"--{name} is required")
  print(explain_text(fv.workdir, fv.dataset, fv.qtype, fv.anchors, fv.relations, fv.top))
  return 0


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(USAGE)
    return 0
  _setup_logging()
  cmd, rest = argv[0], argv[1:]
  try:
    if cmd == "list":
      return cmd_list()
    fv, positional, overrides = _parse(rest)
    if cmd == "run":
      return cmd_run(fv, positional, overrides, argv)
    if cmd == "generate":
      return cmd_generate(fv)
    if cmd == "explain":
      return cmd_explain(fv)
    if cmd == "reproduce":
      return cmd_reproduce(fv, positional, overrides)
    raise ConfigError(f"unknown command {cmd!r}; use list, run, reproduce, generate or explain")
  except JaxpapersError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
