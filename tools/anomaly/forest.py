"""Isolation Forest (Liu, Ting and Zhou, 2008), compiled with numba for streaming refits.

A streaming detector refits its forest every few hundred ticks. scikit-learn's
`IsolationForest.fit` spends about 2.5 ms of Python per tree (estimator cloning, validation), a
quarter of a second for 100 trees, which made refits the whole cost of a NAB run. The algorithm
itself is small: each tree isolates a random subsample of `max_samples` points by splitting on a
random feature at a uniform random threshold between the node's minimum and maximum, down to
depth ceil(log2(max_samples)); a point's path length is the depth of the leaf it reaches plus
c(n), the expected depth still to go among the n training points that share the leaf. The
anomaly score is 2 ** (-E[path length] / c(max_samples)), in (0, 1], higher for stranger points:
the same definition as the paper and as scikit-learn (which returns its negation).

Random draws come from numpy's `default_rng(seed)` outside the compiled code (the subsample and
two uniforms per node), so results depend only on the seed. One difference from scikit-learn: a
node splits on a feature drawn among those that are not constant in it (scikit-learn draws
among all and retries), which isolates the same points in fewer wasted levels.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_EULER_GAMMA = 0.5772156649015329


def average_path_length(n: np.ndarray | float) -> np.ndarray:
    """c(n): the mean depth of an unsuccessful search in a binary search tree of n points."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    two = n == 2
    big = n > 2
    out[two] = 1.0
    nb = n[big]
    out[big] = 2.0 * (np.log(nb - 1.0) + _EULER_GAMMA) - 2.0 * (nb - 1.0) / nb
    return out


@njit(cache=True)
def _c(n: float) -> float:
    if n > 2.0:
        return 2.0 * (math.log(n - 1.0) + _EULER_GAMMA) - 2.0 * (n - 1.0) / n
    if n == 2.0:
        return 1.0
    return 0.0


@njit(cache=True)
def _build(X, samples, uniforms, max_depth, feature, threshold, left, right, leaf_value, roots):
    """Grow one tree per row of `samples` into the node arrays; returns the node count."""
    n_trees, psi = samples.shape
    d = X.shape[1]
    idx = np.empty(psi, dtype=np.int64)
    stack_lo = np.empty(2 * psi, dtype=np.int64)
    stack_hi = np.empty(2 * psi, dtype=np.int64)
    stack_depth = np.empty(2 * psi, dtype=np.int64)
    stack_node = np.empty(2 * psi, dtype=np.int64)
    lo_f = np.empty(d)
    hi_f = np.empty(d)
    usable = np.empty(d, dtype=np.int64)
    node_count = 0
    for t in range(n_trees):
        for k in range(psi):
            idx[k] = samples[t, k]
        roots[t] = node_count
        draw = 0
        top = 0
        stack_lo[0] = 0
        stack_hi[0] = psi
        stack_depth[0] = 0
        stack_node[0] = node_count
        node_count += 1
        top = 1
        while top > 0:
            top -= 1
            lo = stack_lo[top]
            hi = stack_hi[top]
            depth = stack_depth[top]
            node = stack_node[top]
            size = hi - lo
            n_usable = 0
            if size > 1 and depth < max_depth:
                for j in range(d):
                    lo_f[j] = X[idx[lo], j]
                    hi_f[j] = X[idx[lo], j]
                for k in range(lo + 1, hi):
                    for j in range(d):
                        v = X[idx[k], j]
                        if v < lo_f[j]:
                            lo_f[j] = v
                        elif v > hi_f[j]:
                            hi_f[j] = v
                for j in range(d):
                    if hi_f[j] > lo_f[j]:
                        usable[n_usable] = j
                        n_usable += 1
            if n_usable == 0:
                feature[node] = -1
                left[node] = -1
                right[node] = -1
                leaf_value[node] = depth + _c(float(size))
                continue
            u_feat = uniforms[t, draw, 0]
            u_thr = uniforms[t, draw, 1]
            draw += 1
            j = usable[min(int(u_feat * n_usable), n_usable - 1)]
            thr = lo_f[j] + u_thr * (hi_f[j] - lo_f[j])
            if thr >= hi_f[j]:  # rounding: keep at least one point on the right
                thr = lo_f[j]
            # partition idx[lo:hi] so that X[:, j] <= thr comes first
            a = lo
            b = hi - 1
            while a <= b:
                if X[idx[a], j] <= thr:
                    a += 1
                else:
                    tmp = idx[a]
                    idx[a] = idx[b]
                    idx[b] = tmp
                    b -= 1
            feature[node] = j
            threshold[node] = thr
            leaf_value[node] = 0.0
            left[node] = node_count
            right[node] = node_count + 1
            stack_lo[top] = lo
            stack_hi[top] = a
            stack_depth[top] = depth + 1
            stack_node[top] = node_count
            stack_lo[top + 1] = a
            stack_hi[top + 1] = hi
            stack_depth[top + 1] = depth + 1
            stack_node[top + 1] = node_count + 1
            top += 2
            node_count += 2
    return node_count


