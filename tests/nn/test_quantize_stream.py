"""Streaming quantization from an FP checkpoint (GLM-130B §5 without the FP model in memory):
bitwise the in-memory codes, one layer read at a time, and clear errors."""
import json

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from jaxpapers.core.checkpoint import Checkpointer
from jaxpapers.core.errors import CheckpointError, ConfigError
from jaxpapers.core.mesh import make_mesh
from jaxpapers.core.train import init_state, load_params, make_optimizer
from jaxpapers.glm.model import GLM, GLMConfig
from jaxpapers.nn import quantize_stream as S
from jaxpapers.nn import quantized as Q

CFG = GLMConfig(vocab_size=300, num_layers=8, d_model=64, num_heads=4, dropout=0.0)
TRAIN = ml_collections.ConfigDict({"seed": 0, "train": dict(
    steps=10, lr=1e-3, warmup=0.1, end_lr_ratio=0.1, weight_decay=0.1, b1=0.9, b2=0.95, eps=1e-8,
    clip=1.0, keep=2)})


def _abstract(cfg=CFG):
  return nnx.eval_shape(lambda: GLM(cfg, rngs=nnx.Rngs(params=0)))


def _train_checkpoint(workdir, cfg=CFG, seed=3, step=7):
  """A real training checkpoint (TrainState with AdamW moments) of a random GLM, as the train
  loop writes it under workdir/checkpoints."""
  mesh = make_mesh([-1], ["data"])
  with jax.set_mesh(mesh):
    model = GLM(cfg, rngs=nnx.Rngs(params=seed))
    _, state, _, _ = init_state(TRAIN, model, make_optimizer(TRAIN.train), mesh)
    ckpt = Checkpointer(workdir / "checkpoints", keep=2)
    ckpt.save(step, state, {"step": step})
    ckpt.close()
  return workdir


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return _train_checkpoint(tmp_path_factory.mktemp("train"))


@pytest.fixture(scope="module")
def loaded(workdir):
  """The FP model loaded in full from the training checkpoint, as load_params does."""
  return load_params(TRAIN, workdir, GLM(CFG, rngs=nnx.Rngs(params=99)))


def _counting_reads(monkeypatch):
  """Records (stored shape, read shape, bytes) of every array read from the source."""
  reads, real_read = [], S._read

  def counting_read(store, index):
    x = real_read(store, index)
    reads.append((tuple(store.shape), x.shape, x.nbytes))
    return x

  monkeypatch.setattr(S, "_read", counting_read)
  return reads


def _fp_bytes(cfg):
  return sum(x.size * 4 for x in jax.tree.leaves(nnx.state(_abstract(cfg), nnx.Param)))


@pytest.mark.parametrize("scheme", ["int8", "int4_absmax", "int4_zeropoint", "int4_group"])
def test_streamed_codes_are_bitwise_the_in_memory_quantization(workdir, loaded, tmp_path, scheme,
                                                               monkeypatch):
  s = Q.get_scheme(scheme, 32)          # groups of 32 inputs: several groups per row
  expect = Q.quantize(nnx.clone(loaded), s)
  reads = _counting_reads(monkeypatch)
  stats = S.quantize_checkpoint(workdir / "checkpoints", tmp_path / "q", _abstract(), s)
  assert stats["kind"] == "training" and stats["step"] == 7 and stats["kernels"] == 6
  assert sum(r[2] for r in reads) == _fp_bytes(CFG)   # the params once; no optimizer moments
  got = Q.load_quantized(tmp_path / "q", _abstract())
  assert Q.quantization_of(got) == Q.quantization_of(expect)
  want, have = nnx.to_flat_state(nnx.state(expect)), nnx.to_flat_state(nnx.state(got))
  assert [p for p, _ in want] == [p for p, _ in have]
  for (path, a), (_, b) in zip(want, have):
    assert type(a) is type(b), path
    for x, y in zip(jax.tree.leaves(a.get_value()), jax.tree.leaves(b.get_value())):
      assert x.dtype == y.dtype and x.shape == y.shape, path
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))


