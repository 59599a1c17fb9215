"""Configs and the CLI: overrides, listing, and one clear line for each bad input."""
import json
import lzma
from pathlib import Path

import pytest

from jaxpapers import cli
from jaxpapers.core import config as cfglib
from jaxpapers.core.errors import ConfigError
from jaxpapers.registry import EXPERIMENTS, config_path, configs_root
from jp_testutil import tiny_glm_args


def _cfg():
  return cfglib.load_config_file(configs_root() / "glm/pretrain.py", "tiny")


def test_overrides_parse_to_the_current_type():
  c = _cfg()
  cfglib.apply_overrides(c, {"train.steps": "7", "train.lr": "0.5", "model.remat": "false",
                             "mesh.shape": "(2, 4)", "data.corpus": "/x.txt"})
  assert (c.train.steps, c.train.lr, c.model.remat, c.mesh.shape, c.data.corpus) == (7, 0.5, False, (2, 4), "/x.txt")


@pytest.mark.parametrize("overrides, message", [
    ({"train.stepz": "3"}, "unknown config key --config.train.stepz"),
    ({"nosuch.x": "3"}, "unknown config key --config.nosuch"),
    ({"train.steps": "many"}, "--config.train.steps must be an int, got 'many'"),
    ({"model.remat": "maybe"}, "--config.model.remat must be a bool"),
    ({"train": "3"}, "--config.train is a section"),
])
def test_bad_overrides(overrides, message):
  with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
    cfglib.apply_overrides(_cfg(), overrides)


def test_every_experiment_config_loads_with_its_presets():
  from jaxpapers import registry
  for exp in EXPERIMENTS.values():
    for preset in registry.presets(exp):
      cfg = cfglib.load_config_file(config_path(exp), preset)
      assert cfg.experiment == exp.name


def test_list_shows_experiments_and_presets(capsys):
  assert cli.main(["list"]) == 0
  out = capsys.readouterr().out
  assert "glm/pretrain" in out and "quick" in out


def _one_line_error(capsys, argv, expected):
  code = cli.main(argv)
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2
  assert err[-1].startswith("error: ") and expected in err[-1], err
  assert not any("Traceback" in line for line in err)


def test_cli_bad_inputs(capsys, tmp_path, small_corpus):
  wd = tmp_path / "wd"
  _one_line_error(capsys, tiny_glm_args(small_corpus, wd, "--config.train.nope=1"),
                  "unknown config key --config.train.nope")
  _one_line_error(capsys, tiny_glm_args(small_corpus, wd, "--config.train.batch=eight"),
                  "--config.train.batch must be an int")
  _one_line_error(capsys, tiny_glm_args(small_corpus, wd, "--config.train.batch=-4"),
                  "--config.train.batch must be a positive int")
  _one_line_error(capsys, tiny_glm_args(tmp_path / "missing.txt", wd), "corpus file not found")
  empty = tmp_path / "empty.txt"
  empty.write_text("  \n\n ")
  _one_line_error(capsys, tiny_glm_args(empty, wd), "is empty")
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  _one_line_error(capsys, tiny_glm_args(small_corpus, blocker / "run"), "is not writable")
  _one_line_error(capsys, ["run", "glm/nosuch", "--workdir", str(wd)], "unknown experiment 'glm/nosuch'")
  _one_line_error(capsys, ["run", "glm/pretrain", "--preset", "huge", "--workdir", str(wd)],
                  "unknown preset 'huge'")
  _one_line_error(capsys, ["run", "glm/pretrain", "--preset", "tiny"], "--workdir is required")
  _one_line_error(capsys, ["run", "glm/pretrain", "--bogus_flag=1", "--workdir", str(wd)], "bogus_flag")


def test_cli_corrupt_checkpoint_is_one_line(capsys, tmp_path, small_corpus):
  wd = tmp_path / "wd"
  assert cli.main(tiny_glm_args(small_corpus, wd)) == 0
  capsys.readouterr()
  for step_dir in (wd / "checkpoints").iterdir():
    if step_dir.is_dir() and step_dir.name.isdigit():
      for f in step_dir.rglob("*"):
        if f.is_file():
          f.write_bytes(b"garbage")
  _one_line_error(capsys, tiny_glm_args(small_corpus, wd, "--config.train.steps=8"),
                  "no usable checkpoint")
  _one_line_error(capsys, tiny_glm_args(small_corpus, wd, "--config.model.d_model=32"),
                  "holds a run whose model.d_model differs")
  _one_line_error(capsys, tiny_glm_args(small_corpus, wd, "--config.model.d_model=76"),
                  "d_model / num_heads is even")
