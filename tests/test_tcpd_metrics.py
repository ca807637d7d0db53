"""TCPD's metrics reproduce the reference implementation's documented examples."""

from __future__ import annotations

import pytest

from tools.drift.tcpd_metrics import cover_single, covering, f_measure, segments, true_positives


def test_true_positives_never_double_count() -> None:
    assert true_positives({1, 10, 20, 23}, {3, 8, 20}) == {1, 10, 20}
    assert true_positives({1, 10, 20, 23}, {1, 3, 8, 20}) == {1, 10, 20}
    assert true_positives({1, 10, 20, 23}, {1, 3, 5, 8, 20}) == {1, 10, 20}
    assert true_positives(set(), {1, 2, 3}) == set()
    assert true_positives({1, 2, 3}, set()) == set()


def test_f_measure_reference_examples() -> None:
    assert f_measure({"1": [10, 20], "2": [11, 20], "3": [10], "4": [0, 5]}, [10, 20]) == 1.0
    assert f_measure({"1": [], "2": [10], "3": [50]}, [10]) == pytest.approx(0.9090909090909091)
    # Reporting nothing still scores: row 0 is in every set.
    assert f_measure({"1": [], "2": [10], "3": [50]}, []) == pytest.approx(0.8)
    f1, p, r = f_measure({"1": [30]}, [60], return_pr=True)
    assert (p, r) == (0.5, 0.5) and f1 == 0.5
    with pytest.raises(ValueError):
        f_measure({}, [1])


def test_covering_reference_examples() -> None:
    def sets(parts: list[set[int]]) -> list[range]:
        return [range(min(s), max(s) + 1) for s in parts]

    assert cover_single(sets([{1, 2, 3}, {4, 5}, {6}]), sets([{1, 2, 3}, {4, 5, 6}])) == (
        pytest.approx(0.8333333333333334)
    )
    assert cover_single(sets([{1, 2, 3, 4}, {5, 6}]), sets([{1, 2, 3, 4, 5, 6}])) == (
        pytest.approx(0.6666666666666666)
    )
    assert cover_single(sets([{1, 2, 3, 4, 5, 6}]), sets([{1}, {2}, {3}, {4, 5, 6}])) == (
        pytest.approx(0.3333333333333333)
    )
    assert covering({"1": [10, 20], "2": [10], "3": [0, 5]}, [10, 20], 45) == pytest.approx(
        0.7962962962962963
    )
    assert covering({"1": [], "2": [10], "3": [40]}, [10], 45) == pytest.approx(0.7954144620811286)
    assert covering({"1": [], "2": [10], "3": [40]}, [], 45) == pytest.approx(0.8189300411522634)


def test_segments_partition_the_rows() -> None:
    assert segments([], 5) == [range(0, 5)]
    assert segments([3, 5], 8) == [range(0, 3), range(3, 5), range(5, 8)]
    assert segments([0, 4], 6) == [range(0, 4), range(4, 6)]
