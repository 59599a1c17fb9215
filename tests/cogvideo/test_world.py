"""The caption world (CogVideo §4 data at CPU scale): determinism, motion equals the caption,
splits by combination, tokens, and one-line errors."""
import numpy as np
import pytest

from jaxpapers.cogvideo import world
from jaxpapers.core.errors import ConfigError, DataError


def test_same_seed_same_clips_other_seed_other_clips():
  a = world.sample_clips(np.random.default_rng(3), "train", 8, 4, 8, two_object_prob=0.5)
  b = world.sample_clips(np.random.default_rng(3), "train", 8, 4, 8, two_object_prob=0.5)
  c = world.sample_clips(np.random.default_rng(4), "train", 8, 4, 8, two_object_prob=0.5)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(a["frames"], c["frames"])
  assert a["frames"].shape == (8, 4, 16, 16) and a["frames"].dtype == np.float32
  assert a["text"].shape == (8, 12) and a["text"].dtype == np.int32
  assert a["attrs"].shape == (8, 3) and a["combo"].shape == (8,)
  assert a["frames"].min() >= 0.0 and a["frames"].max() == 1.0


@pytest.mark.parametrize("fps", [8, 4])
def test_each_frame_is_the_previous_one_shifted_as_the_caption_says(fps):
  """frame[t+1] = roll(frame[t], speed * interval) in the caption's direction, wrapping around."""
  clips = world.sample_clips(np.random.default_rng(0), "test", 16, 6, fps)
  step = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
  px = {"slowly": 1, "quickly": 2}
  interval = {8: 1, 4: 2}[fps]
  for frames, text in zip(clips["frames"], clips["text"]):
    caption, got_fps = world.decode_text(text)
    assert got_fps == fps
    _, obj, _, direction, speed = caption.split()
    dy, dx = (v * px[speed] * interval for v in step[direction])
    for t in range(len(frames) - 1):
      np.testing.assert_array_equal(frames[t + 1], np.roll(frames[t], (dy, dx), axis=(0, 1)))
    assert frames[0].sum() > 1.0       # a sprite is on the canvas


def test_render_wraps_around_the_torus():
  sprite = np.arange(1, 65, dtype=np.float32).reshape(1, 8, 8)
  frame = world.render(sprite, np.array([[14]]), np.array([[12]]))[0, 0]
  expected = np.zeros((16, 16), np.float32)
  rows, cols = [14, 15, 0, 1, 2, 3, 4, 5], [12, 13, 14, 15, 0, 1, 2, 3]
  expected[np.ix_(rows, cols)] = sprite[0]
  np.testing.assert_array_equal(frame, expected)


def test_two_object_clips_composite_with_max_and_caption_both():
  clips = world.sample_clips(np.random.default_rng(1), "train", 64, 3, 8, two_object_prob=1.0)
  train = set(world.combos("train"))
  for text, a, a2 in zip(clips["text"], clips["attrs"], clips["attrs2"]):
    parsed = world.parse_caption(world.decode_text(text)[0])
    assert parsed == [tuple(a), tuple(a2)]
    assert {world.combo_index(*p) for p in parsed} <= train
  one = world.sample_clips(np.random.default_rng(1), "val", 4, 3, 8)
  assert (one["attrs2"] == -1).all()
  assert all(world.decode_text(t)[0].count("moving") == 1 for t in one["text"])


def test_splits_are_disjoint_by_combination_and_train_covers_every_attribute():
  tr, va, te = (set(world.combos(s)) for s in ("train", "val", "test"))
  assert (len(tr), len(va), len(te)) == (24, 4, 4)
  assert not (tr & va) and not (tr & te) and not (va & te)
  assert tr | va | te == set(range(32)) == set(world.combos("all"))
  attrs = np.array([world.combo_attrs(c) for c in tr])
  assert [sorted(set(attrs[:, k])) for k in range(3)] == [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1]]
  for split in ("train", "val", "test"):
    clips = world.sample_clips(np.random.default_rng(2), split, 40, 2, 8)
    assert set(clips["combo"].tolist()) <= set(world.combos(split))
    for combo, a in zip(clips["combo"], clips["attrs"]):
      assert world.combo_attrs(combo) == tuple(a)


