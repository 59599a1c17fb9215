"""The generated benchmark: seeded, events visible in the pixels, annotators cleaned the way the
Kinetics-GEBD release cleans its raters, hard videos less consistent."""
import numpy as np

from jaxpapers.gebd.annotations import consistency
from jaxpapers.gebd.benchmark import BenchmarkConfig, make_split


def test_seeded():
  a, b = make_split("train", 5, BenchmarkConfig(), 7), make_split("train", 5, BenchmarkConfig(), 7)
  np.testing.assert_array_equal(a.frames, b.frames)
  assert [v.raters for v in a.videos.values()] == [v.raters for v in b.videos.values()]
  c = make_split("train", 5, BenchmarkConfig(), 8)
  assert not np.array_equal(a.frames, c.frames)


def test_events_change_the_pixels_and_raters_follow_the_release_cleaning():
  s = make_split("val", 60, BenchmarkConfig(), 1)
  cut, calm = [], []
  for i, (ev, conf) in enumerate(zip(s.events, s.confounders)):
    x = s.frames[i].astype(np.float32)
    diff = np.abs(np.diff(x, axis=0)).mean((1, 2, 3))        # diff[f - 1]: frame f vs f - 1
    v = s.videos[s.ids[i]]
    busy = {round(t * 4) for t, _ in ev} | {round(t * 4) + k for t in conf for k in range(4)}
    cut += [diff[round(t * 4) - 1] for t, k in ev if k == "cut"]
    calm += [diff[f - 1] for f in range(1, v.num_frames) if f not in busy]
    for r in v.raters:
      assert all(0.3 <= t <= v.duration - 0.3 for t in r)
      assert all(b - a > 0.6 for a, b in zip(r, r[1:]))
  cut, calm = np.array(cut), np.median(calm)
  assert len(cut) >= 5 and np.median(cut) > 4 * calm and (cut > 2 * calm).mean() >= 0.9
  hard = np.array([v.extra["hard"] for v in s.videos.values()])
  consis = np.array([v.f1_consis_avg for v in s.videos.values()])
  assert hard.any() and consis[hard].mean() < consis[~hard].mean() - 0.15


def test_consistency_hand_case():
  assert consistency([[1.0, 5.0], [1.2, 5.1]], 10.0) == [1.0, 1.0]
  # rater 1 finds one of rater 0's two boundaries: F1 2/3 both ways
  np.testing.assert_allclose(consistency([[1.0, 5.0], [1.2]], 10.0), [2 / 3, 2 / 3])
