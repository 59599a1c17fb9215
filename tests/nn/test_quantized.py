"""Post-training quantization of whole models (GLM-130B §5): the pass, the forward, decode
memory, quantized checkpoints and their errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxpapers.core.errors import CheckpointError, ConfigError
from jaxpapers.glm.model import GLM, GLMConfig
from jaxpapers.nn import quantized as Q
from jp_testutil import assert_close_scaled
from pallas_kernels.int_quant import QuantizedWeight, dequantize, quantize as quantize_matrix

CFG = GLMConfig(vocab_size=300, num_layers=2, d_model=64, num_heads=4, dropout=0.0)


def _glm(cfg=CFG, seed=0):
  return GLM(cfg, rngs=nnx.Rngs(params=seed))


def _inputs(T=12):
  return jnp.arange(T)[None] * 7 % 300, jnp.arange(T)[None], jnp.array([T // 2])


def _dequantized_fp(model_q, model_fp):
  """An FP model whose kernels are exactly the dequantized codes of `model_q`."""
  fp = nnx.clone(model_fp)
  for name in ("wq", "wk", "wv", "wo", "w_in", "w_out"):
    qw = getattr(model_q, name).get_value()
    shape = getattr(fp, name).get_value().shape
    L = shape[0]
    layers = [dequantize(jax.tree.map(lambda a: a[l], qw)).T for l in range(L)]   # [K, N]
    getattr(fp, name).set_value(jnp.stack(layers).reshape(shape))
  return fp


@pytest.mark.parametrize("scheme", list(Q.SCHEMES))
def test_quantized_glm_equals_fp_glm_on_the_dequantized_weights(scheme):
  fp = _glm()
  qm = Q.quantize(nnx.clone(fp), Q.get_scheme(scheme, 32))
  kinds = {name: type(getattr(qm, name)).__name__ for name in GLM.LAYER_PARAMS + ("embed",)}
  assert all(kinds[n] == "QuantizedParam" for n in ("wq", "wk", "wv", "wo", "w_in", "w_out"))
  assert kinds["embed"] == "Param" and kinds["ln1_scale"] == "Param" and kinds["bq"] == "Param"
  ref = _dequantized_fp(qm, fp)
  for T in (12, 40):   # 12 rows: the FFI decode kernel; 40 rows: the tiled XLA path
    args = _inputs(T)
    assert_close_scaled(qm(*args), ref(*args), 2e-4)


def test_stacked_kernels_are_quantized_layer_by_layer_as_single_matrices():
  fp = _glm()
  qw = Q.quantize_kernel(fp.wo.get_value(), 2, 1, Q.get_scheme("int4_absmax"))   # [L, H, D, E]
  assert qw.q.shape == (2, 64, 32) and qw.out_shape == (64,) and qw.in_features == 64
  for l in range(2):
    direct = quantize_matrix(fp.wo.get_value()[l].reshape(64, 64).T, 4)
    np.testing.assert_array_equal(np.asarray(qw.q[l]), np.asarray(direct.q))
    np.testing.assert_array_equal(np.asarray(qw.scale[l]), np.asarray(direct.scale))


def test_dense_contracts_like_tensordot_for_both_kernel_kinds():
  w = jax.random.normal(jax.random.key(0), (4, 8, 6))          # [in, in, out]: n_in = 2
  x = jax.random.normal(jax.random.key(1), (3, 5, 4, 8))
  assert_close_scaled(Q.dense(x, w, 2), jnp.einsum("btij,ijo->bto", x, w), 1e-5)
  qw = Q.quantize_kernel(w, 2, 0, Q.get_scheme("int8"))
  deq = dequantize(qw).T.reshape(4, 8, 6)
  assert_close_scaled(Q.dense(x, qw, 2), jnp.einsum("btij,ijo->bto", x, deq), 1e-4)
  with pytest.raises(ConfigError, match="do not match"):
    Q.dense(x[..., :4], qw, 2)
  # an FP kernel held for decoding: the CPU decode kernel for <= 16 rows, XLA's dot above
  for rows in (1, 3, 17):
    xr = jax.random.normal(jax.random.key(rows), (rows, 4, 8))
    assert_close_scaled(Q.dense(xr, Q.DecodeKernel(w), 2), jnp.einsum("bij,ijo->bo", xr, w), 1e-5)
  with pytest.raises(ConfigError, match="do not match"):
    Q.dense(x.swapaxes(-1, -2), Q.DecodeKernel(w), 2)


def test_fp_decode_weights_hold_dense_kernels_for_the_decode_kernel():
  weights = _glm().decode_weights()
  layer = weights["layers"][0]
  assert {n for n, v in layer.items() if isinstance(v, Q.DecodeKernel)} == {
      "wq", "wk", "wv", "wo", "w_in", "w_out"}
  plain = Q.plain_kernels(weights)
  assert not any(isinstance(v, Q.DecodeKernel) for v in plain["layers"][0].values())
  assert plain["layers"][0]["wq"] is layer["wq"].w
  q_layer = Q.quantize(_glm(), "int8").decode_weights()["layers"][0]
  assert isinstance(q_layer["wq"], QuantizedWeight) and not isinstance(q_layer["bq"], Q.DecodeKernel)


def test_any_model_of_nnx_linear_layers_quantizes_without_model_code():
  class MLP(nnx.Module):
    def __init__(self, rngs):
      self.layers = nnx.List([nnx.Linear(32, 64, rngs=rngs), nnx.Linear(64, 16, rngs=rngs)])

    def __call__(self, x):
      return self.layers[1](jax.nn.relu(self.layers[0](x)))

  m = MLP(nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(2), (3, 32))
  expect = []
  h = x
  for i, layer in enumerate(m.layers):
    qw = quantize_matrix(layer.kernel.get_value().T, 4, None, True)
    h = h @ dequantize(qw).T + layer.bias.get_value()
    h = jax.nn.relu(h) if i == 0 else h
  qm = Q.quantize(m, "int4_zeropoint")
  assert all(isinstance(l, Q.QuantizedDense) for l in qm.layers)
  assert_close_scaled(qm(x), h, 1e-4)


def test_quantized_decode_with_cache_equals_full_recomputation():
  qm = Q.quantize(_glm(), "int4_absmax")
  tok, pos, ctx = _inputs(10)
  cache = qm.init_cache(1, 10)
  _, cache = qm(tok[:, :6], pos[:, :6], ctx, cache=cache, cache_index=0)
  for i in range(6, 8):
    step, cache = qm(tok[:, i:i + 1], pos[:, i:i + 1], ctx, cache=cache, cache_index=i)
    full = qm(tok[:, :i + 1], pos[:, :i + 1], ctx)
    assert_close_scaled(step[:, 0], full[:, i], 1e-5)


def test_decode_step_copies_no_layer_weights():
  """XLA's compiled temporaries of a batch-1 decode step, FP32 and INT4 alike, stay far below
  one layer's weights: each layer's arrays are read where they are (a scan over the stacked
  weights copied one layer out per layer and token), and INT4 never builds an FP32 kernel."""
  from jaxpapers.glm.quantize_experiment import _decode_step_memory
  cfg = GLMConfig(vocab_size=300, num_layers=2, d_model=256, num_heads=4, dropout=0.0)
  fp = _glm(cfg)
  largest = max(np.prod(getattr(fp, n).get_value().shape[1:]) * 4 for n in ("w_in", "w_out", "wq"))
  q_layer = Q.weight_bytes(Q.quantize(_glm(cfg), "int4_absmax"), kernels_only=True) // cfg.num_layers
  mem_fp = _decode_step_memory(cfg, fp.decode_weights(), 4, 8)
  mem_q = _decode_step_memory(cfg, Q.quantize(fp, "int4_absmax").decode_weights(), 4, 8)
  assert mem_fp["temp_bytes"] < 0.25 * largest, (mem_fp, largest)
  assert mem_q["temp_bytes"] < 0.5 * q_layer < 0.25 * largest, (mem_q, q_layer, largest)
  assert mem_q["argument_bytes"] < 0.3 * mem_fp["argument_bytes"]


def test_decode_memory_child_reports_rss_of_its_decode(tmp_path):
  """The decode-memory child's body, run in this process: RSS before decoding at least covers
  the weights it holds, and the peak during decoding is at least that."""
  import json as json_
  from jaxpapers.glm import decode_memory
  report = tmp_path / "r.json"
  model = dict(vocab_size=300, num_layers=2, d_model=64, num_heads=4)
  assert decode_memory.main(["--model", json_.dumps(model), "--scheme", "int4_absmax",
                             "--prompt-len", "3", "--new-tokens", "2", "--report", str(report)]) == 0
  r = json_.loads(report.read_text())
  assert r["peak_rss_bytes"] >= r["ready_rss_bytes"] > r["weight_bytes"] > 0
  assert r["seconds_per_token"] > 0
  assert decode_memory.main(["--model", json_.dumps(model), "--scheme", "int3",
                             "--report", str(report)]) == 2


def test_quantize_holds_the_fp_model_plus_about_one_layer():
  """Sampled after every layer: live arrays never exceed the FP model + codes + one FP layer."""
  cfg = GLMConfig(vocab_size=300, num_layers=8, d_model=256, num_heads=8, dropout=0.0)
  m = _glm(cfg)
  jax.block_until_ready(nnx.state(m))
  start = Q.live_array_bytes()
  peak = [start]
  Q.quantize(m, "int4_absmax", on_step=lambda: peak.append(Q.live_array_bytes()))
  codes = Q.weight_bytes(m, kernels_only=True)
  fp_layer = max(np.prod(getattr(_glm(cfg), n).get_value().shape[1:]) * 4 for n in ("w_in", "w_out"))
  assert len(peak) == 1 + 6 * cfg.num_layers
  assert max(peak) - start <= codes + 2 * fp_layer, (max(peak) - start, codes, fp_layer)
  assert Q.live_array_bytes() < start      # the FP kernels are gone once quantized


def test_quantized_checkpoint_round_trip_and_mismatch_errors(tmp_path):
  scheme = Q.get_scheme("int4_group", 32)
  qm = Q.quantize(_glm(), scheme)
  path = Q.save_quantized(tmp_path / "q", qm, scheme)
  assert (tmp_path / "q").is_dir() and not (tmp_path / "q.tmp").exists()
  back = Q.load_quantized(path, nnx.eval_shape(lambda: _glm()))
  assert back.w_in.get_value().q.dtype == jnp.uint8        # INT4 stays packed on disk and back
  for a, b in zip(jax.tree.leaves(nnx.state(qm)), jax.tree.leaves(nnx.state(back))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(np.asarray(back(*_inputs())), np.asarray(qm(*_inputs())))
  # saved again over the good copy: still loadable
  Q.save_quantized(tmp_path / "q", qm, scheme)
  Q.load_quantized(path, _glm())
  with pytest.raises(CheckpointError, match="do not fit this model"):
    Q.load_quantized(path, _glm(GLMConfig(vocab_size=300, num_layers=2, d_model=128, num_heads=4)))
  with pytest.raises(CheckpointError, match="not an already quantized"):
    Q.load_quantized(path, qm)
  with pytest.raises(CheckpointError, match="does not hold quantized weights"):
    Q.load_quantized(tmp_path, _glm())
  with pytest.raises(CheckpointError, match="needs a quantized model"):
    Q.save_quantized(tmp_path / "fp", _glm(), "int8")


def test_fp_loaders_refuse_quantized_weights_and_models(tmp_path):
  import ml_collections
  from jaxpapers.core.train import load_params
  qm = Q.quantize(_glm(), "int8")
  Q.save_quantized(tmp_path / "checkpoints", qm, "int8")
  cfg = ml_collections.ConfigDict({"train": {"keep": 1}})
  with pytest.raises(CheckpointError, match="int8 quantized weights; a full-precision model"):
    load_params(cfg, tmp_path, _glm())
  with pytest.raises(CheckpointError, match="this one is quantized"):
    load_params(cfg, tmp_path, qm)


def test_bad_schemes_are_clear_errors():
  with pytest.raises(ConfigError, match="unknown quantization scheme 'int3'"):
    Q.get_scheme("int3")
  with pytest.raises(ConfigError, match="unsupported bit width 3"):
    quantize_matrix(jnp.ones((4, 8)), 3)
  with pytest.raises(ConfigError, match="not divisible by the group size 48"):
    Q.quantize(_glm(), Q.get_scheme("int4_group", 48))
  with pytest.raises(ConfigError, match="already quantized"):
    Q.quantize(Q.quantize(_glm(), "int8"), "int8")
  with pytest.raises(ConfigError, match="no dense kernels"):
    Q.quantize(nnx.Sequential(nnx.LayerNorm(4, rngs=nnx.Rngs(0))), "int8")