def _matches(frame, bank):
  """Whether the frame is one sprite of `bank` [m, 8, 8] placed somewhere on the torus."""
  for y in range(16):
    for x in range(16):
      back = np.roll(frame, (-y, -x), axis=(0, 1))
      if back[8:].any() or back[:, 8:].any():
        continue
      if (np.abs(bank - back[None, :8, :8]).max(axis=(1, 2)) < 1e-6).any():
        return True
  return False


def test_test_world_draws_test_images_and_train_world_train_images():
  from jaxpapers.data.images import load_fashion_mnist
  d = load_fashion_mnist()
  bank = {(s, o): world.downsample_sprites(d[f"{s}_x"][d[f"{s}_y"] == label, ..., 0])
          for s in ("train", "test") for o, label in enumerate((0, 1, 7, 8))}
  for split, images, other in (("test", "test", "train"), ("val", "train", "test")):
    clips = world.sample_clips(np.random.default_rng(6), split, 3, 1, 8)
    for frame, (obj, _, _) in zip(clips["frames"][:, 0], clips["attrs"]):
      assert _matches(frame, bank[images, obj]) and not _matches(frame, bank[other, obj])


def test_downsampled_sprite_is_pooled_and_rescaled():
  img = np.zeros((28, 28), np.float32)
  img[0:2, 0:2] = 0.5            # lands in the (0, 0) pool cell after 2-pixel padding: 4 px of 16
  img[10:14, 10:14] = 0.25       # exactly pooled cell (3, 3): rows/cols 12..15 after padding
  out = world.downsample_sprites(img[None])[0]
  expected = np.zeros((8, 8), np.float32)
  expected[0, 0] = (4 * 0.5 / 16) / 0.25
  expected[3, 3] = 0.25 / 0.25
  np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_text_tokens_hand_built():
  np.testing.assert_array_equal(world.encode_text("a bag moving up quickly", fps=4),
                                [3, 4, 10, 6, 13, 16, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(
      world.encode_text("a shirt moving left slowly and a sneaker moving down quickly"),
      [1, 4, 7, 6, 11, 15, 5, 4, 9, 6, 14, 16])
  assert world.decode_text([2, 4, 8, 6, 12, 15] + [0] * 6) == ("a trouser moving right slowly", 8)
  assert world.caption_of([3, 2, 1]) == "a bag moving up quickly"
  frames = world.sample_frames(np.random.default_rng(0), "val", 3)
  assert frames["frames"].shape == (3, 16, 16) and (frames["text"][:, 0] == 1).all()


@pytest.mark.parametrize("caption, pattern", [
    ("", "empty caption"),
    ("   ", "empty caption"),
    ("a hat moving sideways slowly", "unknown word.*'hat', 'sideways'.*known words: a, and"),
    ("a bag moving", "malformed caption 'a bag moving'"),
    ("bag a moving up slowly", "malformed caption"),
    ("a bag moving up slowly a shirt moving up slowly", "malformed caption"),
    ("a bag moving up slowly and " * 2 + "a bag moving up slowly", "3 objects; at most 2"),
])
def test_bad_captions_raise_one_line_data_errors(caption, pattern):
  with pytest.raises(DataError, match=pattern) as e:
    world.parse_caption(caption)
  assert "\n" not in str(e.value)


def test_bad_frame_rates_splits_and_two_object_eval_raise_config_errors():
  for fps in (2, 8.5, "8", None, True):
    with pytest.raises(ConfigError, match=r"frame rate .* not supported; supported: 8 fps, 4 fps"):
      world.check_frame_rate(fps)
  assert world.check_frame_rate(4) == 2
  with pytest.raises(ConfigError, match="unknown split 'dev'"):
    world.combos("dev")
  with pytest.raises(ConfigError, match="train world only"):
    world.sample_clips(np.random.default_rng(0), "test", 2, 3, 8, two_object_prob=0.5)
