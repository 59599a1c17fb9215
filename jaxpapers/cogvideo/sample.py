"""Batches of layouts and masks, and sampling with a KV cache and classifier-free guidance
(CogVideo, arXiv 2205.15868 §3.1; guidance: Ho & Salimans 2021, as CogView2 samples)."""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxpapers.cogvideo.layout import (Layout, layer_shift, make_layout, spatial_mask,
                                       temporal_mask)
from jaxpapers.cogvideo.model import CogVideo, CogVideoConfig
from jaxpapers.nn.sampling import sample_logits


@functools.lru_cache(maxsize=64)
def _masks_np(text_len: int, grid: int, times: tuple, given: tuple, windowed: bool, window: int):
  lay = make_layout(text_len, grid, times, given, windowed)
  w = window if windowed else grid
  return (spatial_mask(lay),
          np.stack([temporal_mask(lay, w, layer_shift(l, w)) for l in (0, 1)]))


def layout_masks(lay: Layout, window: int) -> tuple[np.ndarray, np.ndarray]:
  """(spatial [T, T], temporal [2, T, T]: even and odd layers) of a layout; the temporal
  channel windowed (`window` cells per side, shifted in odd layers) when the layout says so."""
  return _masks_np(lay.text_len, lay.grid, tuple(int(t) for t in lay.time[lay.cell == 0]),
                   tuple(int(g) for g in lay.given[lay.cell == 0]), lay.windowed, window)


def batch_layout(layouts: list[Layout], tokens: np.ndarray, cfg: CogVideoConfig) -> tuple[dict, dict]:
  """Layout arrays [B, T], "offset" [B] (= 0), "text_ok" [B, text_len] (not padding), and masks
  {"spatial" [B,T,T], "temporal" [2,B,T,T]} of one layout per row (rows may mix stages)."""
  lay = {k: np.stack([l.arrays()[k] for l in layouts]) for k in ("block", "time", "cell")}
  lay["offset"] = np.zeros(len(layouts), np.int32)
  lay["text_ok"] = np.asarray(tokens)[:, :cfg.text_len] != cfg.pad_id
  ms = [layout_masks(l, cfg.window) for l in layouts]
  masks = {"spatial": np.stack([m[0] for m in ms]),
           "temporal": np.stack([m[1] for m in ms], axis=1)}
  return lay, masks


def full_logits(model: CogVideo, tokens, lay: Layout, spatial_only: bool = False):
  """Logits [B, T, K] of the whole sequence in one uncached pass (training's forward)."""
  arrays, masks = batch_layout([lay] * tokens.shape[0], tokens, model.cfg)
  return model(tokens, arrays, masks, spatial_only=spatial_only)


def _rows(lay_arrays, masks, start, size):
  """Layout arrays and mask rows of positions start..start+size-1 (all keys kept)."""
  sl = lambda a: jax.lax.dynamic_slice_in_dim(a, start, size, axis=-1)
  arrays = {k: sl(v) for k, v in lay_arrays.items() if k not in ("offset", "text_ok")}
  arrays["text_ok"] = lay_arrays["text_ok"]
  arrays["offset"] = jnp.full(lay_arrays["offset"].shape, start, jnp.int32)
  row = lambda m: jax.lax.dynamic_slice_in_dim(m, start, size, axis=-2)
  return arrays, {"spatial": row(masks["spatial"]), "temporal": row(masks["temporal"])}


def cached_logits(model: CogVideo, tokens, lay: Layout, prefill: int, spatial_only: bool = False):
  """Logits [B, T, K] computed as generation does: positions [0, prefill) in one pass into the
  KV cache, then one position at a time (teacher-forced). Must equal `full_logits`."""
  B, T = tokens.shape
  arrays, masks = batch_layout([lay] * B, np.asarray(tokens), model.cfg)
  arrays, masks = jax.tree.map(jnp.asarray, (arrays, masks))
  graphdef, params = nnx.split(model)

  @functools.partial(jax.jit, static_argnames=("size",))
  def run(params, tokens, cache, start, size):
    a, m = _rows(arrays, masks, start, size)
    tok = jax.lax.dynamic_slice_in_dim(tokens, start, size, axis=1)
    return nnx.merge(graphdef, params)(tok, a, m, cache=cache, cache_index=start,
                                       spatial_only=spatial_only)

  first, cache = run(params, tokens, model.init_cache(B, T), 0, prefill)
  outs = [first]
  for p in range(prefill, T):
    logit, cache = run(params, tokens, cache, p, 1)
    outs.append(logit)
  return jnp.concatenate(outs, axis=1)


@functools.partial(jax.jit, static_argnames=("graphdef", "prefill", "cond_rows", "top_k",
                                             "temperature", "spatial_only"))
