import numpy as np
import pytest

from tools.schedule import apportion, build_schedule


def test_apportion_sums_to_slots_and_follows_shares():
    counts = apportion(np.array([0.5, 0.3, 0.2, 0.0]), 1000)
    assert counts.tolist() == [500, 300, 200, 0]
    odd = apportion(np.array([1.0, 1.0, 1.0]), 10)
    assert odd.sum() == 10 and sorted(odd.tolist()) == [3, 3, 4]


def test_schedule_interleaves_instead_of_bunching():
    table = build_schedule(np.array([0.5, 0.5]), 10)
    assert table.tolist() == [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    table = build_schedule(np.array([0.7, 0.2, 0.1]), 100)
    # The minority backend's slots are spread through the table, not in one run.
    gaps = np.diff(np.flatnonzero(table == 2))
    assert gaps.min() >= 8 and gaps.max() <= 12


@pytest.mark.parametrize("bad", [[0.0, 0.0], [-0.1, 1.1], [np.nan, 1.0], []])
def test_bad_shares_are_rejected(bad):
    with pytest.raises(ValueError):
        build_schedule(np.array(bad, dtype=float))
