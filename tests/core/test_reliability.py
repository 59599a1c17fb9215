"""Runs you can trust (issue 17), the parts that need no training run: checkpoint checksums and
the corrupt/not-corrupt split, the workdir lock, atomic files, metrics history on resume, the
cap on consecutive skipped steps, and one line (exit 2) for each bad config, config file and
generation argument."""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from jaxpapers import cli
from jaxpapers.core import config as cfglib
from jaxpapers.core import metrics, workdir as wdlib
from jaxpapers.core.checkpoint import Checkpointer, is_corruption
from jaxpapers.core.errors import CheckpointError, NonFiniteError, WorkdirError
from jaxpapers.core.mesh import make_mesh
from jaxpapers.core.train import train
from jaxpapers.glm.generate import _fit
from jaxpapers.registry import configs_root
from jp_testutil import tiny_glm_args


def _one_line_error(capsys, argv, expected):
  code = cli.main(argv)
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2, err
  assert err[-1].startswith("error: ") and expected in err[-1], err
  assert not any("Traceback" in line for line in err), err
  return err[-1]


# --- checkpoints -------------------------------------------------------------------------------

def _state():
  rng = np.random.default_rng(0)
  # random bits do not compress: zstd stores them as they are, so a flip decodes to wrong values
  return {"w": jnp.asarray(rng.integers(0, 2**32, (64, 64), dtype=np.uint32)),
          "b": jnp.asarray(rng.standard_normal(64), jnp.float32), "step": jnp.int32(3)}


