"""A seeded, captioned video world generated on the fly: CogVideo's text-video pairs (§4) at
CPU scale.

Frames are 16x16 grey float32 in [0, 1] on black. Each clip shows one or two Fashion-MNIST
sprites (8x8) moving left/right/up/down "slowly" (1 px per tick) or "quickly" (2 px per tick) on a
torus (np.roll-style wrap-around), described by a caption such as
"a sneaker moving left slowly and a bag moving up quickly". The world ticks at 8 fps; a clip of
`num_frames` frames at `fps` samples every FRAME_RATES[fps] ticks, and the text carries a
frame-rate token in slot 0 (CogVideo §3.1, multi-frame-rate training).

Splits are by caption combination (object, direction, speed): of the 32 single-object
combinations 24 are train, 4 val and 4 test, every attribute value still seen in train, so the
val/test captions are new compositions of known words. The train and val worlds draw sprites
from Fashion-MNIST train images, the test world from its test images; split "all" has every
combination (for the evaluation classifier)."""
from __future__ import annotations

import functools

import numpy as np

from jaxpapers.core.errors import ConfigError, DataError

FRAME_SIZE = 16
SPRITE_SIZE = 8
WORLD_FPS = 8
FRAME_RATES = {8: 1, 4: 2}                       # fps -> interval in world ticks

OBJECTS = ("shirt", "trouser", "sneaker", "bag")
OBJECT_LABELS = (0, 1, 7, 8)                     # Fashion-MNIST classes of OBJECTS
DIRECTIONS = ("left", "right", "up", "down")
DIRECTION_VECTORS = ((0, -1), (0, 1), (-1, 0), (1, 0))   # (dy, dx) per tick, rows grow downwards
SPEEDS = ("slowly", "quickly")
SPEED_PX = (1, 2)                                # pixels per tick

SPECIAL = ("<pad>", "<img>") + tuple(f"<fps{f}>" for f in FRAME_RATES)
WORDS = ("a", "and", "moving") + OBJECTS + DIRECTIONS + SPEEDS
VOCAB = SPECIAL + WORDS
TOKEN = {w: i for i, w in enumerate(VOCAB)}
PAD, IMG = TOKEN["<pad>"], TOKEN["<img>"]
TEXT_LEN = 12                                    # slot 0: <img> / <fpsN>; slots 1..11: words
MAX_OBJECTS = 2

NUM_COMBOS = len(OBJECTS) * len(DIRECTIONS) * len(SPEEDS)
SPLITS = ("train", "val", "test", "all")
SPLIT_SEED = 0
SPLIT_SIZES = {"test": 4, "val": 4}


# ---------------------------------------------------------------------------------------------
# captions and text tokens

def combo_index(obj: int, direction: int, speed: int) -> int:
  return (obj * len(DIRECTIONS) + direction) * len(SPEEDS) + speed


def combo_attrs(combo: int) -> tuple[int, int, int]:
  """combo index -> (object, direction, speed) indices."""
  rest, speed = divmod(int(combo), len(SPEEDS))
  obj, direction = divmod(rest, len(DIRECTIONS))
  return obj, direction, speed


def caption_of(attrs) -> str:
  """(object, direction, speed) indices, or a list of such triples (one per object) -> caption."""
  a = np.asarray(attrs, dtype=np.int64)
  triples = a.reshape(-1, 3)
  return " and ".join(f"a {OBJECTS[o]} moving {DIRECTIONS[d]} {SPEEDS[s]}" for o, d, s in triples)


_GRAMMAR = ("expected 'a <object> moving <direction> <speed>', optionally followed by "
            "'and a <object> moving <direction> <speed>'")


def parse_caption(text: str) -> list[tuple[int, int, int]]:
  """Caption -> [(object, direction, speed) indices] per object; DataError (one line) on an empty
  caption, unknown words or malformed grammar."""
  words = str(text).lower().split()
  if not words:
    raise DataError(f"empty caption: {_GRAMMAR}")
  unknown = sorted({w for w in words if w not in WORDS}, key=words.index)
  if unknown:
    raise DataError(f"unknown word(s) {', '.join(repr(w) for w in unknown)} in caption {text!r}; "
                    f"known words: {', '.join(WORDS)}")
  clauses = [words[i:i + 5] for i in range(0, len(words), 6)]
  joins = words[5::6]
  ok = (len(words) % 6 == 5 and all(j == "and" for j in joins)
        and all(c[0] == "a" and c[1] in OBJECTS and c[2] == "moving" and c[3] in DIRECTIONS
                and c[4] in SPEEDS for c in clauses))
  if not ok:
    raise DataError(f"malformed caption {text!r}: {_GRAMMAR}")
  if len(clauses) > MAX_OBJECTS:
    raise DataError(f"caption {text!r} describes {len(clauses)} objects; at most {MAX_OBJECTS} "
                    f"fit the {TEXT_LEN}-token text")
  return [(OBJECTS.index(c[1]), DIRECTIONS.index(c[3]), SPEEDS.index(c[4])) for c in clauses]


