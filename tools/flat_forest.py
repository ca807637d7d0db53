"""A fitted random forest flattened into contiguous arrays, evaluated without scikit-learn.

Why: `RandomForestRegressor.predict` costs milliseconds per call, almost all of it per-call
overhead (input validation, joblib dispatch, one Python call per tree). Forecasts are refreshed on
every telemetry tick for a handful of rows, so that overhead is the whole cost. Here every node of
every tree lives in one set of arrays, and a depth-synchronous traversal walks all (tree, row)
pairs at once: each step is a few vectorised `take`s, and the number of steps is the forest's
depth, not its size.

Exactness: scikit-learn casts X to float32 and then compares `x <= threshold` with the float64
threshold. We round X through float32 the same way and compare in float64, so every row reaches
the same leaf. The forest mean adds the trees' values in tree order into a float64 zero and divides
by the tree count, as scikit-learn does when it predicts with one job; results are then bitwise
equal (with several jobs scikit-learn's summation order varies by a few ulps).

Two interchangeable walkers give the same leaves: a numba-compiled loop (used when numba imports;
about 20 µs for 4 rows x 100 trees) and a pure-numpy depth-synchronous walk (about 60 µs) where
leaves point to themselves, so a pair that reaches a leaf early simply stays there without masks.
The numba function is compiled lazily, on the first prediction in a process (about half a second).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

try:  # optional accelerator; the numpy walk is always available and gives identical results
    import numba as _numba
except ImportError:  # pragma: no cover - exercised only where numba is absent
    _numba = None

Backend = Literal["auto", "numpy", "numba"]
HAVE_NUMBA = _numba is not None

_NO_CHILD = -1
_ROW_CHUNK = 8192
"""Rows evaluated per traversal pass; bounds the (tree, row) working set for big batches."""


class FlatForest:
    """Every tree of a regression forest in contiguous arrays (global node indices).

    Arrays, one entry per node, trees stored one after another starting at `roots[i]`:
    `feature` (int32, -1 at leaves), `threshold` (float64, 0 at leaves), `left`/`right`
    (int32 global child indices, -1 at leaves: that is how leaves are marked) and `value`
    (float64, the leaf's prediction; internal nodes keep scikit-learn's node mean).
    The constructor validates the arrays, so a corrupted or hand-made forest fails here with
    a clear error instead of looping or indexing out of range during prediction.
    """

    __slots__ = (
        "_backend",
        "_cache",
        "_child",
        "_feat",
        "_thr",
        "feature",
        "left",
        "max_depth",
        "n_features",
        "right",
        "roots",
        "threshold",
        "value",
    )

    def __init__(
        self,
        *,
        feature: np.ndarray,
        threshold: np.ndarray,
        left: np.ndarray,
        right: np.ndarray,
        value: np.ndarray,
        roots: np.ndarray,
        n_features: int,
        backend: Backend = "auto",
    ) -> None:
        self.feature = _as_1d(feature, np.int32, "feature")
        self.threshold = _as_1d(threshold, np.float64, "threshold")
        self.left = _as_1d(left, np.int32, "left")
        self.right = _as_1d(right, np.int32, "right")
        self.value = _as_1d(value, np.float64, "value")
        self.roots = _as_1d(roots, np.int32, "roots")
        self.n_features = int(n_features)
        _validate(self)
        self.max_depth = _max_depth(self.left, self.right, self.roots)
        leaf = self.left == _NO_CHILD
        idx = np.arange(self.n_nodes, dtype=np.int64)
        self._feat = np.where(leaf, 0, self.feature).astype(np.int64)
        self._thr = np.where(leaf, 0.0, self.threshold)
        child = np.empty(2 * self.n_nodes, dtype=np.int64)
        child[0::2] = np.where(leaf, idx, self.left)
        child[1::2] = np.where(leaf, idx, self.right)
        self._child = child
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._backend = _resolve_backend(backend)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_sklearn(cls, forest: Any, *, backend: Backend = "auto") -> FlatForest:
        """Flatten a fitted single-output `RandomForestRegressor` (or any forest of
        `DecisionTreeRegressor`s exposing `estimators_` and `n_features_in_`)."""
        estimators = getattr(forest, "estimators_", None)
        if not estimators:
            raise ValueError("forest is not fitted (no estimators_)")
        feats, thrs, lefts, rights, values, roots = [], [], [], [], [], []
        offset = 0
        for tree in estimators:
            t = tree.tree_
            if t.n_outputs != 1 or t.value.shape[2] != 1:
                raise ValueError("only single-output regression forests can be flattened")
            leaf = t.children_left == _NO_CHILD
            roots.append(offset)
            feats.append(np.where(leaf, -1, t.feature))
            thrs.append(np.where(leaf, 0.0, t.threshold))
            lefts.append(np.where(leaf, _NO_CHILD, t.children_left + offset))
            rights.append(np.where(leaf, _NO_CHILD, t.children_right + offset))
            values.append(t.value[:, 0, 0])
            offset += t.node_count
        return cls(
            feature=np.concatenate(feats),
            threshold=np.concatenate(thrs),
            left=np.concatenate(lefts),
            right=np.concatenate(rights),
            value=np.concatenate(values),
            roots=np.asarray(roots),
            n_features=int(forest.n_features_in_),
            backend=backend,
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """The canonical arrays (what an artifact stores); derived traversal arrays excluded."""
        return {
            "feature": self.feature,
            "threshold": self.threshold,
            "left": self.left,
            "right": self.right,
            "value": self.value,
            "roots": self.roots,
        }

    @property
    def backend(self) -> str:
        """The walker in use: "numba" or "numpy"."""
        return self._backend

    @property
    def n_trees(self) -> int:
        return int(self.roots.shape[0])

    @property
    def n_nodes(self) -> int:
        return int(self.feature.shape[0])

    # ------------------------------------------------------------------ inference
    def apply(self, X: np.ndarray) -> np.ndarray:
        """The leaf each row reaches in each tree: global node ids, shape (n_trees, n_rows)."""
        Xc = self._prepare(X)
        n = Xc.shape[0]
        if self._backend == "numba":
            leaves = np.empty((self.n_trees, n), dtype=np.int64)
            _numba_walker()(
                Xc, self.roots, self.feature, self.threshold, self.left, self.right, leaves
            )
            return leaves
        if n <= _ROW_CHUNK:
            return self._walk(Xc)
        leaves = np.empty((self.n_trees, n), dtype=np.int64)
        for start in range(0, n, _ROW_CHUNK):
            leaves[:, start : start + _ROW_CHUNK] = self._walk(Xc[start : start + _ROW_CHUNK])
        return leaves

    def predict_per_tree(self, X: np.ndarray) -> np.ndarray:
        """Each tree's prediction, shape (n_trees, n_rows), float64."""
        return self.value.take(self.apply(X))

    def with_leaf_values(self, value: np.ndarray) -> FlatForest:
        """The same trees with other node values (e.g. leaf values refitted by the caller)."""
        arrays = self.arrays()
        arrays["value"] = value
        return FlatForest(**arrays, n_features=self.n_features, backend=self._backend)

    def leaf_means(
        self, X: np.ndarray, second: np.ndarray, block: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per row, the mean over trees of `value` and of `second` (another per-node array) at
        the leaves the row reaches: bitwise `value.take(self.apply(X)).mean(axis=0)` and the
        same for `second` (each row's terms summed in tree order, then divided by the count).

        X is read as consecutive blocks of `block` rows that differ in a few columns (the
        predictive router's refresh grid: one backend's state, many prompt sizes and in-flight
        counts). With numba each tree is walked once per block, the block's rows split at each
        node, so a split on a column the block holds constant costs one comparison instead of
        one per row (about 6x faster than `apply` on that grid); without numba, `apply`."""
        second = np.asarray(second, dtype=np.float64)
        if second.shape != self.value.shape:
            raise ValueError("second must hold one value per node")
        if block < 1:
            raise ValueError("block must be at least 1")
        if self._backend != "numba":
            leaves = self.apply(X)
            return self.value.take(leaves).mean(axis=0), second.take(leaves).mean(axis=0)
        Xc = self._prepare(X)
        s1 = np.zeros(Xc.shape[0])
        s2 = np.zeros(Xc.shape[0])
        _numba_block_walker()(
            Xc, block, self.roots, self.feature, self.threshold, self.left, self.right,
            self.value, second, self.max_depth, s1, s2,
        )  # fmt: skip
        n = float(self.n_trees)
        return s1 / n, s2 / n

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The forest mean, shape (n_rows,), equal to scikit-learn's `predict`."""
        return mean_over_trees(self.predict_per_tree(X))

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must have shape (n, {self.n_features}), got {X.shape}")
        # Round through float32 exactly as scikit-learn does, then compare in float64.
        with np.errstate(over="ignore", invalid="ignore"):
            Xc = np.ascontiguousarray(X, dtype=np.float32).astype(np.float64)
        if not np.isfinite(Xc).all():
            raise ValueError("X contains NaN or values that are infinite in float32")
        return Xc

    def _walk(self, Xc: np.ndarray) -> np.ndarray:
        n = Xc.shape[0]
        start, row_offset = self._start(n)
        flat = Xc.ravel()
        node = start if self.max_depth else start.copy()  # never hand out the cached array
        feat, thr, child = self._feat, self._thr, self._child
        for _ in range(self.max_depth):
            x = flat.take(row_offset + feat.take(node))
            node = child.take(2 * node + (x > thr.take(node)))
        return node.reshape(self.n_trees, n)

    def _start(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        cached = self._cache.get(n)
        if cached is None:
            start = np.repeat(self.roots.astype(np.int64), n)
            row_offset = np.tile(np.arange(n, dtype=np.int64) * self.n_features, self.n_trees)
            cached = (start, row_offset)
            if len(self._cache) < 16:
                self._cache[n] = cached
        return cached


def _resolve_backend(backend: str) -> str:
    if backend == "auto":
        return "numba" if HAVE_NUMBA else "numpy"
    if backend == "numba" and not HAVE_NUMBA:
        raise ValueError("backend 'numba' requested but numba is not installed")
    if backend not in ("numpy", "numba"):
        raise ValueError(f"unknown backend {backend!r}; use 'auto', 'numpy' or 'numba'")
    return backend


_NUMBA_WALK: Any = None


def _numba_walker() -> Any:
    """Compile (once per process) and return the numba walker."""
    global _NUMBA_WALK
    if _NUMBA_WALK is None:

        def walk(Xc, roots, feature, threshold, left, right, out):  # pragma: no cover
            for t in range(roots.shape[0]):
                root = roots[t]
                for i in range(Xc.shape[0]):
                    node = root
                    child = left[node]
                    while child != -1:
                        node = child if Xc[i, feature[node]] <= threshold[node] else right[node]
                        child = left[node]
                    out[t, i] = node

        _NUMBA_WALK = _numba.njit(nogil=True, cache=False)(walk)
    return _NUMBA_WALK


_NUMBA_BLOCK_WALK: Any = None


def _numba_block_walker() -> Any:
    """Compile (once per process) and return the block walker of `FlatForest.leaf_means`."""
    global _NUMBA_BLOCK_WALK
    if _NUMBA_BLOCK_WALK is None:

        def block_walk(
            Xc, block, roots, feature, threshold, left, right, value, second, depth, s1, s2
        ):  # pragma: no cover
            n, nf = Xc.shape
            idx = np.empty(block, dtype=np.int64)
            varying = np.zeros(nf, dtype=np.bool_)
            cap = 2 * depth + 2  # a depth-first stack holds at most one sibling per level
            st_node = np.empty(cap, dtype=np.int64)
            st_lo = np.empty(cap, dtype=np.int64)
            st_hi = np.empty(cap, dtype=np.int64)
            for start in range(0, n, block):
                stop = min(start + block, n)
                for f in range(nf):
                    v0 = Xc[start, f]
                    varying[f] = False
                    for r in range(start + 1, stop):
                        if Xc[r, f] != v0:
                            varying[f] = True
                            break
                for t in range(roots.shape[0]):  # trees in order: each row sums in tree order
                    for k in range(stop - start):
                        idx[k] = start + k
                    st_node[0] = roots[t]
                    st_lo[0] = 0
                    st_hi[0] = stop - start
                    sp = 1
                    while sp > 0:
                        sp -= 1
                        node = st_node[sp]
                        lo = st_lo[sp]
                        hi = st_hi[sp]
                        first = idx[lo]
                        lft = left[node]
                        while lft != -1 and not varying[feature[node]]:
                            # every row of the range goes the same way
                            node = (
                                lft if Xc[first, feature[node]] <= threshold[node] else right[node]
                            )
                            lft = left[node]
                        if lft == -1:
                            v = value[node]
                            w = second[node]
                            for k in range(lo, hi):
                                r = idx[k]
                                s1[r] += v
                                s2[r] += w
                            continue
                        f = feature[node]
                        thr = threshold[node]
                        i = lo
                        j = hi - 1
                        while i <= j:  # rows going left to the front, right to the back
                            r = idx[i]
                            if Xc[r, f] <= thr:
                                i += 1
                            else:
                                idx[i] = idx[j]
                                idx[j] = r
                                j -= 1
                        if hi > i:
                            st_node[sp] = right[node]
                            st_lo[sp] = i
                            st_hi[sp] = hi
                            sp += 1
                        if i > lo:
                            st_node[sp] = lft
                            st_lo[sp] = lo
                            st_hi[sp] = i
                            sp += 1

        _NUMBA_BLOCK_WALK = _numba.njit(nogil=True, cache=False)(block_walk)
    return _NUMBA_BLOCK_WALK


def mean_over_trees(per_tree: np.ndarray) -> np.ndarray:
    """Mean over axis 0, summing strictly in tree order (a cumulative sum never pairs terms),
    then dividing by the count: the same float operations as scikit-learn's forest mean."""
    per_tree = np.asarray(per_tree, dtype=np.float64)
    if per_tree.shape[0] == 0:
        raise ValueError("no trees")
    return np.cumsum(per_tree, axis=0)[-1] / per_tree.shape[0]


# ---------------------------------------------------------------------- validation helpers
def _as_1d(a: np.ndarray, dtype: type, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if np.issubdtype(np.dtype(dtype), np.integer):
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must hold integers, got {arr.dtype}")
        if arr.size and (arr.min() < np.iinfo(dtype).min or arr.max() > np.iinfo(dtype).max):
            raise ValueError(f"{name} has values outside {np.dtype(dtype).name}")
    elif not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} must hold floats, got {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=dtype)


def _validate(f: FlatForest) -> None:
    n = f.n_nodes
    if n == 0 or f.roots.size == 0:
        raise ValueError("forest has no nodes or no trees")
    for name in ("threshold", "left", "right", "value"):
        if getattr(f, name).shape[0] != n:
            raise ValueError(f"{name} has {getattr(f, name).shape[0]} entries, expected {n}")
    if f.n_features < 1:
        raise ValueError("n_features must be at least 1")
    if f.roots[0] != 0 or np.any(np.diff(f.roots) < 1) or f.roots[-1] >= n:
        raise ValueError("roots must start at 0, increase strictly and lie inside the node arrays")
    leaf = f.left == _NO_CHILD
    if not np.array_equal(leaf, f.right == _NO_CHILD):
        raise ValueError("a node has exactly one child; leaves must have left == right == -1")
    internal = ~leaf
    if np.any(f.feature[leaf] != -1):
        raise ValueError("leaves must have feature -1")
    feats = f.feature[internal]
    if feats.size and (feats.min() < 0 or feats.max() >= f.n_features):
        raise ValueError(f"split feature outside [0, {f.n_features})")
    if not np.isfinite(f.threshold[internal]).all() or not np.isfinite(f.value).all():
        raise ValueError("thresholds and values must be finite")
    # Each node's children lie after it and inside its own tree: the walk always terminates.
    tree_end = np.append(f.roots[1:], n)
    owner = np.searchsorted(f.roots, np.arange(n), side="right") - 1
    end = tree_end[owner]
    idx = np.arange(n)
    for child in (f.left, f.right):
        c = child[internal]
        if np.any(c <= idx[internal]) or np.any(c >= end[internal]):
            raise ValueError("child indices must point forward inside the same tree")
    children = np.concatenate([f.left[internal], f.right[internal]])
    is_root = np.zeros(n, dtype=bool)
    is_root[f.roots] = True
    if children.size != n - f.roots.size or np.unique(children).size != children.size:
        raise ValueError("every node except a root must have exactly one parent")
    if np.any(is_root[children]):
        raise ValueError("a root cannot be another node's child")


def _max_depth(left: np.ndarray, right: np.ndarray, roots: np.ndarray) -> int:
    """Levels below the roots: the number of traversal steps that brings every path to a leaf."""
    frontier = roots.astype(np.int64)
    depth = 0
    while True:
        internal = frontier[left[frontier] != _NO_CHILD]
        if internal.size == 0:
            return depth
        frontier = np.concatenate([left[internal], right[internal]]).astype(np.int64)
        depth += 1