def _abstract(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def _saved(tmp_path, steps=(1, 2)):
  ck = Checkpointer(tmp_path / "ck", keep=5)
  state = _state()
  for s in steps:
    ck.save(s, jax.tree.map(lambda x: x + s, state), {"step": s, "data_position": s})
  return ck, state


def test_a_flipped_block_of_array_bytes_is_corruption(tmp_path, caplog):
  """64 bytes flipped inside the data file of step 2, size unchanged: tensorstore still decodes
  it (to wrong, finite values); the checksum catches it and restore falls back to step 1."""
  ck, state = _saved(tmp_path)
  data = max((f for f in (tmp_path / "ck" / "2").rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)
  raw = bytearray(data.read_bytes())
  assert len(raw) > 64 * 64 * 4          # the 64x64 uint32 array is stored uncompressed here
  mid = len(raw) // 2
  raw[mid:mid + 64] = bytes(b ^ 0xA5 for b in raw[mid:mid + 64])
  data.write_bytes(bytes(raw))
  restored, meta = ck.restore_latest(_abstract(state))
  assert meta == {"step": 1, "data_position": 1}
  np.testing.assert_array_equal(restored["w"], state["w"] + 1)
  assert "checksum of ['w'] differs" in caplog.text
  assert (tmp_path / "ck" / "2.corrupt").is_dir() and ck.steps() == [1]


@pytest.mark.parametrize("error", [MemoryError(), OSError(5, "Input/output error"),
                                   ValueError("UNAVAILABLE: [OS error 5: Input/output error]"),
                                   TypeError("restore() got an unexpected keyword argument"),
                                   KeyError("state"), ValueError("sharding mismatch")])
@pytest.mark.parametrize("table", [True, False])
def test_a_failure_that_is_not_corruption_renames_nothing(tmp_path, error, table):
  """With the table of files saved with the checkpoint, any failure on files as saved (an API or
  sharding error too) renames nothing; without one (a checkpoint of an older version) the kind of
  error decides, and API-looking errors (TypeError, KeyError, a ValueError) count as corruption."""
  ck, state = _saved(tmp_path)
  if not table:
    shutil.rmtree(tmp_path / "ck" / ".files")
    if isinstance(error, (TypeError, KeyError)) or str(error) == "sharding mismatch":
      pytest.skip("without the table these read as format errors")

  def fail(*a, **k):
    raise error
  ck.manager.restore = fail
  why = "its files are as saved" if table else "not a sign of corruption"
  with pytest.raises(CheckpointError, match=rf"could not read the checkpoint at step 2 .* {why}, "
                                            r"so nothing was set aside"):
    ck.restore_latest(_abstract(state))
  assert sorted(p.name for p in (tmp_path / "ck").iterdir() if p.name != ".files") == ["1", "2"]
  assert ck.restore_latest(_abstract(state))[1]["step"] == 2      # a fresh manager reads it


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_cut_or_missing_array_file_is_corruption(tmp_path, caplog, damage):
  """orbax reports these as a bare Exception caused by tensorstore's OUT_OF_RANGE or
  FAILED_PRECONDITION: corruption, so restore sets step 2 aside and falls back to step 1."""
  ck, state = _saved(tmp_path)
  data = max((f for f in (tmp_path / "ck" / "2").rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)
  if damage == "truncate":
    data.write_bytes(data.read_bytes()[:data.stat().st_size // 3])
  else:
    data.unlink()
  restored, meta = ck.restore_latest(_abstract(state))
  assert meta == {"step": 1, "data_position": 1}
  np.testing.assert_array_equal(restored["w"], state["w"] + 1)
  assert "unreadable" in caplog.text and (tmp_path / "ck" / "2.corrupt").is_dir()
  assert ("file(s) changed since the save" if damage == "truncate" else "file(s) missing") in caplog.text


def test_corruption_means_format_errors_only():
  assert is_corruption(ValueError("OUT_OF_RANGE: Error reading \"w/.zarray\""))
  assert is_corruption(json.JSONDecodeError("Expecting value", "x", 0))
  assert is_corruption(FileNotFoundError(2, "No such file or directory"))
  assert not is_corruption(ValueError("PERMISSION_DENIED: Error opening file"))
  assert not is_corruption(MemoryError())
  assert not is_corruption(OSError(28, "No space left on device"))
  assert not is_corruption(RuntimeError("Event loop is closed"))


def test_only_corrupt_checkpoints_left_refuses_a_fresh_start(tmp_path):
  ck, state = _saved(tmp_path, steps=(1,))
  for f in (tmp_path / "ck" / "1").rglob("*"):
    if f.is_file():
      f.write_bytes(b"x")
  with pytest.raises(CheckpointError, match="no usable checkpoint .*--restart"):
    ck.restore_latest(_abstract(state))
  with pytest.raises(CheckpointError, match=r"holds only unusable checkpoints \(1.corrupt\); "
                                            "rerun with --restart"):
    ck.restore_latest(_abstract(state))
  assert ck.restore_latest(_abstract(state), allow_fresh=True) is None
  assert (tmp_path / "ck" / "1.corrupt").is_dir()                  # kept


# --- workdir: lock, atomic files, metrics history ----------------------------------------------

def test_lock_refuses_a_live_holder_and_takes_over_a_dead_ones(tmp_path, caplog):
  with wdlib.Lock(tmp_path) as lock:
    rec = json.loads((tmp_path / ".lock").read_text())
    assert rec["pid"] == os.getpid() and rec["host"]
    with pytest.raises(WorkdirError, match=rf"in use by another run, which holds its lock \(its record: pid {os.getpid()} on "):
      wdlib.Lock(tmp_path).acquire()
  assert not (tmp_path / ".lock").exists() and not lock.held
  dead = subprocess.Popen(["true"])
  dead.wait()
  (tmp_path / ".lock").write_text(json.dumps({"pid": dead.pid, "host": rec["host"]}))
  with wdlib.Lock(tmp_path):
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
  assert f"taking over the stale lock {tmp_path / '.lock'} of pid {dead.pid}" in caplog.text
  # a record written under the flock that nobody holds is stale even when its pid is alive (a
  # restarted container reuses pids, even ours): taken over, not "in use"
  (tmp_path / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": rec["host"], "flock": 1}))
  with wdlib.Lock(tmp_path) as lock:
    assert lock.held
  assert f"of pid {os.getpid()} on {rec['host']} (no longer running)" in caplog.text


def test_of_runs_that_find_the_same_stale_lock_only_one_gets_it(tmp_path, monkeypatch):
  """Run b finds the lock of a dead process and, while it checks that process, run a finds the
  same stale lock and takes it: b must not take it too (the takeover used to unlink and re-create
  the file, so b deleted a's fresh lock and both ran)."""
  dead = subprocess.Popen(["true"])
  dead.wait()
  (tmp_path / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
  a, b = wdlib.Lock(tmp_path), wdlib.Lock(tmp_path)
  real_alive = wdlib._alive

  def a_acquires_meanwhile(pid):
    monkeypatch.setattr(wdlib, "_alive", real_alive)
    try:
      a.acquire()
    except WorkdirError:
      pass
    return real_alive(pid)

  monkeypatch.setattr(wdlib, "_alive", a_acquires_meanwhile)
  try:
    b.acquire()
  except WorkdirError as e:
    assert "in use by another run" in str(e)
  assert a.held + b.held == 1
  for lock in (a, b):
    lock.release()
  assert not (tmp_path / ".lock").exists()


def test_truncated_json_is_one_error(tmp_path):
  (tmp_path / "config.json").write_text('{"experiment": "glm/pre')
  with pytest.raises(WorkdirError, match=r"config.json is not valid JSON .*truncated"):
    wdlib.read_json(tmp_path / "config.json")
  wdlib.atomic_write_json(tmp_path / "config.json", {"a": 1})
  assert wdlib.read_json(tmp_path / "config.json") == {"a": 1}
  assert [p.name for p in tmp_path.iterdir()] == ["config.json"]    # no temporary left


def test_files_written_by_libraries_appear_whole_or_not_at_all(tmp_path):
  """atomic_path: figures, GIFs and .npz files are written to a temporary beside the target
  (same suffix, so the writer picks the right format) and renamed; a failed write leaves the old
  file and no temporary."""
  target = tmp_path / "plot.png"
  target.write_bytes(b"old")
  with pytest.raises(RuntimeError):
    with wdlib.atomic_path(target) as tmp:
      assert tmp.suffix == ".png" and tmp.parent == tmp_path
      tmp.write_bytes(b"half")
      raise RuntimeError("the writer failed")
  assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]
  with wdlib.atomic_path(tmp_path / "x.npz") as tmp:
    np.savez(tmp, a=np.arange(3))
  np.testing.assert_array_equal(np.load(tmp_path / "x.npz")["a"], np.arange(3))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png", "x.npz"]


def test_resume_drops_the_rows_logged_past_the_checkpoint(tmp_path):
  rows = [{"step": s, "loss": 10.0 - s} for s in range(1, 7)] + [{"step": 3, "eval/ppl": 5.0}]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 7, "lo')
  kept = metrics.keep_up_to(tmp_path, 4)
  assert [(r["step"], "loss" in r) for r in kept] == [(1, True), (2, True), (3, True), (4, True), (3, False)]
  assert metrics.read_metrics(tmp_path) == kept                   # the file itself was rewritten


def test_a_damaged_line_inside_metrics_is_an_error_not_a_silent_gap(tmp_path):
  rows = [{"step": s, "loss": 1.0} for s in range(1, 4)]
  lines = [json.dumps(r) for r in rows]
  (tmp_path / "metrics.jsonl").write_text("\n".join(lines[:1] + ["garbage"] + lines[1:]) + "\n")
  with pytest.raises(WorkdirError, match=r"metrics.jsonl:2 is not a JSON object"):
    metrics.read_metrics(tmp_path)


# --- kill points of the fault suite --------------------------------------------------------------

@pytest.mark.parametrize("spec, killed", [("step:2", True), ("step:4", False), ("eval:1", False)])
def test_kill_points_kill_at_the_nth_pass_and_are_traced(tmp_path, spec, killed):
  trace = tmp_path / "trace.txt"
  code = ("from jaxpapers.core import faults\n"
          "for i in range(3):\n  faults.point('step')\nprint('survived')")
  p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                     env=dict(os.environ, JAXPAPERS_KILL_AT=spec, JAXPAPERS_FAULT_TRACE=str(trace)))
  assert (p.returncode == -9) == killed and ("survived" in p.stdout) != killed, p
  assert trace.read_text().split() == ["step"] * (2 if killed else 3)


# --- non-finite: a cap on consecutive skipped steps --------------------------------------------

class _Linear(nnx.Module):
  def __init__(self):
    self.w = nnx.Param(jnp.ones((4, 1)))

  def __call__(self, x):
    return x @ self.w[...]


def test_consecutive_skipped_steps_stop_the_run(tmp_path):
  """lr = 1e30 (finite, positive: valid) blows the parameters up on the first update; every
  later step is non-finite and skipped, and the 3rd in a row stops the run."""
  c = ml_collections.ConfigDict(dict(seed=0, train=dict(
      steps=12, batch=2, lr=1e30, warmup=0, end_lr_ratio=1.0, weight_decay=0.0, b1=0.9, b2=0.95,
      eps=1e-8, clip=1.0, grad_accum=1, log_every=1, eval_every=0, ckpt_every=0, keep=1,
      on_nonfinite="skip", max_consecutive_skips=3, inject_nan_step=-1, tensorboard=False)))
  loss = lambda m, b, key: (jnp.mean((m(b["x"]) - b["y"]) ** 2), {})
  batch = lambda step: {"x": np.ones((2, 4), np.float32), "y": np.zeros((2, 1), np.float32)}
  with pytest.raises(NonFiniteError, match=r"3 steps in a row \(2 to 4\) were non-finite .* "
                                           r"stopped \(train.max_consecutive_skips=3\)"):
    train(cfg=c, workdir=tmp_path, model=_Linear(), loss_fn=loss, get_batch=batch,
          mesh=make_mesh((1,), ("data",), jax.devices()[:1]), progress=False)
  rows = metrics.read_metrics(tmp_path)
  assert [r["finite"] for r in rows] == [1.0, 1.0, 0.0, 0.0, 0.0]   # step 0 has lr 0 (warmup)


def test_nan_data_is_injected_into_that_step_only_and_skipped(tmp_path, caplog):
  """train.inject_nan_into='data': the step's batch (a copy: the sampler's arrays stay as they
  were) gets NaN in its first floating array; that step is skipped, the others train."""
  c = ml_collections.ConfigDict(dict(seed=0, train=dict(
      steps=4, batch=2, lr=1e-2, warmup=0, end_lr_ratio=1.0, weight_decay=0.0, b1=0.9, b2=0.95,
      eps=1e-8, clip=1.0, grad_accum=1, log_every=1, eval_every=0, ckpt_every=0, keep=1,
      on_nonfinite="skip", inject_nan_step=2, inject_nan_into="data", tensorboard=False)))
  loss = lambda m, b, key: (jnp.mean((m(b["x"]) - b["y"]) ** 2), {})
  fixed = {"x": np.ones((2, 4), np.float32), "y": np.zeros((2, 1), np.float32)}
  out = train(cfg=c, workdir=tmp_path, model=_Linear(), loss_fn=loss, get_batch=lambda step: fixed,
              mesh=make_mesh((1,), ("data",), jax.devices()[:1]), progress=False)
  assert out.skipped_steps == [2] and np.isfinite(fixed["x"]).all()
  assert "non-finite loss at step 2" in caplog.text    # the first place to go wrong


def test_a_resume_whose_metrics_rows_are_gone_refuses_to_report_part_of_the_run(tmp_path):
  """Rows before the checkpoint missing from metrics.jsonl (not a kill: a kill cuts only the
  last line): the report would silently cover part of the run, so the resume stops in one line."""
  def cfg(steps):
    return ml_collections.ConfigDict(dict(seed=0, train=dict(
        steps=steps, batch=2, lr=1e-2, warmup=0, end_lr_ratio=1.0, weight_decay=0.0, b1=0.9,
        b2=0.95, eps=1e-8, clip=1.0, grad_accum=1, log_every=1, eval_every=0, ckpt_every=2,
        keep=2, on_nonfinite="skip", inject_nan_step=-1, tensorboard=False)))
  loss = lambda m, b, key: (jnp.mean((m(b["x"]) - b["y"]) ** 2), {})
  batch = lambda step: {"x": np.ones((2, 4), np.float32), "y": np.zeros((2, 1), np.float32)}
  go = lambda steps: train(cfg=cfg(steps), workdir=tmp_path, model=_Linear(), loss_fn=loss,
                           get_batch=batch, mesh=make_mesh((1,), ("data",), jax.devices()[:1]),
                           progress=False)
  go(4)
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  (tmp_path / "metrics.jsonl").write_text("\n".join(lines[:1] + lines[2:]) + "\n")
  with pytest.raises(WorkdirError, match=r"lacks the rows of 1 of the 4 steps .* \(first: step 2\)"):
    go(6)


# --- one line and exit 2 -----------------------------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("--config.train.lr=inf", "--config.train.lr must be a finite positive number, got inf"),
    ("--config.train.lr=0", "--config.train.lr must be a finite positive number, got 0.0"),
    ("--config.train.clip=-1", "--config.train.clip must be a finite number >= 0 (the global "
                               "gradient norm; 0 disables clipping), got -1.0"),
    ("--config.train.b2=5", "--config.train.b2 must be in [0, 1), got 5.0"),
    ("--config.train.b1=-0.1", "--config.train.b1 must be in [0, 1), got -0.1"),
    ("--config.train.max_consecutive_skips=0", "--config.train.max_consecutive_skips must be a positive int"),
    ("--config.mesh.shape=(3, 1)", "--config.mesh.shape (3, 1) needs 3 devices"),
])
def test_bad_values_fail_before_anything_is_written(capsys, tmp_path, small_corpus, override, message):
  _one_line_error(capsys, tiny_glm_args(small_corpus, tmp_path / "wd", override), message)
  assert not (tmp_path / "wd").exists()


def test_missing_corpus_writes_nothing(capsys, tmp_path):
  _one_line_error(capsys, tiny_glm_args(tmp_path / "nope.txt", tmp_path / "wd"), "corpus file not found")
  assert not (tmp_path / "wd").exists()


def test_a_corpus_with_too_few_tokens_writes_nothing(capsys, tmp_path, small_corpus):
  """Enough bytes for the byte bound (8 x seq_len) but too few tokens in the held-out split once
  tokenized: the token count is checked before the workdir is written, not after."""
  short = tmp_path / "short.txt"
  short.write_text(small_corpus.read_text()[:700])     # 700 bytes: 159 + 17 tokens
  _one_line_error(capsys, tiny_glm_args(short, tmp_path / "wd"), "held-out tokens; need at least")
  assert not (tmp_path / "wd").exists()


def test_a_resumed_run_is_not_tokenized_again_to_validate(tmp_path, small_corpus, monkeypatch):
  """The token check before a run writes anything reads the prepared tokens of a workdir that has
  them (a resume, a finished run) instead of training a tokenizer again; an edited corpus file is
  tokenized anew (the cache is keyed by its size and modification time)."""
  from jaxpapers.glm import data as glmdata
  corpus = tmp_path / "corpus.txt"
  corpus.write_text(small_corpus.read_text())
  wd = tmp_path / "wd"
  wd.mkdir()
  glmdata.prepare(str(corpus), 512, 0.05, wd, 32)
  calls = []
  real = glmdata._tokenize
  monkeypatch.setattr(glmdata, "_tokenize", lambda *a: calls.append(a) or real(*a))
  with wdlib.validating(wd):
    glmdata.check_tokens(str(corpus), 512, 0.05, 32)
    assert glmdata.check_tokenizer(str(corpus), 512, 0.05).get_vocab_size() == 512
  assert calls == []
  glmdata.check_tokens(str(corpus), 512, 0.05, 32)               # no prepared workdir: tokenized
  assert len(calls) == 1
  before = glmdata._file_key(str(corpus))
  corpus.write_text(corpus.read_text()[:-1])
  assert glmdata._file_key(str(corpus)) != before


def test_a_configured_prompt_longer_than_the_context_writes_nothing(capsys, tmp_path, small_corpus):
  """The samples a run writes at its end: a prompt that cannot fit is refused before training
  (it used to fail after it, with a traceback, leaving a run that could never finish)."""
  long = "It is a truth universally acknowledged " * 20
  _one_line_error(capsys, tiny_glm_args(small_corpus, tmp_path / "wd", f"--config.generate.prompts=('{long}',)"),
                  "--config.generate.prompts: 'It is a truth universally acknowledged I'...: the prompt is")
  assert not (tmp_path / "wd").exists()


@pytest.mark.parametrize("body, message", [
    ("def get_config(arg):\n  return {\n", "fails to import: SyntaxError at line 2"),
    ("import no_such_module_xyz\n", "fails to import: ModuleNotFoundError at line 1"),
    ("def get_config(arg):\n  raise KeyError(arg)\n",
     "get_config('quick') raised KeyError at line 2: 'quick'"),
])
def test_config_files_that_fail_are_one_line(capsys, tmp_path, body, message):
  f = tmp_path / "cfg.py"
  f.write_text(body)
  _one_line_error(capsys, ["run", f"--config={f}:quick", "--workdir", str(tmp_path / "wd")], message)


def test_other_readers_of_a_truncated_workdir_json_are_one_line(capsys, tmp_path):
  """kgt's explain, glm/quantize's source workdir and reproduce's status.json read workdir JSON
  through the one reader that names a damaged file (they raised JSONDecodeError)."""
  wd = tmp_path / "wd"
  wd.mkdir()
  (wd / "config.json").write_text('{"experiment": "kgt/que')
  _one_line_error(capsys, ["explain", "--workdir", str(wd), "--dataset", "x", "--qtype", "1p"],
                  "config.json is not valid JSON")
  _one_line_error(capsys, ["run", "glm/quantize", "--preset", "tiny", "--workdir", str(tmp_path / "q"),
                           f"--config.source_workdir={wd}"], "config.json is not valid JSON")
  out = tmp_path / "out"
  out.mkdir()
  (out / "status.json").write_text('{"glm/pretrain": {"preset"')
  _one_line_error(capsys, ["reproduce", "iaad", "--preset", "tiny", "--out", str(out)],
                  "status.json is not valid JSON")


def test_truncated_config_json_of_a_workdir(capsys, tmp_path, small_corpus):
  wd = tmp_path / "wd"
  (wd / "checkpoints").mkdir(parents=True)
  (wd / "config.json").write_text('{"experiment": "glm/pret')
  _one_line_error(capsys, tiny_glm_args(small_corpus, wd), "config.json is not valid JSON")
  _one_line_error(capsys, ["generate", "--workdir", str(wd), "--prompt", "x"], "config.json is not valid JSON")
  (wd / "config.json").write_text(cfglib.to_json(_cfg(small_corpus)))
  (wd / "data.json").write_text('{"corpus": ')
  _one_line_error(capsys, tiny_glm_args(small_corpus, wd), "data.json is not valid JSON")


def _cfg(corpus):
  c = cfglib.load_config_file(configs_root() / "glm/pretrain.py", "tiny")
  c.data.corpus = str(corpus)
  return c


def test_generate_without_a_checkpoint_creates_nothing(capsys, tmp_path, small_corpus):
  wd = tmp_path / "wd"
  wd.mkdir()
  (wd / "config.json").write_text(cfglib.to_json(_cfg(small_corpus)))
  _one_line_error(capsys, ["generate", "--workdir", str(wd), "--prompt", "x"], "holds no checkpoint yet")
  assert sorted(p.name for p in wd.iterdir()) == ["config.json"]


@pytest.mark.parametrize("flag, message", [
    ("--max_new_tokens=-3", "--max_new_tokens must be a positive int, got -3"),
    ("--temperature=0", "--temperature must be a positive finite number, got 0.0"),
    ("--temperature=nan", "--temperature must be a positive finite number, got nan"),
    ("--top_p=0", "--top_p must be in (0, 1], got 0.0"),
    ("--top_k=0", "--top_k must be a positive int, got 0"),
    ("--mode=blank", "--mode must be gmask or mask, got 'blank'"),
])
def test_bad_generation_arguments(capsys, tmp_path, flag, message):
  _one_line_error(capsys, ["generate", "--workdir", str(tmp_path), "--prompt", "x", flag], message)


def test_generation_fits_the_context(caplog):
  assert _fit([1] * 10, 40, None) == 40
  assert _fit([1] * 10, 40, 32) == 22 and "generating at most 22 tokens" in caplog.text
  assert _fit([1] * 10, 5, 32) == 5
  with pytest.raises(ValueError, match="the prompt is 32 tokens .* context is 32 tokens"):
    _fit([1] * 32, 5, 32)


def test_restart_is_needed_to_start_over_past_corrupt_checkpoints(tmp_path):
  c = ml_collections.ConfigDict(dict(seed=0, train=dict(
      steps=2, batch=2, lr=1e-2, warmup=0, end_lr_ratio=1.0, weight_decay=0.0, b1=0.9, b2=0.95,
      eps=1e-8, clip=1.0, grad_accum=1, log_every=1, eval_every=0, ckpt_every=1, keep=3,
      on_nonfinite="skip", inject_nan_step=-1, tensorboard=False)))
  (tmp_path / "checkpoints" / "5.corrupt").mkdir(parents=True)
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n')
  loss = lambda m, b, key: (jnp.mean((m(b["x"]) - b["y"]) ** 2), {})
  run = lambda: train(cfg=c, workdir=tmp_path, model=_Linear(), loss_fn=loss,
                      get_batch=lambda s: {"x": np.ones((2, 4), np.float32), "y": np.zeros((2, 1), np.float32)},
                      mesh=make_mesh((1,), ("data",), jax.devices()[:1]), progress=False)
  with pytest.raises(CheckpointError, match=r"holds only unusable checkpoints \(5.corrupt\)"):
    run()
  with wdlib.fresh_start(True):                                     # jaxpapers run --restart
    out = run()
  assert out.resumed_from is None and [h["step"] for h in out.history] == [1, 2]
  assert [r["loss"] for r in metrics.read_metrics(tmp_path)] == [h["loss"] for h in out.history]
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [".files", "1", "2", "5.corrupt"]
