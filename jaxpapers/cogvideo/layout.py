"""Where every token of a CogVideo sequence sits, and the attention masks that follow from it
(CogVideo, arXiv 2205.15868, §3.1-§3.3).

A sequence is [text (text_len tokens, slot 0 the frame-rate token)] followed by frame blocks in
*sequence order*, each block [BOI, code_0 .. code_{G*G-1}] (a begin-of-image token, then the
frame's VQ codes in raster order). The input at a position predicts the token at the next one,
so a block's BOI predicts its first code and its last code predicts nothing.

Stage 1 (sequential generation, §3.1): blocks are frames 0..F-1 in time order, all generated.
Stage 2 (recursive interpolation, §3.1): the given frames come first (times 0, 2, 4, ...), then
the generated in-between frames (times 1, 3, ...); each block carries its real time index
through the frame embedding, so only the order of the sequence differs from time order.

Per position the layout records (int32 arrays of length T):
  block   block index in sequence order (-1: text)
  time    the frame's time index within the clip (-1: text)
  cell    the grid cell of the token (0..G*G-1), G*G for a BOI, -1 for text
  wcell   the grid cell this position predicts (BOI -> 0, code k -> k+1, the last code -> itself):
          its cell as a query of the temporal windows (see `temporal_mask`)
  given   1 where the block is given (stage-2 key frames), 0 where it is generated
and whether the temporal channel is windowed: the release's stage-1 model attends to all earlier
frames, its stage-2 model through shifted windows (§3.3).

The release overwrites each frame's first input with BOI, so a frame's last code is never an
input; here a block is BOI + all G*G codes (one more position per frame), so every code of a
given frame conditions what follows.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Layout:
  block: np.ndarray
  time: np.ndarray
  cell: np.ndarray
  wcell: np.ndarray
  given: np.ndarray
  text_len: int
  grid: int
  windowed: bool

  @property
  def length(self) -> int:
    return len(self.block)

  @property
  def block_len(self) -> int:
    return self.grid * self.grid + 1

  def block_start(self, b: int) -> int:
    """Position of block b's BOI."""
    return self.text_len + b * self.block_len

  def generated_targets(self) -> np.ndarray:
    """bool [T]: the input at position p predicts a code of a generated block at p+1 (the loss
    positions, and the positions generation samples from)."""
    out = np.zeros(self.length, bool)
    nxt_code = (self.cell[1:] >= 0) & (self.cell[1:] < self.grid * self.grid)
    out[:-1] = nxt_code & (self.given[1:] == 0)
    return out

  def arrays(self) -> dict[str, np.ndarray]:
    return {"block": self.block, "time": self.time, "cell": self.cell, "given": self.given}


def make_layout(text_len: int, grid: int, times, given, windowed: bool = False) -> Layout:
  """A layout with one block per entry of `times` (sequence order) and `given` flags."""
  if len(times) != len(given):
    raise ValueError(f"times {times} and given {given} differ in length")
  n = grid * grid
  block, time, cell, wcell = ([-1] * text_len for _ in range(4))
  giv = [0] * text_len
  for b, (t, g) in enumerate(zip(times, given)):
    for k in range(-1, n):                     # -1: the BOI
      block.append(b)
      time.append(int(t))
      cell.append(n if k < 0 else k)
      wcell.append(min(k + 1, n - 1))
      giv.append(int(bool(g)))
  as_int = lambda a: np.asarray(a, np.int32)
  return Layout(as_int(block), as_int(time), as_int(cell), as_int(wcell), as_int(giv),
                text_len, grid, windowed)


def image_layout(text_len: int, grid: int) -> Layout:
  """The text-to-image base model's layout: text, then one generated frame (time 0)."""
  return make_layout(text_len, grid, [0], [False])


def stage1_layout(text_len: int, grid: int, num_frames: int) -> Layout:
  """Sequential generation (§3.1 stage 1): frames 0..F-1 in time order, all generated."""
  return make_layout(text_len, grid, list(range(num_frames)), [False] * num_frames)