def check_frame_rate(fps) -> int:
  """The interval in world ticks of a supported frame rate; ConfigError naming the supported ones."""
  if isinstance(fps, bool) or fps not in FRAME_RATES:
    raise ConfigError(f"frame rate {fps!r} fps is not supported; supported: "
                      f"{', '.join(f'{f} fps' for f in FRAME_RATES)}")
  return FRAME_RATES[fps]


def first_token(fps: int | None) -> int:
  """Slot 0: <img> for the image model (fps None), else the frame-rate token."""
  if fps is None:
    return IMG
  check_frame_rate(fps)
  return TOKEN[f"<fps{fps}>"]


def encode_text(caption: str, fps: int | None = None) -> np.ndarray:
  """Caption (and frame rate; None: an image) -> int32[TEXT_LEN] tokens, words right-padded."""
  return encode_attrs(parse_caption(caption), fps)


def encode_attrs(attrs, fps: int | None = None) -> np.ndarray:
  """(object, direction, speed) triple(s) -> int32[TEXT_LEN] tokens of their caption."""
  tokens = np.full(TEXT_LEN, PAD, np.int32)
  tokens[0] = first_token(fps)
  words = caption_of(attrs).split()
  tokens[1:1 + len(words)] = [TOKEN[w] for w in words]
  return tokens


def decode_text(tokens) -> tuple[str, int | None]:
  """int[TEXT_LEN] tokens -> (caption, fps or None for <img>); DataError on bad tokens."""
  t = np.asarray(tokens).reshape(-1)
  if t.shape != (TEXT_LEN,) or t.min() < 0 or t.max() >= len(VOCAB):
    raise DataError(f"text tokens must be {TEXT_LEN} ints in [0, {len(VOCAB)}), got shape "
                    f"{np.shape(tokens)}")
  head = VOCAB[int(t[0])]
  if head == "<img>":
    fps = None
  elif head.startswith("<fps"):
    fps = int(head[4:-1])
  else:
    raise DataError(f"text slot 0 must be <img> or a frame-rate token, got {head!r}")
  return " ".join(VOCAB[int(i)] for i in t[1:] if i != PAD), fps


# ---------------------------------------------------------------------------------------------
# splits by caption combination

@functools.lru_cache(maxsize=None)
def _split_table() -> dict[str, tuple[int, ...]]:
  """Seeded permutation of the 32 combinations -> test / val / train; the first seed from
  SPLIT_SEED whose train part still has every object, direction and speed."""
  for seed in range(SPLIT_SEED, SPLIT_SEED + 1000):
    perm = np.random.default_rng(seed).permutation(NUM_COMBOS)
    nt, nv = SPLIT_SIZES["test"], SPLIT_SIZES["val"]
    table = {"test": perm[:nt], "val": perm[nt:nt + nv], "train": perm[nt + nv:]}
    train = np.array([combo_attrs(c) for c in table["train"]])
    sizes = (len(OBJECTS), len(DIRECTIONS), len(SPEEDS))
    if all(len(set(train[:, k])) == sizes[k] for k in range(3)):
      table["all"] = np.arange(NUM_COMBOS)
      return {k: tuple(sorted(int(c) for c in v)) for k, v in table.items()}
  raise AssertionError("no split covers every attribute")   # unreachable for 24 of 32


def check_split(split: str) -> None:
  if split not in SPLITS:
    raise ConfigError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")


def combos(split: str) -> tuple[int, ...]:
  """The caption combinations (indices, see combo_attrs) of a split."""
  check_split(split)
  return _split_table()[split]


# ---------------------------------------------------------------------------------------------
# sprites and rendering

def downsample_sprites(images: np.ndarray) -> np.ndarray:
  """[n, 28, 28] -> [n, 8, 8]: zero-pad to 32, 4x4 average pool, rescale each to max 1 (keeps
  the contrast of faint items)."""
  x = np.pad(np.asarray(images, np.float32).reshape(-1, 28, 28), ((0, 0), (2, 2), (2, 2)))
  x = x.reshape(-1, SPRITE_SIZE, 4, SPRITE_SIZE, 4).mean(axis=(2, 4))
  return (x / np.maximum(x.max(axis=(1, 2), keepdims=True), 1e-6)).astype(np.float32)


@functools.lru_cache(maxsize=None)
def sprites(images: str) -> tuple[np.ndarray, ...]:
  """Per object of OBJECTS, its 8x8 sprites from the Fashion-MNIST `images` set ("train"/"test")."""
  if images not in ("train", "test"):
    raise ConfigError(f"images must be 'train' or 'test', got {images!r}")
  from jaxpapers.data.images import load_fashion_mnist
  d = load_fashion_mnist()
  x, y = d[f"{images}_x"], d[f"{images}_y"]
  out = []
  for label in OBJECT_LABELS:
    imgs = x[y == label, ..., 0]
    if not len(imgs):
      raise DataError(f"Fashion-MNIST {images} images have no class {label}")
    out.append(downsample_sprites(imgs))
  return tuple(out)


