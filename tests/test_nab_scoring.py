"""NAB scoring on hand-made cases whose scores are worked out by hand in the comments.

Conventions for the worked numbers: sigma(y) = 2 / (1 + exp(5 y)) - 1, sigma(-1) = 0.98661430,
a TP at relative position y earns A_TP * sigma(y) / sigma(-1). Unless said otherwise a file has
100 rows, so its probationary period is floor(0.15 * 100) = 15 rows (rows 0..14 are not scored),
and has one window on rows 40..49 (width W = 10).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tools.anomaly.nab_scoring import (
    PROFILES,
    FileLabels,
    optimise_threshold,
    probationary_length,
    scaled_sigmoid,
    score_corpus,
    score_file,
    threshold_curve,
    window_indices,
)

STD = PROFILES["standard"]
LOW_FP = PROFILES["reward_low_fp"]
LOW_FN = PROFILES["reward_low_fn"]
ONE_WINDOW = FileLabels(100, ((40, 49),))


def detections_at(*rows: int, n: int = 100) -> np.ndarray:
    s = np.zeros(n)
    s[list(rows)] = 1.0
    return s


def test_scaled_sigmoid_reference_points() -> None:
    # 2/(1+e^-5)-1 = 0.986614; 2/(1+e^-2.5)-1 = 0.848284; 2/(1+1)-1 = 0; y >= 3 is clamped to -1.
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661430, abs=1e-8)
    assert scaled_sigmoid(-0.5) == pytest.approx(0.84828364, abs=1e-8)
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(3.0) == -1.0


def test_probationary_length() -> None:
    # floor(0.15 n), at most 0.15 * 5000 = 750 rows.
    assert probationary_length(100) == 15
    assert probationary_length(4032) == 604
    assert probationary_length(22000) == 750


def test_tp_at_window_start_earns_full_tp_weight() -> None:
    # Row 40 is the window's first row: y = -(49 - 40 + 1) / 10 = -1,
    # reward = sigma(-1) / sigma(-1) = 1.
    r = score_file(detections_at(40), ONE_WINDOW, STD, threshold=0.5)
    assert r.score == pytest.approx(1.0)
    assert r.windows[0].detected_row == 40
    assert (r.tp, r.fp, r.fn) == (1, 0, 9)


def test_tp_at_window_end_earns_little() -> None:
    # Row 49 is the last row: y = -(49 - 49 + 1) / 10 = -0.1,
    # sigma(-0.1) = 2/(1+e^-0.5)-1 = 0.244919, reward = 0.244919 / 0.986614 = 0.248242.
    r = score_file(detections_at(49), ONE_WINDOW, STD, threshold=0.5)
    assert r.score == pytest.approx(0.248242, abs=1e-6)


def test_only_the_earliest_detection_in_a_window_counts() -> None:
    # Rows 45 and 40 both detected: only row 40 counts (reward 1.0); row 45 costs nothing.
    r = score_file(detections_at(40, 45), ONE_WINDOW, STD, threshold=0.5)
    assert r.score == pytest.approx(1.0)


def test_missed_window_costs_fn_weight() -> None:
    # No detection: -A_FN = -1 (standard), -2 (reward_low_fn).
    assert score_file(np.zeros(100), ONE_WINDOW, STD, 0.5).score == pytest.approx(-1.0)
    assert score_file(np.zeros(100), ONE_WINDOW, LOW_FN, 0.5).score == pytest.approx(-2.0)


def test_fp_right_after_a_window_is_cheap() -> None:
    # Row 50, one row past the window ending at 49 (W = 10): y = (50 - 49) / (10 - 1) = 1/9,
    # sigma(1/9) = 2/(1+e^(5/9))-1 = -0.270847, times A_FP = 0.11 -> -0.029793.
    # The window itself is missed: -1. Total -1.029793.
    r = score_file(detections_at(50), ONE_WINDOW, STD, threshold=0.5)
    assert r.fp_cost == pytest.approx(-0.0297932, abs=1e-6)
    assert r.score == pytest.approx(-1.0297932, abs=1e-6)
    assert r.fp == 1


def test_fp_long_after_a_window_costs_full_fp_weight() -> None:
    # Row 76: y = (76 - 49) / 9 = 3 -> sigma clamps to -1: cost -A_FP = -0.22 under reward_low_fp.
    r = score_file(detections_at(76), ONE_WINDOW, LOW_FP, threshold=0.5)
    assert r.fp_cost == pytest.approx(-0.22)


def test_fp_with_no_preceding_window_costs_full_fp_weight() -> None:
    # Row 20 is after probation and before the first window: -A_FP = -0.11; window missed: -1.
    r = score_file(detections_at(20), ONE_WINDOW, STD, threshold=0.5)
    assert r.fp_cost == pytest.approx(-0.11)
    assert r.score == pytest.approx(-1.11)


def test_probationary_period_is_not_scored() -> None:
    # Row 10 lies in the probationary period (rows 0..14): neither FP nor anything else; the window
    # is missed: -1.
    r = score_file(detections_at(10), ONE_WINDOW, STD, threshold=0.5)
    assert r.score == pytest.approx(-1.0)
    assert (r.tp, r.fp) == (0, 0)


def test_window_partly_in_probation_keeps_its_full_width() -> None:
    # Window rows 10..29 (W = 20); rows 10..14 are probationary. Row 15 is its first scored row:
    # y = -(29 - 15 + 1) / 20 = -0.75, sigma(-0.75) = 2/(1+e^-3.75)-1 = 0.954045,
    # reward = 0.954045 / 0.986614 = 0.966989.
    labels = FileLabels(100, ((10, 29),))
    r = score_file(detections_at(12, 15), labels, STD, threshold=0.5)
    assert r.score == pytest.approx(0.966989, abs=1e-6)


def test_window_wholly_in_probation_is_not_scored_but_counts_for_perfect() -> None:
    # Window rows 5..9 lies inside rows 0..14: the null detector is not charged for it (S_null = 0
    # for this file), but NAB's perfect score still counts it: S_perfect = 1 * 1 window.
    labels = FileLabels(100, ((5, 9),))
    r = score_corpus({"f": (np.zeros(100), labels)}, STD)
    assert r.null == 0.0
    assert r.perfect == 1.0
    assert r.files["f"].windows[0].scored is False


def test_normalisation_null_is_0_and_perfect_is_100() -> None:
    # Null: raw = -1 per window -> 0. Perfect: a detection on every window's first row and nowhere
    # else: raw = +1 per window -> 100 * (2 - (-2)) / (2 - (-2)) = 100.
    labels = {"a": FileLabels(100, ((40, 49),)), "b": FileLabels(200, ((100, 119),))}
    null = {k: (np.zeros(lab.n_rows), lab) for k, lab in labels.items()}
    perfect = {
        k: (detections_at(lab.windows[0][0], n=lab.n_rows), lab) for k, lab in labels.items()
    }
    for profile in PROFILES.values():
        assert score_corpus(null, profile).score == pytest.approx(0.0)
        assert score_corpus(perfect, profile).score == pytest.approx(100.0)


def test_normalisation_half_way() -> None:
    # One window caught on its first row (+1), one missed (-1): raw 0, null -2, perfect 2
    # -> 100 * (0 + 2) / (2 + 2) = 50 (standard). reward_low_fn: raw 1 - 2 = -1, null -4,
    # perfect 2 -> 100 * 3 / 6 = 50 too.
    labels = {"a": FileLabels(100, ((40, 49),)), "b": FileLabels(100, ((40, 49),))}
    corpus = {"a": (detections_at(40), labels["a"]), "b": (np.zeros(100), labels["b"])}
    assert score_corpus(corpus, STD).score == pytest.approx(50.0)
    assert score_corpus(corpus, LOW_FN).score == pytest.approx(50.0)


def test_threshold_is_tuned_per_profile() -> None:
    # Ten FPs (rows 20..29, before the window) score 0.9; the TP at row 45 scores 0.8
    # (y = -(49 - 45 + 1) / 10 = -0.5, reward 0.848284 / 0.986614 = 0.859793).
    # Standard: threshold 0.8 gives 0.859793 - 10 * 0.11 = -0.240207 > -1 (never firing) -> 0.8.
    # reward_low_fp: 0.859793 - 10 * 0.22 = -1.340207 < -1 -> never fire (threshold +inf).
    s = np.zeros(100)
    s[20:30] = 0.9
    s[45] = 0.8
    th, raw = optimise_threshold([(s, ONE_WINDOW)], STD)
    assert th == 0.8
    assert raw == pytest.approx(-0.240207, abs=1e-6)
    th, raw = optimise_threshold([(s, ONE_WINDOW)], LOW_FP)
    assert th == math.inf
    assert raw == pytest.approx(-1.0)


def test_detection_is_score_at_or_above_threshold() -> None:
    s = np.zeros(100)
    s[40] = 0.7
    assert score_file(s, ONE_WINDOW, STD, 0.7).windows[0].detected_row == 40
    assert score_file(s, ONE_WINDOW, STD, 0.7000001).windows[0].detected_row is None


def test_non_finite_scores_are_rejected() -> None:
    s = np.zeros(100)
    s[30] = np.nan
    with pytest.raises(ValueError, match="row 30"):
        score_file(s, ONE_WINDOW, STD, 0.5)


def test_window_indices_map_timestamps_to_rows() -> None:
    t0 = datetime(2014, 1, 1)
    ts = [t0 + timedelta(minutes=5 * i) for i in range(20)]
    w = window_indices(ts, [(ts[3], ts[6]), (ts[10], ts[10])])
    assert w == [(3, 6), (10, 10)]
    # A window between samples covers the rows inside it.
    assert window_indices(ts, [(ts[3] + timedelta(minutes=1), ts[6])]) == [(4, 6)]
    with pytest.raises(ValueError, match="no rows"):
        window_indices(ts, [(ts[3] + timedelta(minutes=1), ts[3] + timedelta(minutes=2))])
    with pytest.raises(ValueError, match="overlaps"):
        window_indices(ts, [(ts[3], ts[6]), (ts[5], ts[8])])


def test_window_indices_follow_file_order_where_the_clock_steps_back() -> None:
    """A clock set back an hour replays timestamps; NAB scores rows in file order, so a window
    opens at the first row reaching its start and closes at the first row reaching its end."""
    t0 = datetime(2014, 3, 30)
    hour = [t0 + timedelta(minutes=20 * i) for i in range(6)]  # 00:00 .. 01:40
    ts = hour + hour[3:] + [t0 + timedelta(minutes=20 * i) for i in range(6, 9)]
    # rows: 0..5 = 00:00..01:40, 6..8 = 01:00..01:40 again, 9..11 = 02:00..02:40
    assert window_indices(ts, [(hour[1], hour[4])]) == [(1, 4)]
    assert window_indices(ts, [(hour[1], hour[2]), (ts[9], ts[10])]) == [(1, 2), (9, 10)]
    # a window on the replayed hour is found after the first one closed
    assert window_indices(ts, [(hour[0], hour[1]), (ts[9], ts[11])]) == [(0, 1), (9, 11)]


def test_bad_window_rows_are_rejected() -> None:
    with pytest.raises(ValueError):
        FileLabels(10, ((5, 12),))
    with pytest.raises(ValueError):
        FileLabels(10, ((5, 6), (6, 8)))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=20, max_value=120),
    data=st.data(),
)
def test_threshold_curve_matches_scoring_each_threshold(n: int, data: st.DataObject) -> None:
    """The O(n log n) sweep equals scoring the file afresh at every distinct threshold."""
    cuts = sorted(data.draw(st.sets(st.integers(0, n - 1), max_size=6)))
    windows = tuple((cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2))
    labels = FileLabels(n, windows)
    scores = np.array(
        data.draw(st.lists(st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]), min_size=n, max_size=n))
    )
    for profile in PROFILES.values():
        thresholds, curve = threshold_curve([(scores, labels)], profile)
        for th, total in zip(thresholds, curve, strict=True):
            assert score_file(scores, labels, profile, th).score == pytest.approx(total)