def test_stream_reads_each_param_once_and_one_layer_at_a_time(workdir, tmp_path, monkeypatch):
  """On the 8-layer training checkpoint: every kernel read is one layer; the largest read is one
  layer of w_in; the bytes read are the FP params exactly once (never the optimizer moments);
  live jax arrays stay under half the FP model throughout."""
  cfg = CFG
  reads = _counting_reads(monkeypatch)
  start = Q.live_array_bytes()
  live = [start]
  S.quantize_checkpoint(workdir, tmp_path / "q", _abstract(cfg), "int4_absmax",
                        on_step=lambda: live.append(Q.live_array_bytes()))
  E, F, L, H, D = cfg.d_model, cfg.ffn, cfg.num_layers, cfg.num_heads, cfg.head_dim
  kernel_shapes = {(L, E, H, D), (L, H, D, E), (L, E, 2, F), (L, F, E)}
  kernels = [r for r in reads if r[0] in kernel_shapes]
  assert len(kernels) == 6 * L                      # wq wk wv wo w_in w_out, each layer alone
  assert all(r[1] == (1,) + r[0][1:] for r in kernels)
  assert max(r[2] for r in reads) == E * 2 * F * 4   # the largest read: one layer of w_in
  assert sum(r[2] for r in reads) == _fp_bytes(cfg)  # every FP param once, nothing else
  assert len(live) == 1 + 6 * L
  assert max(live) - start < _fp_bytes(cfg) / 2, (max(live) - start, _fp_bytes(cfg))


def test_fp_params_checkpoint_and_command_line(tmp_path, capsys):
  """save_fp_params + `python -m jaxpapers.nn.quantize_stream` (run in-process here) give the
  in-memory codes; a failure is one line and exit code 2."""
  fp = GLM(CFG, rngs=nnx.Rngs(params=5))
  S.save_fp_params(tmp_path / "fp", fp)
  model = json.dumps({"vocab_size": 300, "num_layers": 8, "d_model": 64, "num_heads": 4})
  args = ["--src", str(tmp_path / "fp"), "--dst", str(tmp_path / "q"), "--scheme", "int8",
          "--model", "jaxpapers.glm.quantize_memory:abstract_glm", "--model-args", model]
  assert S.main(args + ["--report", str(tmp_path / "r.json")]) == 0
  report = json.loads((tmp_path / "r.json").read_text())
  assert report["kind"] == "fp_params" and report["vmhwm_bytes"] > 0
  got = Q.load_quantized(tmp_path / "q", _abstract())
  want = Q.quantize(fp, "int8")
  for a, b in zip(jax.tree.leaves(nnx.state(want)), jax.tree.leaves(nnx.state(got))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  capsys.readouterr()
  assert S.main(["--src", str(tmp_path / "none"), *args[2:]]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "no checkpoint at" in err[0]


def test_missing_corrupt_mismatched_or_quantized_sources_are_clear_errors(workdir, tmp_path):
  with pytest.raises(CheckpointError, match="no checkpoint at"):
    S.quantize_checkpoint(tmp_path / "nothing", tmp_path / "q", _abstract(), "int8")
  deeper = GLMConfig(vocab_size=300, num_layers=9, d_model=64, num_heads=4, dropout=0.0)
  with pytest.raises(CheckpointError,
                     match=r"does not fit this model: .* is \[8, .*\] on disk, \[9, "):
    S.quantize_checkpoint(workdir, tmp_path / "q", _abstract(deeper), "int8")
  with pytest.raises(ConfigError, match="unknown quantization scheme 'int3'"):
    S.quantize_checkpoint(workdir, tmp_path / "q", _abstract(), "int3")
  with pytest.raises(CheckpointError, match="holds no FP checkpoint"):
    S.quantize_checkpoint(tmp_path, tmp_path / "q", _abstract(), "int8")
  S.quantize_checkpoint(workdir, tmp_path / "q", _abstract(), "int8")
  with pytest.raises(CheckpointError, match="already holds int8 quantized weights"):
    S.quantize_checkpoint(tmp_path / "q", tmp_path / "q2", _abstract(), "int8")
  import shutil
  broken = tmp_path / "broken"
  shutil.copytree(workdir / "checkpoints" / "7", broken)
  (broken / "state" / "manifest.ocdbt").unlink()
  with pytest.raises(CheckpointError, match="is corrupt: cannot open params"):
    S.quantize_checkpoint(broken, tmp_path / "q3", _abstract(), "int8")
  assert not (tmp_path / "q3").exists()
