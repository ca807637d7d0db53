"""The flattened forest must give scikit-learn's answers exactly, whichever walker runs it."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestRegressor

from tools.flat_forest import HAVE_NUMBA, FlatForest, mean_over_trees

NEEDS_NUMBA = pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed")
BACKENDS = ["numpy", pytest.param("numba", marks=NEEDS_NUMBA)]


@pytest.fixture(scope="module")
def fitted() -> tuple[RandomForestRegressor, np.ndarray]:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(3000, 6)) * np.array([1.0, 10.0, 100.0, 0.01, 1e4, 1.0])
    X[:, 5] = rng.integers(0, 4, size=3000)  # coarse feature: many ties at thresholds
    y = np.log1p(np.abs(X[:, 0] * 3 + X[:, 1])) + X[:, 5] + rng.normal(scale=0.3, size=3000)
    rf = RandomForestRegressor(n_estimators=40, min_samples_leaf=2, random_state=0).fit(X, y)
    return rf, X


def _rows_on_thresholds(rf: RandomForestRegressor, n_rows: int, seed: int) -> np.ndarray:
    """Rows whose every feature equals some split threshold (or the float32 values right
    around it), where float32-versus-float64 comparison mistakes would show."""
    rng = np.random.default_rng(seed)
    n_features = rf.n_features_in_
    rows = np.empty((n_rows, n_features))
    for j in range(n_features):
        thr = np.concatenate(
            [e.tree_.threshold[e.tree_.feature == j] for e in rf.estimators_]
        ).astype(np.float64)
        picks = rng.choice(thr, size=n_rows)
        f32 = picks.astype(np.float32)
        candidates = np.stack(
            [
                picks,
                f32.astype(np.float64),
                np.nextafter(f32, np.float32(np.inf)).astype(np.float64),
                np.nextafter(f32, np.float32(-np.inf)).astype(np.float64),
            ]
        )
        rows[:, j] = candidates[rng.integers(0, 4, size=n_rows), np.arange(n_rows)]
    return rows


@pytest.mark.parametrize("backend", BACKENDS)
def test_predictions_identical_to_sklearn_on_thousands_of_rows(fitted, backend):
    rf, X = fitted
    flat = FlatForest.from_sklearn(rf, backend=backend)
    assert flat.backend == backend
    rng = np.random.default_rng(1)
    queries = np.vstack(
        [X, X[:500] + rng.normal(scale=0.5, size=(500, 6)), _rows_on_thresholds(rf, 3000, 2)]
    )
    assert np.array_equal(flat.predict(queries), rf.predict(queries))
    per_tree = flat.predict_per_tree(queries)
    assert per_tree.shape == (len(rf.estimators_), len(queries))
    for t, est in enumerate(rf.estimators_):
        assert np.array_equal(per_tree[t], est.predict(queries))


@pytest.mark.parametrize("backend", BACKENDS)
def test_few_rows_and_float32_inputs(fitted, backend):
    rf, X = fitted
    flat = FlatForest.from_sklearn(rf, backend=backend)
    for n in (1, 2, 4):
        assert np.array_equal(flat.predict(X[:n]), rf.predict(X[:n]))
    x32 = X[:50].astype(np.float32)
    assert np.array_equal(flat.predict(x32), rf.predict(x32))


def test_large_batches_are_chunked_without_changing_results(fitted):
    rf, X = fitted
    flat = FlatForest.from_sklearn(rf, backend="numpy")
    big = np.tile(X, (4, 1))  # 12,000 rows: more than one traversal chunk
    assert np.array_equal(flat.predict(big), rf.predict(big))


@pytest.mark.parametrize("backend", BACKENDS)
def test_apply_gives_sklearn_leaves_and_leaf_values_can_be_replaced(fitted, backend):
    rf, X = fitted
    flat = FlatForest.from_sklearn(rf, backend=backend)
    leaves = flat.apply(X[:300])
    expected = rf.apply(X[:300]).T + flat.roots[:, None]
    assert np.array_equal(leaves, expected)
    doubled = flat.with_leaf_values(flat.value * 2)
    assert np.array_equal(doubled.predict_per_tree(X[:300]), 2 * flat.predict_per_tree(X[:300]))
    assert np.array_equal(flat.predict(X[:5]), rf.predict(X[:5]))  # the original is untouched


@pytest.mark.parametrize("backend", BACKENDS)
def test_leaf_means_over_blocks_equal_the_mean_of_each_trees_leaf(fitted, backend):
    # blocks like the router's refresh grid: a base row repeated, two columns varied, the
    # others constant within the block (one block ragged, one with a column on thresholds)
    rf, X = fitted
    flat = FlatForest.from_sklearn(rf, backend=backend)
    rng = np.random.default_rng(5)
    second = rng.normal(size=flat.n_nodes) ** 2
    on_thr = _rows_on_thresholds(rf, 50, 6)
    blocks = []
    for k in range(7):
        b = np.repeat(X[k * 11][None, :], 50, axis=0)
        b[:, 0] = rng.normal(size=50)
        b[:, 5 if k % 2 else 1] = on_thr[:, 5 if k % 2 else 1]
        blocks.append(b)
    rows = np.vstack(blocks)[:-13]
    leaves = flat.apply(rows)
    m1, m2 = flat.leaf_means(rows, second, block=50)
    assert np.array_equal(m1, flat.value.take(leaves).mean(axis=0))
    assert np.array_equal(m2, second.take(leaves).mean(axis=0))
    assert np.array_equal(m1, rf.predict(rows))
    # any block size gives the same numbers: it only decides which rows are walked together
    for block in (1, 7, len(rows)):
        assert np.array_equal(flat.leaf_means(rows, second, block)[1], m2)
    with pytest.raises(ValueError):
        flat.leaf_means(rows, second[:-1], 50)


def test_walkers_agree():
    if not HAVE_NUMBA:
        pytest.skip("no numba")
    rng = np.random.default_rng(3)
    X = rng.normal(size=(800, 4))
    rf = RandomForestRegressor(n_estimators=15, max_depth=8, random_state=1).fit(X, X[:, 0] ** 2)
    a = FlatForest.from_sklearn(rf, backend="numpy").predict_per_tree(X)
    b = FlatForest.from_sklearn(rf, backend="numba").predict_per_tree(X)
    assert np.array_equal(a, b)


def test_single_leaf_trees():
    X = np.zeros((20, 3))
    rf = RandomForestRegressor(n_estimators=3, random_state=0).fit(X, np.full(20, 2.5))
    flat = FlatForest.from_sklearn(rf)
    assert flat.max_depth == 0
    assert np.array_equal(flat.predict(np.ones((5, 3))), rf.predict(np.ones((5, 3))))


def test_mean_over_trees_adds_in_tree_order():
    per_tree = np.array([[1e16], [1.0], [-1e16], [1.0]])
    # Sequential: ((1e16 + 1) - 1e16) + 1 = 1.0 (the first +1 is lost); pairwise would give 2.0.
    assert mean_over_trees(per_tree)[0] == ((((0.0 + 1e16) + 1.0) - 1e16) + 1.0) / 4


def test_bad_input_is_rejected(fitted):
    rf, _ = fitted
    flat = FlatForest.from_sklearn(rf)
    with pytest.raises(ValueError, match="shape"):
        flat.predict(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="NaN"):
        flat.predict(np.full((1, 6), np.nan))
    with pytest.raises(ValueError, match="infinite"):
        flat.predict(np.full((1, 6), 1e300))  # overflows float32, as scikit-learn would refuse
    with pytest.raises(ValueError, match="backend"):
        FlatForest.from_sklearn(rf, backend="gpu")
    with pytest.raises(ValueError, match="not fitted"):
        FlatForest.from_sklearn(RandomForestRegressor())


def _arrays(rf) -> dict:
    return {**FlatForest.from_sklearn(rf).arrays(), "n_features": rf.n_features_in_}


def test_corrupted_arrays_are_rejected(fitted):
    rf, _ = fitted
    good = _arrays(rf)
    FlatForest(**good)

    def broken(**changes):
        arrays = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in good.items()}
        for key, fn in changes.items():
            arrays[key] = fn(arrays[key])
        return arrays

    def cycle(left):
        left[int(np.flatnonzero(left != -1)[3])] = 0  # points back at the root
        return left

    def shared_child(right):
        internal = np.flatnonzero(right != -1)
        right[internal[1]] = right[internal[0]] if right[internal[0]] > internal[1] else right[1]
        return right

    cases = {
        "entries": broken(value=lambda v: v[:-1]),
        "forward": broken(left=cycle),
        "feature outside": broken(feature=lambda f: np.where(f >= 0, f + 6, f)),
        "finite": broken(threshold=lambda t: np.where(t != 0, np.nan, t)),
        "roots": broken(roots=lambda r: r[::-1].copy()),
        "exactly one child": broken(right=lambda r: np.where(r == -1, r, -1)),
        "integers": broken(left=lambda v: v.astype(np.float64)),
    }
    for message, arrays in cases.items():
        with pytest.raises(ValueError, match=message):
            FlatForest(**arrays)
    with pytest.raises(ValueError):
        FlatForest(**broken(right=shared_child))