def _generate(graphdef, params, tokens, gen_targets, arrays, masks, key, guidance, n0, *,
              temperature: float, prefill: int, cond_rows: int, top_k: int, spatial_only: bool):
  """tokens [R, T]: R = cond_rows (no guidance) or 2 * cond_rows ([cond; uncond] rows).
  Positions [0, prefill) go into the cache in one pass, the rest one at a time; a token is
  sampled at p+1 for every p >= n0 (traced: one program serves any number of given frames) whose
  target is generated, the others are fed as they are."""
  model = nnx.merge(graphdef, params)
  cfg: CogVideoConfig = model.cfg
  R, T = tokens.shape
  B = cond_rows
  guided = R != B

  def pick(logits, key):
    lg = logits[:, -1]
    if guided:
      c, u = lg[:B], lg[B:]
      lg = u + guidance * (c - u)
    code = sample_logits(lg, key, "top_k", top_k=top_k, temperature=temperature)
    code = code + cfg.text_vocab                        # image codes follow the text ids
    return jnp.concatenate([code, code], axis=0) if guided else code

  def put(tokens, p, new):   # write token p+1 where generation samples it
    old = jax.lax.dynamic_slice_in_dim(tokens, p + 1, 1, axis=1)[:, 0]
    val = jnp.where(gen_targets[p] & (p >= n0), new, old)
    return jax.lax.dynamic_update_slice_in_dim(tokens, val[:, None].astype(tokens.dtype), p + 1, 1)

  cache = model.init_cache(R, T)
  a, m = _rows(arrays, masks, 0, prefill)
  logits, cache = model(tokens[:, :prefill], a, m, cache=cache, cache_index=0,
                        spatial_only=spatial_only)
  tokens = put(tokens, prefill - 1, pick(logits, jax.random.fold_in(key, prefill - 1)))

  def step(p, carry):
    tokens, cache = carry
    a, m = _rows(arrays, masks, p, 1)
    tok = jax.lax.dynamic_slice_in_dim(tokens, p, 1, axis=1)
    logits, cache = model(tok, a, m, cache=cache, cache_index=p, spatial_only=spatial_only)
    return put(tokens, p, pick(logits, jax.random.fold_in(key, p))), cache

  tokens, _ = jax.lax.fori_loop(prefill, T - 1, step, (tokens, cache))
  return tokens[:B]


def _sampling_split(model: CogVideo):
  """(graphdef, state) for sampling, the graphdef of the same model without `frozen` marks (an
  inherited and a scratch model of one size then share one compiled sampler)."""
  if not model.cfg.dual_channel or not model.cfg.freeze_inherited:
    return nnx.split(model)
  plain = nnx.eval_shape(lambda: CogVideo(dataclasses.replace(model.cfg, freeze_inherited=False),
                                          rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(plain)
  nnx.replace_by_pure_dict(state, nnx.to_pure_dict(nnx.state(model)))
  return graphdef, state


def generate(model: CogVideo, lay: Layout, tokens: np.ndarray, key, *, guidance: float = 1.0,
             temperature: float = 1.0, top_k: int = 0, from_block: int | None = None,
             spatial_only: bool = False) -> np.ndarray:
  """Fills the generated blocks of `tokens` [B, T] (text, BOIs and given blocks in place) code
  by code with the KV cache, from block `from_block` on (default: the first generated block;
  later: the blocks before it are already filled, e.g. a first frame from the image model,
  and go into the prefill). Top-k sampling at `temperature` (top_k 0: the whole codebook).
  guidance != 1: classifier-free guidance (Ho & Salimans 2021; CogVideo stage 1 uses 3.0),
  logits = u + g (c - u), u from the same sequence with the caption slots (1..text_len-1)
  padded, the frame-rate/<img> slot kept: captions were dropped so in training."""
  cfg = model.cfg
  gen = lay.generated_targets()
  if from_block is None:
    from_block = int(lay.block[int(np.argmax(gen))])
  n0 = lay.block_start(from_block)
  # the prefill: the text and first BOI, or (stage 2) every given block and the first
  # generated BOI, which must attend to each other at once
  first_gen = int(lay.block[int(np.argmax(gen))])
  prefill = lay.block_start(first_gen) + 1 if lay.given.any() else lay.text_len + 1
  if n0 < prefill - 1:
    raise ValueError(f"from_block {from_block} lies inside the prefill of this layout")
  B = tokens.shape[0]
  rows = np.asarray(tokens)
  if guidance != 1.0:
    uncond = rows.copy()
    uncond[:, 1:cfg.text_len] = cfg.pad_id
    rows = np.concatenate([rows, uncond])
  arrays, masks = batch_layout([lay] * rows.shape[0], rows, cfg)
  graphdef, params = _sampling_split(model)
  out = _generate(graphdef, params, jnp.asarray(rows), jnp.asarray(gen),
                  jax.tree.map(jnp.asarray, arrays), jax.tree.map(jnp.asarray, masks), key,
                  jnp.float32(guidance), jnp.int32(n0), temperature=float(temperature),
                  prefill=prefill, cond_rows=B,
                  top_k=top_k or cfg.codebook, spatial_only=spatial_only)
  return np.asarray(out)
