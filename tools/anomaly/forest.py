"""A fitted scikit-learn IsolationForest flattened into arrays, for fast scoring of one point.

`IsolationForest.score_samples` costs milliseconds per call however few rows it gets (input
validation, joblib dispatch, one `apply` per tree). A streaming detector scores one point per tick,
so the trees are copied once per refit into flat arrays and walked with numpy, all trees at once,
one tree level per step. Results equal scikit-learn's (inputs are compared in float32, as
scikit-learn does), which the tests check.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import IsolationForest

_EULER_GAMMA = 0.5772156649015329


def average_path_length(n: np.ndarray) -> np.ndarray:
    """c(n): the mean depth of an unsuccessful search in a binary search tree of n points.

    Added at a leaf holding n training points, for the depth the tree did not grow.
    """
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    two = n == 2
    big = n > 2
    out[two] = 1.0
    nb = n[big]
    out[big] = 2.0 * (np.log(nb - 1.0) + _EULER_GAMMA) - 2.0 * (nb - 1.0) / nb
    return out


class FlatIsolationForest:
    """The trees of a fitted IsolationForest as concatenated node arrays.

    Leaves point to themselves, so every tree can be walked the same number of steps.
    `score` returns the isolation score 2 ** (-E[h(x)] / c(max_samples)) in (0, 1], higher for
    stranger points: the negation of scikit-learn's `score_samples`.
    """

    def __init__(self, forest: IsolationForest) -> None:
        n_features = forest.n_features_in_
        feats, thrs, lefts, rights, leaf_vals, roots = [], [], [], [], [], []
        offset = 0
        depth_max = 0
        for tree, used in zip(forest.estimators_, forest.estimators_features_, strict=True):
            t = tree.tree_
            n_nodes = t.node_count
            left = t.children_left.astype(np.int64)
            right = t.children_right.astype(np.int64)
            is_leaf = left < 0
            depth = t.compute_node_depths().astype(np.int64) - 1  # root at depth 0
            depth_max = max(depth_max, int(depth.max()))
            ids = np.arange(n_nodes, dtype=np.int64) + offset
            feature = t.feature.astype(np.int64)
            if len(used) != n_features or np.any(np.asarray(used) != np.arange(n_features)):
                feature = np.where(is_leaf, 0, np.asarray(used, dtype=np.int64)[feature])
            feats.append(np.where(is_leaf, 0, feature))
            thrs.append(np.where(is_leaf, np.inf, t.threshold))
            lefts.append(np.where(is_leaf, ids, left + offset))
            rights.append(np.where(is_leaf, ids, right + offset))
            samples = t.n_node_samples.astype(np.float64)
            leaf_vals.append(depth + average_path_length(samples))
            roots.append(offset)
            offset += n_nodes
        self.feature = np.concatenate(feats)
        self.threshold = np.concatenate(thrs)
        self.left = np.concatenate(lefts)
        self.right = np.concatenate(rights)
        self.leaf_value = np.concatenate(leaf_vals)
        self.roots = np.asarray(roots, dtype=np.int64)
        self.n_steps = depth_max
        self.n_features = n_features
        denom = len(roots) * float(average_path_length(np.array([forest.max_samples_]))[0])
        self._denominator = denom

    def _finish(self, total_depth: np.ndarray) -> np.ndarray:
        if self._denominator == 0:
            return np.ones_like(total_depth)
        return np.power(2.0, -total_depth / self._denominator)

    def score_one(self, x: np.ndarray) -> float:
        """Isolation score of one point (1-d array of n_features)."""
        xv = np.asarray(x, dtype=np.float32).astype(np.float64)
        node = self.roots
        for _ in range(self.n_steps):
            go_left = xv[self.feature[node]] <= self.threshold[node]
            node = np.where(go_left, self.left[node], self.right[node])
        return float(self._finish(np.array([self.leaf_value[node].sum()]))[0])

    def score(self, X: np.ndarray) -> np.ndarray:
        """Isolation scores of the rows of X (2-d)."""
        xv = np.asarray(X, dtype=np.float32).astype(np.float64)
        if xv.ndim != 2 or xv.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got {xv.shape}")
        rows = np.arange(xv.shape[0])[:, None]
        node = np.broadcast_to(self.roots, (xv.shape[0], len(self.roots))).copy()
        for _ in range(self.n_steps):
            go_left = xv[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(go_left, self.left[node], self.right[node])
        return self._finish(self.leaf_value[node].sum(axis=1))


def fit_forest(
    X: np.ndarray, *, n_estimators: int, max_samples: int, seed: int
) -> FlatIsolationForest:
    """Fit scikit-learn's IsolationForest on X and flatten it."""
    forest = IsolationForest(
        n_estimators=n_estimators,
        max_samples=min(max_samples, X.shape[0]),
        random_state=seed,
    )
    forest.fit(X)
    return FlatIsolationForest(forest)