def render(sprite_images: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
  """Sprites [n, 8, 8] with top-left corners (ys, xs) [n, T] on the torus -> frames [n, T, 16, 16]."""
  n = sprite_images.shape[0]
  base = np.zeros((n, FRAME_SIZE, FRAME_SIZE), np.float32)
  base[:, :SPRITE_SIZE, :SPRITE_SIZE] = sprite_images
  grid = np.arange(FRAME_SIZE)
  rows = (grid - ys[..., None]) % FRAME_SIZE                 # [n, T, 16]
  cols = (grid - xs[..., None]) % FRAME_SIZE
  return base[np.arange(n)[:, None, None, None], rows[..., :, None], cols[..., None, :]]


def _object_frames(rng, split_combos, images, n, ticks):
  """n objects of random combinations from split_combos: (frames [n, T, 16, 16], attrs [n, 3])."""
  combo = rng.choice(np.asarray(split_combos), size=n)
  attrs = np.array([combo_attrs(c) for c in combo], np.int32).reshape(n, 3)
  pool = sprites(images)
  which = rng.random(n)                                      # a random image of each's class
  imgs = np.stack([pool[o][int(u * len(pool[o]))] for o, u in zip(attrs[:, 0], which)]) if n else \
      np.zeros((0, SPRITE_SIZE, SPRITE_SIZE), np.float32)
  start = rng.integers(0, FRAME_SIZE, size=(n, 2))
  vec = np.array(DIRECTION_VECTORS)[attrs[:, 1]] * np.array(SPEED_PX)[attrs[:, 2], None]  # [n, 2]
  ys = start[:, :1] + vec[:, :1] * ticks[None]
  xs = start[:, 1:] + vec[:, 1:] * ticks[None]
  return render(imgs, ys, xs), attrs, combo.astype(np.int32)


def sample_clips(rng: np.random.Generator, split: str, n: int, num_frames: int, fps: int,
                 two_object_prob: float = 0.0, images: str | None = None) -> dict[str, np.ndarray]:
  """n captioned clips of a split (deterministic given rng).

  Returns frames float32[n, T, 16, 16], text int32[n, 12] (frame-rate token, caption), attrs
  int32[n, 3] (the first object's object/direction/speed), combo int32[n] (its combination),
  attrs2 int32[n, 3] (the second object's, -1 when there is none). `images`: the Fashion-MNIST
  set the sprites come from (default: "test" for the test split, else "train"). Two-object clips
  (train and "all" splits only) draw both objects from the split's combinations; overlapping
  objects composite with max."""
  check_split(split)
  interval = check_frame_rate(fps)
  if not isinstance(n, (int, np.integer)) or n < 0:
    raise ConfigError(f"number of clips must be an int >= 0, got {n!r}")
  if not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
    raise ConfigError(f"num_frames must be a positive int, got {num_frames!r}")
  if not 0.0 <= two_object_prob <= 1.0:
    raise ConfigError(f"two_object_prob must be in [0, 1], got {two_object_prob!r}")
  if two_object_prob > 0 and split in ("val", "test"):
    raise ConfigError(f"two-object clips exist in the train world only, got split {split!r} with "
                      f"two_object_prob={two_object_prob}")
  images = images or ("test" if split == "test" else "train")
  ticks = np.arange(num_frames) * interval
  frames, attrs, combo = _object_frames(rng, combos(split), images, n, ticks)
  two = rng.random(n) < two_object_prob
  second = np.flatnonzero(two)
  frames2, attrs2_of_two, _ = _object_frames(rng, combos(split), images, len(second), ticks)
  frames[second] = np.maximum(frames[second], frames2)
  attrs2 = np.full((n, 3), -1, np.int32)
  attrs2[second] = attrs2_of_two
  text = np.stack([encode_attrs(a if not t else np.stack([a, b]), fps)
                   for a, b, t in zip(attrs, attrs2, two)]) if n else np.zeros((0, TEXT_LEN), np.int32)
  return dict(frames=frames.astype(np.float32), text=text.astype(np.int32), attrs=attrs,
              combo=combo, attrs2=attrs2)


def sample_frames(rng: np.random.Generator, split: str, n: int, two_object_prob: float = 0.0,
                  images: str | None = None) -> dict[str, np.ndarray]:
  """Single frames of clips with their full captions, for the image stage (CogView-style
  text-to-image pretraining): frames float32[n, 16, 16], text int32[n, 12] with <img> in slot 0,
  plus attrs, combo and attrs2 as sample_clips."""
  clips = sample_clips(rng, split, n, num_frames=1, fps=WORLD_FPS, two_object_prob=two_object_prob,
                       images=images)
  text = clips["text"].copy()
  text[:, 0] = IMG
  return dict(clips, frames=clips["frames"][:, 0], text=text)