@njit(cache=True)
def _path_lengths(X, feature, threshold, left, right, leaf_value, roots):
    n = X.shape[0]
    out = np.zeros(n)
    for i in range(n):
        total = 0.0
        for r in range(roots.shape[0]):
            node = roots[r]
            while feature[node] >= 0:
                node = left[node] if X[i, feature[node]] <= threshold[node] else right[node]
            total += leaf_value[node]
        out[i] = total / roots.shape[0]
    return out


class IsolationForest:
    """A fitted forest: node arrays of every tree, scored with a compiled walk."""

    def __init__(
        self,
        feature: np.ndarray,
        threshold: np.ndarray,
        left: np.ndarray,
        right: np.ndarray,
        leaf_value: np.ndarray,
        roots: np.ndarray,
        max_samples: int,
    ) -> None:
        self.feature = feature
        self.threshold = threshold
        self.left = left
        self.right = right
        self.leaf_value = leaf_value
        self.roots = roots
        self.max_samples = max_samples
        self.n_features = 0
        self._norm = float(average_path_length(np.array([max_samples]))[0])

    def path_lengths(self, X: np.ndarray) -> np.ndarray:
        """Mean path length of each row of X over the trees."""
        xv = np.ascontiguousarray(X, dtype=np.float64)
        if xv.ndim != 2 or xv.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got {xv.shape}")
        return _path_lengths(
            xv, self.feature, self.threshold, self.left, self.right, self.leaf_value, self.roots
        )

    def score(self, X: np.ndarray) -> np.ndarray:
        """Anomaly scores 2 ** (-E[h] / c(max_samples)) of the rows of X, in (0, 1]."""
        h = self.path_lengths(X)
        if self._norm == 0.0:
            return np.ones_like(h)
        return np.power(2.0, -h / self._norm)

    def score_one(self, x: np.ndarray) -> float:
        """Anomaly score of one point (1-d array of n_features)."""
        return float(self.score(np.asarray(x, dtype=np.float64).reshape(1, -1))[0])


def fit_forest(X: np.ndarray, *, n_estimators: int, max_samples: int, seed: int) -> IsolationForest:
    """Fit an Isolation Forest on the rows of X (each tree on `max_samples` rows, no
    replacement; all rows when there are fewer)."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"need a non-empty 2-d array of training rows, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("training rows must be finite")
    if n_estimators < 1 or max_samples < 2:
        raise ValueError("need n_estimators >= 1 and max_samples >= 2")
    n = X.shape[0]
    psi = min(max_samples, n)
    rng = np.random.default_rng(seed)
    if psi == n:
        samples = np.tile(np.arange(n, dtype=np.int64), (n_estimators, 1))
    else:
        samples = np.stack([rng.choice(n, psi, replace=False) for _ in range(n_estimators)])
    uniforms = rng.random((n_estimators, psi, 2))
    max_depth = max(1, math.ceil(math.log2(psi))) if psi > 1 else 0
    cap = n_estimators * (2 * psi - 1)
    feature = np.empty(cap, dtype=np.int64)
    threshold = np.zeros(cap)
    left = np.empty(cap, dtype=np.int64)
    right = np.empty(cap, dtype=np.int64)
    leaf_value = np.zeros(cap)
    roots = np.empty(n_estimators, dtype=np.int64)
    used = _build(
        X, samples, uniforms, max_depth, feature, threshold, left, right, leaf_value, roots
    )
    forest = IsolationForest(
        feature[:used].copy(),
        threshold[:used].copy(),
        left[:used].copy(),
        right[:used].copy(),
        leaf_value[:used].copy(),
        roots,
        psi,
    )
    forest.n_features = X.shape[1]
    return forest
