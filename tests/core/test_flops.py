"""core.flops: the spread of mfu_cpu."""
import numpy as np
import pytest

from jaxpapers.core.flops import measure_peak_matmul_flops, mfu_spread


def test_mfu_spread_is_the_step_quartiles_over_the_peak_median_to_best():
  times = [1.0, 2.0, 3.0, 4.0, 5.0]              # quartiles 2 and 4
  peak = {"peak": 10.0, "spread": [5.0, 10.0], "median": 8.0}
  lo, hi = mfu_spread(40.0, times, peak)
  np.testing.assert_allclose([lo, hi], [40.0 / 4.0 / 10.0, 40.0 / 2.0 / 8.0])
  median_mfu = 40.0 / np.median(times) / peak["peak"]
  assert lo <= median_mfu <= hi


def test_peak_pools_the_rounds_of_an_earlier_measurement():
  first = measure_peak_matmul_flops((64,), rounds=2)
  first["rates"][64][0] = 1e18          # a round the second measurement cannot beat
  pooled = measure_peak_matmul_flops((64,), rounds=2, earlier=first)
  assert len(pooled["rates"][64]) == 4 and pooled["peak"] == pooled["spread"][1] == 1e18
  with pytest.raises(ValueError, match="cannot pool"):
    measure_peak_matmul_flops((32,), rounds=1, earlier=first)
