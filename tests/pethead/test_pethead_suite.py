"""`jaxpapers run pethead/suite` end to end on a tiny random encoder and a user's task file."""
import json
import subprocess
import sys

import pytest

from conftest import REPO

# the quick preset runs all six (measured in experiments/pethead/README.md); here the four whose
# stages cover every kind but prefix, which test_pet_layers trains (the test budget is compile time)
METHODS = ("ft", "lpft", "ehft_lora", "ehft_bitfit")


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("pethead")
  words = ["good", "bad"]
  rows = [{"text": f"{words[i % 2]} movie number {i}" + (" very long" * 40 if i == 3 else ""),
           "label": words[i % 2]} for i in range(48)]
  task = tmp / "mytask.jsonl"
  task.write_text("\n".join(json.dumps(r) for r in rows))
  args = [sys.executable, "-m", "jaxpapers.cli", "run", "pethead/suite", "--preset", "tiny",
          "--workdir", str(tmp / "wd"), f"--config.tasks=('{task}',)", "--config.seeds=1",
          "--config.full_lr_grid=(3e-4,)", "--config.data.n_train=24",
          f"--config.methods={METHODS!r}"]
  first = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=300)
  return tmp, first, args


def test_suite_writes_every_method_avg_and_feature_shift(suite_run):
  tmp, first, _ = suite_run
  assert first.returncode == 0, first.stderr[-3000:]
  r = json.loads((tmp / "wd" / "results.json").read_text())
  for m in METHODS:
    assert set(r[m]) >= {"mytask", "avg"} and 0.0 <= r[m]["avg"] <= 100.0, m
  assert set(r["feature_shift"]) >= {"ft", "ehft_lora"} and r["feature_shift"]["ft"]["l2"] > 0
  assert sum(r["truncated"]["mytask"]["0"].values()) == 1        # the one long text, counted
  # stage 1 of EH-FT(LoRA) trains LoRA + head only; stage 2 every parameter
  lora_stage1, full = r["ehft_lora"]["trained_params"]
  assert lora_stage1 < full / 20 and full == r["ft"]["trained_params"][0]
  assert "ehft_lora - ft" in (tmp / "wd" / "REPORT.md").read_text()


def test_a_killed_suite_reruns_only_unfinished_sub_runs(suite_run):
  """As if killed before its report: one sub-run's result is missing; the rerun trains that one
  alone and writes the same scores for the others."""
  tmp, first, args = suite_run
  wd = tmp / "wd"
  before = json.loads((wd / "results.json").read_text())
  (wd / "finished.json").unlink()
  (wd / "runs" / "mytask" / "seed0" / "lpft" / "result.json").unlink()
  again = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=300)
  assert again.returncode == 0, again.stderr[-2000:]
  assert "train:" in first.stderr and again.stderr.count("train:") < first.stderr.count("train:") / 4
  after = json.loads((wd / "results.json").read_text())
  for m in METHODS:
    if m != "lpft":
      assert after[m]["mytask"] == before[m]["mytask"], m


def test_a_sub_run_of_another_config_is_refused_and_kept(tmp_path):
  from jaxpapers.core.errors import WorkdirError
  from jaxpapers.core.workdir import cached_result
  from jaxpapers.pethead.experiments import fingerprint
  from jaxpapers.registry import configs_root
  from jaxpapers.core.config import load_config_file
  c = load_config_file(configs_root() / "pethead/suite.py", "tiny")
  path = tmp_path / "result.json"
  assert cached_result(path, lambda: ({"score": 1}, None), fingerprint(c))[0]["score"] == 1
  assert cached_result(path, lambda: ({"score": 2}, None), fingerprint(c))[0]["score"] == 1      # reused
  kept = path.read_text()
  c.train.epochs = 3
  with pytest.raises(WorkdirError, match="made with another config \\(differs in train.epochs\\)"):
    cached_result(path, lambda: ({"score": 3}, None), fingerprint(c))
  assert path.read_text() == kept


def test_unknown_label_in_a_task_file_is_one_error_line(tmp_path):
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"text": "fine", "label": "a"}\n{"text": "also", "label": "b"}\n'
                 '{"text": "", "label": "a"}\n')
  p = subprocess.run([sys.executable, "-m", "jaxpapers.cli", "run", "pethead/suite", "--preset",
                      "tiny", "--workdir", str(tmp_path / "wd"), f"--config.tasks=('{bad}',)"],
                     capture_output=True, text=True, cwd=REPO, timeout=120)
  assert p.returncode == 2 and "bad.jsonl:3: empty text" in p.stderr and "Traceback" not in p.stderr
