"""CogVideo's transformer: stage-1/stage-2 and shifted-window masks against hand-built ones, the
gate, inheritance and frozen weights, cached sampling, 1 vs 8 devices, INT8 and GACT hooks."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from jaxpapers.cogvideo.layout import (image_layout, make_layout, spatial_mask, stage1_layout,
                                       stage2_layout, temporal_mask, window_of)
from jaxpapers.cogvideo.model import CogVideo, CogVideoConfig, inherit, mix, trainable_names
from jaxpapers.cogvideo.sample import cached_logits, full_logits, generate
from jaxpapers.cogvideo.sequences import assemble, batch_logits, code_nll, loss_fn
from jaxpapers.core.mesh import make_mesh
from jaxpapers.core.train import train
from jp_testutil import assert_close_scaled

CFG = CogVideoConfig(text_vocab=17, codebook=16, num_layers=2, d_model=32, num_heads=2, ffn_dim=64)


# -- masks ---------------------------------------------------------------------------------------
# A tiny layout written out by hand: one text token, frames of one code (grid 1), three frames.
# Stage 2 order [f0 f2 | f1]: positions 0 text; 1-2 f0 (BOI, code); 3-4 f2; 5-6 f1.

def test_stage2_masks_equal_hand_built():
  """§3.1 stage 2 (release `attention_mask_local_interp`): given frames see the text and each
  other both ways (temporal) / their own frame both ways (spatial); the generated frame sees the
  given frames and itself causally; the text sees the text only."""
  lay = make_layout(1, 1, [0, 2, 1], [True, True, False])
  spatial = np.array([[1, 0, 0, 0, 0, 0, 0],
                      [1, 1, 1, 0, 0, 0, 0],
                      [1, 1, 1, 0, 0, 0, 0],
                      [1, 0, 0, 1, 1, 0, 0],
                      [1, 0, 0, 1, 1, 0, 0],
                      [1, 0, 0, 0, 0, 1, 0],
                      [1, 0, 0, 0, 0, 1, 1]], bool)
  temporal = np.array([[1, 0, 0, 0, 0, 0, 0],
                       [1, 1, 1, 1, 1, 0, 0],
                       [1, 1, 1, 1, 1, 0, 0],
                       [1, 1, 1, 1, 1, 0, 0],
                       [1, 1, 1, 1, 1, 0, 0],
                       [1, 1, 1, 1, 1, 1, 0],
                       [1, 1, 1, 1, 1, 1, 1]], bool)
  np.testing.assert_array_equal(spatial_mask(lay), spatial)
  np.testing.assert_array_equal(temporal_mask(lay, 1, 0), temporal)


def test_stage1_masks_equal_hand_built():
  """§3.1 stage 1 (release `FullAttentionMixin`): causal over the flattened frames in the
  temporal channel; the spatial channel sees the text and its own frame causally."""
  lay = stage1_layout(1, 1, 3)
  spatial = np.array([[1, 0, 0, 0, 0, 0, 0],
                      [1, 1, 0, 0, 0, 0, 0],
                      [1, 1, 1, 0, 0, 0, 0],
                      [1, 0, 0, 1, 0, 0, 0],
                      [1, 0, 0, 1, 1, 0, 0],
                      [1, 0, 0, 0, 0, 1, 0],
                      [1, 0, 0, 0, 0, 1, 1]], bool)
  temporal = np.tril(np.ones((7, 7), bool))
  temporal[0, 1:] = False
  np.testing.assert_array_equal(spatial_mask(lay), spatial)
  np.testing.assert_array_equal(temporal_mask(lay, 1, 0), temporal)
  assert not stage1_layout(1, 1, 3).windowed and stage2_layout(1, 1, 3).windowed


def test_swin_windows_and_regions_equal_hand_built():
  """§3.3 with Swin's cyclic shift (release: roll by -window/2 on odd layers, region mask)."""
  cells = np.arange(16)
  w0, r0 = window_of(cells, 4, 2, 0)
  np.testing.assert_array_equal(w0.reshape(4, 4), [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
  assert (r0 == 0).all()
  w1, r1 = window_of(cells, 4, 2, 1)
  np.testing.assert_array_equal(w1.reshape(4, 4), [[3, 2, 2, 3], [1, 0, 0, 1], [1, 0, 0, 1], [3, 2, 2, 3]])
  # who attends whom in the shifted layer (same window and region), by (row, col):
  group = lambda c: {int(k) for k in cells if w1[k] == w1[c] and r1[k] == r1[c]}
  assert group(5) == {5, 6, 9, 10}        # the centre window is whole
  assert group(0) == {0}                  # a corner: its window's other cells wrapped around
  assert group(1) == {1, 2}               # top edge: rows 0 and 3 are different regions
  assert group(13) == {13, 14}            # bottom edge


def test_stage2_masks_of_five_frames_equal_hand_built():
  """The paper's 5-frame stage 2, grid 1: [text | f0 f2 f4 | f1 f3]; f3 sees f1, no given frame
  sees a generated one, f1 does not see f3."""
  lay = stage2_layout(1, 1, 5)
  G = "1" * 7                                   # text + three given blocks
  temporal = np.array([[int(ch) for ch in row] for row in [
      "10000000000",
      G + "0000", G + "0000", G + "0000", G + "0000", G + "0000", G + "0000",
      G + "1000", G + "1100",                   # f1: given + itself causally
      G + "1110", G + "1111"]], bool)           # f3: given + f1 + itself causally
  np.testing.assert_array_equal(temporal_mask(lay, 1, 0), temporal)
  spatial = np.zeros((11, 11), bool)
  spatial[:, 0] = True
  for a, b in ((1, 3), (3, 5), (5, 7)):         # given blocks: their own frame both ways
    spatial[a:b, a:b] = True
  spatial[7, 7] = spatial[8, 7:9] = spatial[9, 9] = spatial[10, 9:11] = True
  np.testing.assert_array_equal(spatial_mask(lay), spatial)


# cells of the 4x4 grid that a query predicting cell q sees in a key frame, by hand
UNSHIFTED = {0: {0, 1, 4, 5}, 5: {0, 1, 4, 5}, 6: {2, 3, 6, 7}, 10: {10, 11, 14, 15}, 15: {10, 11, 14, 15}}
SHIFTED = {5: {5, 6, 9, 10}, 10: {5, 6, 9, 10}, 0: {0}, 1: {1, 2}, 4: {4, 8}, 15: {15}}


@pytest.mark.parametrize("shift, expected", [(0, UNSHIFTED), (1, SHIFTED)])
def test_shifted_window_temporal_mask_equals_hand_built_windows(shift, expected):
  """Stage 2, grid 4, window 2: a generated query sees, in every key frame, the codes of its
  target cell's window (unshifted: the 2x2 tile; shifted: its Swin region), the text always, in
  its own frame only earlier positions, and nothing of the later generated frame."""
  lay = stage2_layout(2, 4, 5)
  m = temporal_mask(lay, 2, shift)
  b = 3                                            # the first generated block (time 1)
  for target, cells in expected.items():
    q = lay.block_start(b) + target                # the position that predicts `target`
    assert lay.wcell[q] == target
    assert m[q, :2].all()                          # the text
    for blk in range(5):
      s0 = lay.block_start(blk)
      seen = {int(lay.cell[p]) for p in range(s0 + 1, s0 + 17) if m[q, p]}
      if blk < 3:
        assert seen == cells, (target, blk, seen)
      elif blk == b:
        assert seen == {c for c in cells if lay.block_start(b) + 1 + c <= q}, (target, seen)
      else:
        assert not seen


# -- the model -----------------------------------------------------------------------------------

@functools.cache
def _image():
  return CogVideo(CFG, rngs=nnx.Rngs(params=0))


@functools.cache
def _video_once(freeze):
  return inherit(CogVideo(CFG.video(freeze), rngs=nnx.Rngs(params=1)), _image())


def _video(freeze=True):
  """A fresh copy (tests change and train it) of one inherited video model."""
  return nnx.clone(_video_once(freeze))


def _tokens(lay, rows=2, seed=0):
  rng = np.random.default_rng(seed)
  tok = rng.integers(CFG.text_vocab, CFG.text_vocab + CFG.codebook, (rows, lay.length))
  tok[:, :CFG.text_len] = rng.integers(1, CFG.text_vocab, (rows, CFG.text_len))
  tok[:, CFG.text_len - 3:CFG.text_len] = 0             # padding
  tok[:, lay.cell == CFG.grid * CFG.grid] = CFG.boi
  return jnp.asarray(tok)


def test_gate_at_initialisation_mixes_half_and_half():
  """§3.2: out = alpha * spatial + (1 - alpha) * temporal, alpha = sigmoid(gate) = 0.5 at
  initialisation (release: zeros); on the model, alpha -> 1 leaves the spatial channel alone (the
  spatial-only logits) and alpha -> 0 does not."""
  v = _video()
  assert (np.asarray(v.gate[...]) == 0).all()
  s, t = jnp.full((1, 2, 3), 2.0), jnp.full((1, 2, 3), -4.0)
  np.testing.assert_allclose(mix(s, t, jnp.zeros(3)), jnp.full((1, 2, 3), -1.0))
  lay = stage1_layout(CFG.text_len, CFG.grid, CFG.num_frames)
  tok = _tokens(lay)
  only = full_logits(v, tok, lay, spatial_only=True)
  v.gate.set_value(jnp.full(v.gate.shape, 40.0))
  assert_close_scaled(full_logits(v, tok, lay), only, 1e-5)
  v.gate.set_value(jnp.full(v.gate.shape, -40.0))
  assert np.abs(np.asarray(full_logits(v, tok, lay) - only)).max() > 0.1 * np.abs(np.asarray(only)).max()


def test_inherited_model_computes_the_image_model_when_the_temporal_channel_copies_it():
  """With the temporal channel's output projection copied from the spatial one and its mask equal
  to the spatial mask, both channels agree, so any gate mix gives the image model's logits;
  the spatial-only path (release `enforce_no_swin`, used for the first frame) does so always."""
  lay = stage1_layout(CFG.text_len, CFG.grid, CFG.num_frames)
  img_lay = image_layout(CFG.text_len, CFG.grid)
  tok = _tokens(lay)
  ref = full_logits(_image(), tok[:, :img_lay.length], img_lay)
  v = _video()
  only = full_logits(v, tok, lay, spatial_only=True)
  assert_close_scaled(only[:, :img_lay.length], ref, 1e-6)
  v.wo_t.set_value(v.wo_s.get_value())
  v.gate.set_value(jnp.full(v.gate.shape, 0.7))
  from jaxpapers.cogvideo.sample import batch_layout
  arrays, masks = batch_layout([img_lay] * 2, np.asarray(tok[:, :img_lay.length]), CFG)
  masks["temporal"] = np.stack([masks["spatial"], masks["spatial"]])
  assert_close_scaled(v(tok[:, :img_lay.length], arrays, masks), ref, 1e-5)


def test_only_the_new_parameters_train_and_the_spatial_channel_is_unchanged(tmp_path):
  """§3.2 / release `disable_untrainable_params`: every inherited weight frozen; after training,
  the spatial channel (and all inherited weights) are bitwise unchanged, the new ones moved."""
  v = _video()
  assert set(trainable_names(v)) == {"wqkv_t", "bqkv_t", "wo_t", "bo_t", "gate", "frame_pos"}
  before = {n: np.asarray(getattr(v, n).get_value()) for n in vars(v) if isinstance(getattr(v, n), nnx.Param)}
  out = train(cfg=_train_cfg(3), workdir=tmp_path, model=v, loss_fn=loss_fn, get_batch=_batches(),
              mesh=make_mesh([1], ["data"], jax.devices()[:1]), progress=False)
  after = out.model()
  for n, b in before.items():
    a = np.asarray(getattr(after, n).get_value())
    if n in trainable_names(v):
      assert not np.array_equal(a, b), n
    else:
      np.testing.assert_array_equal(a, b, err_msg=n)


def _train_cfg(steps):
  return ml_collections.ConfigDict({"seed": 0, "train": dict(
      steps=steps, batch=4, lr=1e-2, warmup=1, end_lr_ratio=0.1, weight_decay=0.01, b1=0.9, b2=0.95,
      eps=1e-8, clip=1.0, grad_accum=1, log_every=1, eval_every=0, ckpt_every=0, keep=1,
      on_nonfinite="stop", inject_nan_step=-1, tensorboard=False)})


def _batches():
  """A batch of 4 rows: two stage-1 and two stage-2 sequences (random codes)."""
  def get(step):
    rows = []
    for i, lay in enumerate((stage1_layout(CFG.text_len, CFG.grid, 5), stage2_layout(CFG.text_len, CFG.grid, 5))):
      rows.append((lay, np.asarray(_tokens(lay, 2, seed=step * 2 + i)), np.ones(5, bool)))
    return assemble(rows, CFG)
  return get


@pytest.mark.parametrize("stage", ["image", "stage1", "stage2"])
def test_cached_equals_uncached(stage):
  """Generation's path (prefill into the KV cache, then one position at a time) computes the
  same logits as one pass over the whole sequence; stage 2 prefills the given key frames."""
  lay = {"image": image_layout(CFG.text_len, CFG.grid),
         "stage1": stage1_layout(CFG.text_len, CFG.grid, 5),
         "stage2": stage2_layout(CFG.text_len, CFG.grid, 5)}[stage]
  model = _image() if stage == "image" else _video()
  tok = _tokens(lay)
  prefill = lay.block_start(3) if stage == "stage2" else CFG.text_len + 3
  assert_close_scaled(cached_logits(model, tok, lay, prefill), full_logits(model, tok, lay), 1e-5)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_sampler_equals_greedy_decoding_with_the_uncached_model(guidance):
  """`generate` (prefill, KV cache, classifier-free guidance rows) with top-1 sampling fills the
  generated frames exactly as greedy decoding that reruns the whole sequence uncached, position
  by position, with logits u + g (c - u) (u: the caption padded)."""
  lay = stage2_layout(CFG.text_len, CFG.grid, 5)
  tok = np.asarray(_tokens(lay))
  v = _video()
  out = generate(v, lay, tok, jax.random.key(0), guidance=guidance, top_k=1)
  uncond = tok.copy()
  uncond[:, 1:CFG.text_len] = CFG.pad_id
  ref = tok.copy()
  from jaxpapers.cogvideo.sample import batch_layout
  graphdef, state = nnx.split(v)
  logits_of = jax.jit(lambda st, t, a, m: nnx.merge(graphdef, st)(t, a, m))
  cond_lay, uncond_lay = batch_layout([lay] * 2, tok, CFG), batch_layout([lay] * 2, uncond, CFG)
  for p in np.flatnonzero(lay.generated_targets()):
    c = np.asarray(logits_of(state, jnp.asarray(ref), *cond_lay))[:, p]
    u_tok = ref.copy()
    u_tok[:, :CFG.text_len] = uncond[:, :CFG.text_len]
    u = np.asarray(logits_of(state, jnp.asarray(u_tok), *uncond_lay))[:, p] if guidance != 1.0 else c
    ref[:, p + 1] = np.argmax(u + guidance * (c - u), -1) + CFG.text_vocab
  np.testing.assert_array_equal(out, ref)


def test_one_and_eight_devices_compute_equal_losses_and_gradients():
  """Data parallel over 8 fake devices (parameters placed by their logical axes, the batch split
  on "data") computes the loss and gradients of one device."""
  from jaxpapers.core.mesh import state_shardings
  from jax.sharding import NamedSharding, PartitionSpec as P
  batch = _batches8()(0)
  graphdef, params = nnx.split(_video(False), nnx.Param)
  grad_fn = lambda p, b: jax.value_and_grad(lambda q: loss_fn(nnx.merge(graphdef, q), b, None)[0])(p)
  outs = []
  for n in (1, 8):
    mesh = make_mesh([n], ["data"], jax.devices()[:n])
    with jax.set_mesh(mesh):
      p = jax.device_put(params, state_shardings(params, mesh))
      b = {k: jax.device_put(v, NamedSharding(mesh, P("data"))) for k, v in batch.items()}
      loss, g = jax.jit(grad_fn)(p, b)
      if n == 8:
        assert len(b["tokens"].sharding.device_set) == 8
      outs.append(jax.tree.map(np.asarray, (loss, g)))
  assert_close_scaled(outs[1][0], outs[0][0], 1e-5)
  assert_close_scaled(outs[1][1], outs[0][1], 1e-4, per_leaf=False)


def _batches8():
  get4 = _batches()
  def get(step):
    a, b = get4(2 * step), get4(2 * step + 1)
    return {k: np.concatenate([a[k], b[k]]) for k in a}
  return get


def test_int8_weights_apply_through_the_quantization_hook():
  """nn.quantized.quantize turns every dense kernel (both channels, FFN, head) into INT8; the
  logits stay close to the FP model's (GLM-130B §5's scheme on another model family)."""
  from jaxpapers.nn.quantized import QuantizedParam, quantize
  lay = stage1_layout(CFG.text_len, CFG.grid, 5)
  tok = _tokens(lay)
  v = _video()
  ref = full_logits(v, tok, lay)
  q = quantize(_video(), "int8")
  kinds = {n for n, var in vars(q).items() if isinstance(var, QuantizedParam)}
  assert kinds == {"wqkv_s", "wo_s", "wqkv_t", "wo_t", "w1", "w2", "head"}
  assert_close_scaled(full_logits(q, tok, lay), ref, 0.05)
  generate(q, lay, np.asarray(tok), jax.random.key(0), top_k=4)     # and it samples


def test_gact_compresses_the_layers_through_the_layer_wrapper_hook():
  """GACT's compress_block around each scanned layer (recompute mode: the saved layer input
  goes through the compressor and the backward re-runs the layer): at 32 bits the gradients are
  the exact ones. (Its approximation at fewer bits is tested on GLM in tests/gact.)"""
  from jaxpapers.gact.wrapper import compress_block
  batch = _batches()(0)
  graphdef, params = nnx.split(_video(False), nnx.Param)

  def grads(wrapper):
    def loss(p):
      logits = batch_logits(nnx.merge(graphdef, p), batch, layer_wrapper=wrapper)
      nll = code_nll(logits, batch["targets"])
      return (nll * batch["weights"]).sum() / batch["weights"].sum()
    return jax.tree.map(np.asarray, jax.grad(loss)(params))

  exact = grads(None)
  assert_close_scaled(grads(lambda fn: compress_block(fn, 32, "recompute")), exact, 1e-5, per_leaf=False)
