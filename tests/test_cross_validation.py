"""Leave-one-category-out cross-validation of NAB scores: choices never see the held-out files."""

from __future__ import annotations

import numpy as np
import pytest

from tools.anomaly.cross_validation import category_of, cross_validate
from tools.anomaly.nab_scoring import PROFILES, FileLabels, score_corpus

N = 400  # rows per file: probation 60 rows


def _file(window: tuple[int, int] | None) -> FileLabels:
    return FileLabels(N, (window,) if window else ())


def _alerts(rows: dict[int, float]) -> np.ndarray:
    out = np.zeros(N)
    for r, v in rows.items():
        out[r] = v
    return out


@pytest.fixture
def corpus() -> dict[str, FileLabels]:
    return {
        "a/1.csv": _file((200, 240)),
        "a/2.csv": _file((100, 140)),
        "b/1.csv": _file((300, 340)),
        "b/2.csv": _file(None),
        "c/1.csv": _file((150, 190)),
    }


def test_category_is_the_first_folder() -> None:
    assert category_of("realTweets/Twitter_volume_AAPL.csv") == "realTweets"
    assert category_of("a\\b\\c.csv") == "a"
    assert category_of("loose.csv") == "."


def test_pooled_score_of_one_candidate(corpus: dict[str, FileLabels]) -> None:
    """Every window caught at its middle with one clear alert: every fold's threshold
    transfers, so the pooled held-out score equals the in-sample one."""
    good = {
        "a/1.csv": _alerts({220: 0.9}),
        "a/2.csv": _alerts({120: 0.9}),
        "b/1.csv": _alerts({320: 0.9}),
        "b/2.csv": _alerts({}),
        "c/1.csv": _alerts({170: 0.9}),
    }
    cv = cross_validate({"good": good}, corpus)
    in_sample = score_corpus({f: (good[f], corpus[f]) for f in corpus}, PROFILES["standard"])
    assert cv.scores["standard"] == pytest.approx(in_sample.score)
    assert [f.held_out for f in cv.folds] == ["a", "b", "c"]
    assert all(f.chosen == "good" for f in cv.folds)
    assert set(cv.scores) == {"standard", "reward_low_fp", "reward_low_fn"}


def test_a_threshold_that_does_not_transfer_is_paid_for(corpus: dict[str, FileLabels]) -> None:
    """Category c's alert is much weaker than the others' false alarms: tuned on a and b, the
    threshold misses it; in-sample NAB would lower the threshold and flatter the score."""
    noisy = {
        "a/1.csv": _alerts({220: 0.9, 350: 0.5}),
        "a/2.csv": _alerts({120: 0.9, 300: 0.5}),
        "b/1.csv": _alerts({320: 0.9, 100: 0.5}),
        "b/2.csv": _alerts({200: 0.5}),
        "c/1.csv": _alerts({170: 0.3}),
    }
    cv = cross_validate({"noisy": noisy}, corpus)
    fold_c = next(f for f in cv.folds if f.held_out == "c")
    assert fold_c.thresholds["standard"] == pytest.approx(0.9)
    assert fold_c.held_out_totals["standard"].raw == pytest.approx(-1.0)  # missed
    assert cv.scores["standard"] < cv.in_sample_scores["standard"]


def test_choice_is_made_without_the_held_out_category(corpus: dict[str, FileLabels]) -> None:
    """'lucky' is perfect on c only and silent elsewhere; 'steady' is good everywhere but c.
    When c is held out, training cannot see lucky's one success, so steady is chosen."""
    steady = {
        "a/1.csv": _alerts({220: 0.9}),
        "a/2.csv": _alerts({120: 0.9}),
        "b/1.csv": _alerts({320: 0.9}),
        "b/2.csv": _alerts({}),
        "c/1.csv": _alerts({}),
    }
    lucky = {f: _alerts({}) for f in corpus}
    lucky["c/1.csv"] = _alerts({170: 0.9})
    cv = cross_validate({"steady": steady, "lucky": lucky}, corpus)
    fold_c = next(f for f in cv.folds if f.held_out == "c")
    assert fold_c.chosen == "steady"
    assert fold_c.held_out_totals["standard"].raw == pytest.approx(-1.0)
    assert cv.in_sample_choice == "steady"


def test_needs_two_categories_and_complete_outputs(corpus: dict[str, FileLabels]) -> None:
    one_category = {"a/1.csv": corpus["a/1.csv"], "a/2.csv": corpus["a/2.csv"]}
    with pytest.raises(ValueError, match="two categories"):
        cross_validate({"x": {f: np.zeros(N) for f in one_category}}, one_category)
    with pytest.raises(ValueError, match="no output"):
        cross_validate({"x": {"a/1.csv": np.zeros(N)}}, corpus)
