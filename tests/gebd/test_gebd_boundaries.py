"""Soft and hard targets, decoding and segmentation alignment (MAE-GEBD §2-§3) on hand cases."""
import numpy as np
import pytest

from jaxpapers.gebd.boundaries import (align, decode, gaussian_smooth, hard_targets, offset, peaks,
                                       soft_targets)


def test_soft_targets_split_one_unit_between_two_sections():
  y = soft_targets([1.1])                     # u = 4.4 sections
  np.testing.assert_allclose(y[3:7], [0, 0.6, 0.4, 0], atol=1e-6)
  assert y.sum() == pytest.approx(1.0)
  # a boundary on a section edge is all in that section; the last one is capped below N - 1
  np.testing.assert_allclose(soft_targets([2.0])[7:10], [0, 1, 0], atol=1e-6)
  y = soft_targets([9.99])
  assert y[-1] == pytest.approx(0.999, abs=1e-3) and y.sum() == pytest.approx(1.0)
  # a later boundary overwrites the shared section instead of adding
  y = soft_targets([1.1, 1.4])                # u = 4.4 and 5.6: section 5 gets 0.4 then 0.4
  np.testing.assert_allclose(y[4:7], [0.6, 0.4, 0.6], atol=1e-6)
  np.testing.assert_array_equal(np.nonzero(hard_targets([1.1, 9.99]))[0], [4, 39])


def test_smoothing_has_centre_weight_one_and_zero_padding():
  s = np.zeros(40, np.float32)
  s[0] = 1.0
  sm = gaussian_smooth(s, 0.4)
  assert sm[0] == pytest.approx(1.0) and sm[1] == pytest.approx(np.exp(-1 / 0.32), rel=1e-5)
  np.testing.assert_array_equal(gaussian_smooth(s, 0.0), s)


def test_peaks_and_offsets():
  s = np.zeros(40, np.float32)
  s[[10, 11, 20, 21, 30]] = [0.8, 0.4, 0.5, 0.5, 0.1]
  assert list(peaks(s, 0.2)) == [10, 20, 21]          # flat tops give two; 0.1 is below threshold
  assert offset(s, 10) == pytest.approx((0.4 - 0) / 0.8 * 0.125)
  assert offset(s, 0) == 0.0
  s2 = np.zeros(40, np.float32)
  s2[[0, 1, 2]] = [0.2, 0.6, 0.4]
  assert offset(s2, 1) == pytest.approx((0.4 - 0.2) / 0.6 * 0.125)
  # the flat top's two peaks refine to the same time (5.0 + 0.125 and 5.25 - 0.125), both kept
  assert decode(s, duration=6.0, sigma=0.0, threshold=0.2) == pytest.approx([2.5625, 5.125, 5.125])
  assert decode(s, duration=5.1, sigma=0.0, threshold=0.2) == pytest.approx([2.5625])


def test_alignment_rules():
  # margin M = 0.3 + 0.05 x 10 = 0.8; forward gap 0.95, backward gap 1.0
  assert align([0.5, 1.2, 9.5], 10.0) == pytest.approx([0.8, 1.75, 9.2])
  assert align([1.0, 1.5, 2.0, 8.9, 9.0], 10.0) == pytest.approx([0.9, 1.9, 2.9, 8.2, 9.2])
  # boundaries already far apart and inside the margins do not move; input order does not matter
  assert align([5.0, 2.0], 10.0) == pytest.approx([2.0, 5.0])
  assert align([], 10.0) == []
  # the margins scale with duration: 0.3 + 0.05 x 20 = 1.3
  assert align([0.1], 20.0) == pytest.approx([1.3])


def test_hard_target_models_decode_at_section_centres():
  s = np.zeros(40, np.float32)
  s[[10, 11]] = [0.8, 0.4]
  assert decode(s, 10.0, 0.0, 0.2, hard=True) == [2.625]        # 0.25 x 10 + 0.125, no offset
  assert decode(s, 10.0, 0.0, 0.2) == pytest.approx([2.5 + 0.0625])


def test_peak_window_radius_and_threshold_edge():
  s = np.zeros(40, np.float32)
  s[[10, 13]] = [0.5, 0.6]            # 3 apart: both are maxima of their 5-section windows
  assert list(peaks(s, 0.5)) == [10, 13]
  s[12] = 0.7                         # 2 from 10: 10 is no longer a maximum
  assert list(peaks(s, 0.5)) == [12]