def stage2_layout(text_len: int, grid: int, num_frames: int) -> Layout:
  """Interpolation (§3.1 stage 2): the even-time frames given, first; the odd ones generated,
  after them in time order (5 frames: [0 2 4 | 1 3], release: `get_masks_and_position_ids_stage2`);
  the temporal channel windowed."""
  given = list(range(0, num_frames, 2))
  gen = list(range(1, num_frames, 2))
  return make_layout(text_len, grid, given + gen, [True] * len(given) + [False] * len(gen),
                     windowed=True)


def _visible(lay: Layout) -> np.ndarray:
  """bool [T, T]: a given block's tokens are seen by every image token (the key frames of stage 2
  attend to each other both ways); a generated token is seen by the generated tokens at or after
  it in sequence order (causal over the flattened frames); a given token never sees a generated
  one."""
  pos = np.arange(lay.length)
  given_k = lay.given[None, :] == 1
  gen_q = lay.given[:, None] == 0
  return given_k | (gen_q & (pos[None, :] <= pos[:, None]))


def spatial_mask(lay: Layout) -> np.ndarray:
  """bool [T, T] (query, key) of the spatial channel, the inherited text-to-image attention
  (§3.2; release: `attention_localframe_and_text`): text attends to all text; an image token
  attends to all text and to the visible tokens of its own frame block (causal in a generated
  frame, both ways in a given one)."""
  q_img = lay.block[:, None] >= 0
  k_text = lay.block[None, :] < 0
  same = (lay.block[:, None] == lay.block[None, :]) & (lay.block[:, None] >= 0)
  return np.where(q_img, k_text | (same & _visible(lay)), k_text)


def window_of(cell: np.ndarray, grid: int, window: int, shift: int) -> tuple[np.ndarray, np.ndarray]:
  """(window index, region index) of grid cells under Swin's cyclic shift (Liu et al. 2021
  §3.2; CogVideo's release rolls the token grid by -shift on both axes): the cell at (i, j) moves
  to ((i - shift) mod G, (j - shift) mod G), the rolled grid is cut into window x window tiles,
  and cells that wrapped around are told apart by a region index (Swin's attention mask), so a
  window never mixes cells from opposite edges. -1 outside the grid."""
  valid = (cell >= 0) & (cell < grid * grid)
  i, j = np.divmod(np.where(valid, cell, 0), grid)
  ri, rj = (i - shift) % grid, (j - shift) % grid
  per_row = grid // window
  win = ri // window * per_row + rj // window
  region = lambda r: np.where(r < grid - window, 0, np.where(r < grid - shift, 1, 2))
  reg = region(ri) * 3 + region(rj) if shift else np.zeros_like(ri)
  return np.where(valid, win, -1), np.where(valid, reg, -1)


def temporal_mask(lay: Layout, window: int, shift: int) -> np.ndarray:
  """bool [T, T] of the temporal channel (§3.2-§3.3; release: `FullAttentionMixin` in stage 1,
  `WindowAttentionMixin` in stage 2).

  An image query attends to all text and to the visible image tokens of every block (its own
  included; see `_visible`). When `window` < grid, only to those in its 3-D window: the same
  window x window tile of the (shifted) token grid in every frame, and the same Swin region.
  A query's cell is the cell it predicts (`wcell`; a BOI predicts cell 0), a key's the cell of
  its content (a BOI at cell 0), so a query sees the codes of its own target's window in the
  other frames. (The release indexes both by position ids, which are the target's, so its keys
  sit one cell off; with its 10-wide windows on 20-wide rows that moves about a tenth of the
  columns, on our 2-wide windows half of them.) Text queries do not use this channel (§3.2);
  their rows repeat the spatial rows so that every row is defined."""
  q_img = lay.block[:, None] >= 0
  k_text = lay.block[None, :] < 0
  k_img = lay.block[None, :] >= 0
  m = k_img & _visible(lay)
  if window < lay.grid:
    n = lay.grid * lay.grid
    wq, rq = window_of(lay.wcell, lay.grid, window, shift)
    wk, rk = window_of(np.where(lay.cell == n, 0, lay.cell), lay.grid, window, shift)
    m &= (wq[:, None] == wk[None, :]) & (rq[:, None] == rk[None, :])
  return np.where(q_img, k_text | m, spatial_mask(lay))


def layer_shift(layer: int, window: int) -> int:
  """Swin's alternation (release: `layer_id % 2`): even layers unshifted, odd layers shifted by
  half a window."""
  return (layer % 2) * (window // 2)
