"""The Kinetics-GEBD F1 on hand-made cases, rule by rule (StanLei52/GEBD Challenge_eval_Code)."""
import pytest

from jaxpapers.core.errors import DataError
from jaxpapers.gebd.annotations import Video
from jaxpapers.gebd.metric import evaluate, f1_curve, match_count


def video(raters, duration=10.0, consis=0.8, vid="v"):
  return Video(vid, 4.0, duration, int(duration * 4), raters, [consis] * len(raters), consis)


def test_matching_is_greedy_in_ground_truth_order():
  # (binary-exact values, so every distance below is exact)
  # g=1.0 takes its nearest detection 1.25 first; g=1.5 is then 0.875 and 0.75 from the others:
  # one hit, where an optimal assignment (1.0-0.625, 1.5-1.25) would give two
  assert match_count([1.0, 1.5], [0.625, 1.25, 2.25], tol=0.5) == 1
  # a nearest detection out of reach is not used up: the next boundary can still take it
  assert match_count([0.0, 1.25], [1.0], tol=0.5) == 1
  # a tie goes to the earlier detection: g=1.0 takes 0.75, and 0.5 is then 0.75 from 1.25 (had
  # the later one won, 0.5 would take 0.75: two hits)
  assert match_count([1.0, 0.5], [0.75, 1.25], tol=0.25) == 1
  # each detection is used once
  assert match_count([1.0, 1.0], [1.0], tol=0.25) == 1


def test_threshold_is_relative_to_duration():
  gt = {"v": video([[5.0]], duration=10.0)}
  assert evaluate(gt, {"v": [5.5]}, 0.05)["tp"] == 1       # 0.5 <= 0.05 x 10
  assert evaluate(gt, {"v": [5.51]}, 0.05)["tp"] == 0
  gt = {"v": video([[5.0]], duration=20.0)}
  assert evaluate(gt, {"v": [6.0]}, 0.05)["tp"] == 1       # 1.0 <= 0.05 x 20
  assert f1_curve(gt, {"v": [7.5]})["0.10"] == 0.0 and f1_curve(gt, {"v": [7.5]})["0.15"] == 1.0


def test_best_rater_counts_only_its_positives():
  # rater 0: 4 boundaries, 1 hit (F1 = 2*(1/2)*(1/4)/(3/4) = 1/3); rater 1: 1 boundary, 1 hit (F1 = 2/3)
  gt = {"v": video([[1.0, 3.0, 5.0, 7.0], [1.1]])}
  r = evaluate(gt, {"v": [1.0, 9.0]})
  assert (r["tp"], r["positives"], r["detections"]) == (1, 1, 2)
  # equal F1 (0.5) with different counts: the first rater in the stored order wins
  a, b = [1.0, 3.0], [1.0, 2.0, 3.0, 4.0, 5.0, 7.0]     # 1 of 2 hit; 2 of 6 hit
  r = evaluate({"v": video([a, b])}, {"v": [1.0, 5.0]})
  assert (r["tp"], r["positives"]) == (1, 2)
  r = evaluate({"v": video([b, a])}, {"v": [1.0, 5.0]})
  assert (r["tp"], r["positives"]) == (2, 6)


def test_micro_average_over_videos():
  gt = {"a": video([[1.0, 2.0, 3.0]], vid="a"), "b": video([[5.0]], vid="b")}
  r = evaluate(gt, {"a": [1.0], "b": [5.0]})
  # tp 2, positives 4, detections 2: P = 1, R = 0.5, F1 = 2/3 (the mean of the per-video F1s,
  # 0.5 and 1, would be 0.75)
  assert (r["tp"], r["positives"], r["detections"]) == (2, 4, 2)
  assert r["f1"] == pytest.approx(2 / 3)


def test_low_consistency_videos_are_skipped():
  gt = {"a": video([[1.0]], vid="a"), "b": video([[5.0]], consis=0.29, vid="b")}
  r = evaluate(gt, {"a": [1.0], "b": [9.0]})
  assert (r["videos"], r["skipped"], r["detections"], r["f1"]) == (1, 1, 1, 1.0)


def test_missing_empty_and_out_of_range_predictions():
  gt = {"a": video([[1.0], [1.0, 2.0, 3.0]], vid="a"), "b": video([[5.0]], vid="b")}
  # a missing video adds rater 0's boundaries (not the best rater's) to the positives
  r = evaluate(gt, {"b": [5.0]})
  assert (r["tp"], r["positives"], r["detections"]) == (1, 2, 1)
  assert evaluate(gt, {"a": [], "b": [5.0]}) == r                 # an empty list: the same
  # every prediction outside [0, duration]: the same as none
  assert evaluate(gt, {"a": [-0.1, 10.01], "b": [5.0]}) == r
  # out-of-range ones are dropped, in-range duplicates all count; duration itself is in range
  r = evaluate(gt, {"a": [1.0, 1.0, 11.0], "b": [5.0, 10.0]})
  assert (r["tp"], r["detections"]) == (2, 4)
  # nothing predicted anywhere: precision 0, F1 0
  assert evaluate(gt, {})["f1"] == 0.0


def test_rater_without_boundaries_has_recall_one_precision_counted():
  gt = {"v": video([[]])}
  r = evaluate(gt, {"v": [2.0]})
  assert (r["tp"], r["positives"], r["detections"], r["recall"], r["precision"]) == (0, 0, 1, 1.0, 0.0)


def test_unknown_video_is_one_line_error_naming_it():
  gt = {"a": video([[1.0]], vid="a")}
  with pytest.raises(DataError, match="'zz'"):
    evaluate(gt, {"a": [1.0], "zz": [2.0]})
  assert evaluate(gt, {"a": [1.0], "zz": [2.0]}, strict=False)["f1"] == 1.0
