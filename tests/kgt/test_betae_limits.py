"""Untrusted BetaE pickles (issue 17): size, nesting depth and element count are checked from
the pickle's opcodes before anything is built, so a tiny file of shared nested tuples (which
every later hash and sort would walk 2^depth times) is one DataError at once."""
import pickle
import time
from collections import defaultdict

import pytest

from jaxpapers.core.errors import DataError
from jaxpapers.kgt import kg, queries
from jaxpapers.kgt.betae_format import Limits, load_betae, scan_pickle, write_betae

ONE_P = queries.STRUCTURES["1p"]


@pytest.fixture
def betae_dir(tmp_path):
  data = queries.generate(kg.load("nations"), {"train": {"1p": 10}, "valid": {"1p": 3},
                                               "test": {"1p": 3}}, seed=0)
  return write_betae(data, tmp_path / "nations-q2b")


def _shared(depth: int, width: int = 2):
  x = 0
  for _ in range(depth):
    x = (x,) * width        # every level references the level below `width` times
  return x


def test_a_small_pickle_of_deeply_shared_tuples_is_refused_at_once(betae_dir):
  path = betae_dir / "train-queries.pkl"
  path.write_bytes(pickle.dumps(defaultdict(set, {ONE_P: {_shared(22)}}), protocol=4))
  assert path.stat().st_size < 200
  t0 = time.perf_counter()
  with pytest.raises(DataError, match=r"train-queries.pkl: containers nested more than 16 deep"):
    load_betae(betae_dir)
  assert time.perf_counter() - t0 < 5.0      # 2^22-fold walks took 15 s before the check


def test_wide_sharing_within_the_depth_limit_is_refused(tmp_path):
  path = tmp_path / "q.pkl"
  path.write_bytes(pickle.dumps({ONE_P: {_shared(7, width=10)}}, protocol=4))   # 10^7 elements
  with pytest.raises(DataError, match=r"q.pkl: \d+ stored elements that unfold to [\d,]+ "
                                      r"\(limits: 500,000,000, 8x sharing\)"):
    scan_pickle(path)


def test_size_depth_and_count_limits_apply_to_plain_data(tmp_path):
  path = tmp_path / "a.pkl"
  path.write_bytes(pickle.dumps({(1, (2, (3,))): set(range(1000))}, protocol=4))
  scan_pickle(path)                                                  # within the default limits
  with pytest.raises(DataError, match=r"a.pkl: [\d,]+ bytes, more than the 100 a BetaE pickle"):
    scan_pickle(path, Limits(max_bytes=100))
  with pytest.raises(DataError, match="nested more than 3 deep"):
    scan_pickle(path, Limits(max_depth=3))
  with pytest.raises(DataError, match=r"unfold to 1,00\d \(limits: 500,"):
    scan_pickle(path, Limits(max_elements=500))


def test_protocols_0_to_5_of_real_data_pass(betae_dir, tmp_path):
  raw = pickle.loads((betae_dir / "valid-hard-answers.pkl").read_bytes())
  for protocol in range(6):
    path = tmp_path / f"p{protocol}.pkl"
    path.write_bytes(pickle.dumps(raw, protocol=protocol))
    scan_pickle(path)
  assert load_betae(betae_dir).num_entities > 0
