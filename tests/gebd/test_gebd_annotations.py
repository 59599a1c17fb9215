"""The Kinetics-GEBD annotation layout: round trip, a user's extra keys, one-line errors naming
the video."""
import pickle

import pytest

from jaxpapers.core.errors import DataError
from jaxpapers.gebd import annotations as ann
from jaxpapers.gebd.benchmark import BenchmarkConfig, make_split


def test_benchmark_annotations_round_trip(tmp_path):
  split = make_split("val", 6, BenchmarkConfig(), seed=3)
  path = tmp_path / "gebd_val.pkl"
  ann.save(path, split.videos)
  back = ann.load(path)
  assert list(back) == split.ids
  for vid, v in split.videos.items():
    w = back[vid]
    assert (w.raters, w.fps, w.duration, w.num_frames, w.f1_consis) == (
        v.raters, v.fps, v.duration, v.num_frames, v.f1_consis)
    assert w.f1_consis_avg == pytest.approx(v.f1_consis_avg)
  raw = pickle.loads(path.read_bytes())
  rec = raw[split.ids[0]]
  assert {"path_video", "fps", "video_duration", "num_frames", "substages_timestamps",
          "substages_myframeidx", "f1_consis", "f1_consis_avg"} <= set(rec)
  v = split.videos[split.ids[0]]
  assert rec["substages_myframeidx"] == [[min(v.num_frames - 1, int(t * v.fps)) for t in r]
                                         for r in v.raters]


def kinetics_record(**kw):
  rec = dict(num_frames=240, path_video="abc.mp4", fps=24.0, video_duration=10.0,
             path_frame="abc", f1_consis=[0.8, 0.6, 0.7], f1_consis_avg=0.7,
             substages_myframeidx=[[48], [50], []], substages_timestamps=[[2.0], [2.1], []])
  rec.update(kw)
  return rec


def write(tmp_path, data):
  path = tmp_path / "k400_mr345_val_min_change_duration0.3.pkl"
  path.write_bytes(pickle.dumps(data))
  return path


def test_a_kinetics_file_loads_with_its_extra_keys(tmp_path):
  v = ann.load(write(tmp_path, {"abc": kinetics_record()}))["abc"]
  assert v.raters == [[2.0], [2.1], []] and v.f1_consis_avg == 0.7 and v.extra["path_frame"] == "abc"


@pytest.mark.parametrize("change, message", [
    (dict(substages_timestamps=[[2.0], [-0.5]]), r"video 'abc': rater 1 has timestamp -0.5 outside"),
    (dict(substages_timestamps=[[2.0, 10.5]]), r"video 'abc': rater 0 has timestamp 10.5 outside"),
    (dict(substages_timestamps=[]), r"video 'abc': has no raters"),
    (dict(video_duration=0), r"video 'abc': video_duration must be a positive"),
    (dict(fps="24"), r"video 'abc': fps must be a positive number"),
])
def test_bad_records_are_one_line_errors_naming_the_video(tmp_path, change, message):
  path = write(tmp_path, {"ok": kinetics_record(), "abc": kinetics_record(**change)})
  with pytest.raises(DataError, match=message) as e:
    ann.load(path)
  assert "\n" not in str(e.value)


def test_bad_files(tmp_path):
  with pytest.raises(DataError, match="not found"):
    ann.load(tmp_path / "missing.pkl")
  (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
  with pytest.raises(DataError, match="not a readable pickle"):
    ann.load(tmp_path / "junk.pkl")
  with pytest.raises(DataError, match="missing key"):
    ann.load(write(tmp_path, {"abc": {"fps": 24.0}}))


class _RunsCode:
  def __reduce__(self):
    import os
    return (os.system, ("touch ran_code",))


def test_a_pickle_that_would_run_code_is_refused_before_it_runs(tmp_path, monkeypatch):
  """Annotation and prediction files are pickles a user brings: only containers, numbers,
  strings and numpy arrays are built (numpy scalars and arrays as Kinetics-GEBD stores them)."""
  import numpy as np
  from jaxpapers.core import safe_pickle
  monkeypatch.chdir(tmp_path)
  path = tmp_path / "evil.pkl"
  path.write_bytes(pickle.dumps({"v": _RunsCode()}))
  with pytest.raises(DataError, match="refusing to load the global posix.system"):
    ann.load(path)
  assert not (tmp_path / "ran_code").exists()
  for protocol in range(pickle.HIGHEST_PROTOCOL + 1):   # numpy's globals differ by protocol
    path.write_bytes(pickle.dumps({"v": [np.float64(1.5), np.arange(3.0)]}, protocol=protocol))
    v = safe_pickle.load(path, ann.PICKLE_GLOBALS, ann.HOLDS)["v"]
    assert v[0] == 1.5 and v[1].tolist() == [0.0, 1.0, 2.0], protocol
