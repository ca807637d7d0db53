"""An online regressor that learns from outcomes as they arrive, and a residual corrector on it.

`OnlineLearner` is scikit-learn's `SGDRegressor.partial_fit` behind a river-like interface
(`learn_one` / `learn_many` / `predict_one` / `predict_many`). SGD is only well conditioned on
standardised inputs, but a stream has no training set to fit a scaler on, so each feature is
standardised with *running* statistics (`RunningStats`: Welford's mean and variance, merged batch
by batch with Chan et al.'s parallel formula) that are updated with a batch *before* SGD sees it.
The target is standardised the same way (``scale_target=True``), which makes the step size
independent of the latency's scale (tens or thousands of ms) and keeps the defaults usable.
Early on the statistics are unstable: a feature whose spread is still zero (the first sample,
or a constant feature) is only centred, never divided by ~0.

Two uses in the closed loop:

* a **challenger** that predicts the latency directly from the forecaster's features;
* a **residual correction** of the forest (`ResidualCorrector`): it learns
  ``actual - forest_prediction`` and predicts ``forest + learned residual``, with the correction
  bounded and the result clipped to a sane range, and no correction at all until it has seen
  ``min_samples`` outcomes.

Non-finite inputs (NaN, inf) are rejected with an error naming the row and feature, before any
state changes. The state exports as plain arrays plus a JSON-able dict (no pickle), and imports
back into a learner that predicts and keeps learning exactly as the original would.

Prediction does not call scikit-learn (a per-call overhead of tens of µs): it is the same affine
map evaluated in numpy on the fitted ``coef_`` and ``intercept_``. Learning does: each
``partial_fit`` call costs about half a millisecond of scikit-learn overhead whatever its size, so
feed outcomes in micro-batches with `learn_many` where throughput matters (3,000 rows in one call
take about as long as two `learn_one` calls).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from sklearn import config_context
from sklearn.linear_model import SGDRegressor

STATE_FORMAT = 1
MAX_ABS_VALUE = 1e100
"""Inputs beyond this magnitude would overflow the running sums of squares; they are rejected."""
_SCALE_EPS = 1e-12

Row = Mapping[str, float] | Sequence[float] | np.ndarray


class RunningStats:
    """Per-column running mean and variance (population, ddof=0), numerically stable.

    `update` merges a batch with Chan, Golub and LeVeque's formula, which for a batch of one row is
    Welford's update; both avoid the catastrophic cancellation of sum / sum-of-squares.
    """

    def __init__(self, n_columns: int) -> None:
        self.n = 0
        self.mean = np.zeros(n_columns)
        self.m2 = np.zeros(n_columns)

    def update(self, batch: np.ndarray) -> None:
        b = np.asarray(batch, dtype=np.float64)
        if b.ndim == 1:
            b = b[None, :]
        nb = b.shape[0]
        if nb == 0:
            return
        mean_b = b.mean(axis=0)
        m2_b = ((b - mean_b) ** 2).sum(axis=0)
        n = self.n + nb
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2_b + delta * delta * (self.n * nb / n)
        self.n = n

    @property
    def var(self) -> np.ndarray:
        return self.m2 / self.n if self.n > 0 else np.zeros_like(self.m2)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(np.maximum(self.var, 0.0))

    def scale(self) -> np.ndarray:
        """Divisor for standardising: the std, or 1 where the spread is still (near) zero."""
        s = self.std
        tiny = s <= _SCALE_EPS * (1.0 + np.abs(self.mean))
        return np.where(tiny, 1.0, s)


@dataclass(frozen=True)
class LearnerParams:
    """Hyperparameters of `OnlineLearner` (the SGD ones are passed to `SGDRegressor`).

    The defaults suit a standardised target: squared loss, a light L2 penalty, and scikit-learn's
    ``invscaling`` step ``eta0 / t**power_t``, which still moves after a million samples (so the
    learner keeps tracking drift) but settles enough to converge on a stationary stream.
    ``output_min`` / ``output_max`` clip predictions (e.g. 0 for a latency).
    """

    loss: Literal["squared_error", "huber"] = "squared_error"
    penalty: Literal["l2", "l1", "elasticnet"] | None = "l2"
    alpha: float = 1e-5
    learning_rate: Literal["constant", "invscaling", "adaptive"] = "invscaling"
    eta0: float = 0.02
    power_t: float = 0.25
    epsilon: float = 1.35
    scale_target: bool = True
    random_state: int = 0
    output_min: float | None = None
    output_max: float | None = None

    def sgd(self) -> SGDRegressor:
        return SGDRegressor(
            loss=self.loss,
            penalty=self.penalty,
            alpha=self.alpha,
            learning_rate=self.learning_rate,
            eta0=self.eta0,
            power_t=self.power_t,
            epsilon=self.epsilon,
            random_state=self.random_state,
            shuffle=False,  # a stream's order is the data's order; also keeps restores exact
            fit_intercept=True,
        )


class OnlineLearner:
    """Online linear regression: running standardisation + `SGDRegressor.partial_fit`.

    Features are given as dicts (``{"load": 12.0, ...}``, river style) or as arrays in the order
    of ``feature_names``. With neither ``feature_names`` nor ``n_features``, the first dict seen
    fixes the names (in its key order); the first array fixes the width.
    """

    def __init__(
        self,
        feature_names: Sequence[str] | None = None,
        *,
        n_features: int | None = None,
        params: LearnerParams | None = None,
        **param_overrides: Any,
    ) -> None:
        base = params or LearnerParams()
        self.params = LearnerParams(**{**asdict(base), **param_overrides})
        if feature_names is not None:
            names = [str(f) for f in feature_names]
            if len(set(names)) != len(names) or not names:
                raise ValueError("feature_names must be unique and non-empty")
            if n_features is not None and n_features != len(names):
                raise ValueError("n_features disagrees with feature_names")
            n_features = len(names)
            self.feature_names: list[str] | None = names
        else:
            self.feature_names = None
        self.n_features = n_features
        self._sgd = self.params.sgd()
        self._x_stats: RunningStats | None = (
            None if n_features is None else RunningStats(n_features)
        )
        self._y_stats = RunningStats(1)
        self.n_seen = 0

    # ------------------------------------------------------------------ inputs

    def _ensure_width(self, width: int, names: list[str] | None) -> None:
        if self.n_features is None:
            if width == 0:
                raise ValueError("a row needs at least one feature")
            self.n_features = width
            self._x_stats = RunningStats(width)
            if names is not None and self.feature_names is None:
                self.feature_names = names
        elif width != self.n_features:
            raise ValueError(f"expected {self.n_features} features, got {width}")

    def _row_from_mapping(self, x: Mapping[str, float]) -> np.ndarray:
        if self.feature_names is None:
            self._ensure_width(len(x), [str(k) for k in x])
        names = self.feature_names
        assert names is not None
        missing = [f for f in names if f not in x]
        extra = [k for k in x if k not in set(names)]
        if missing or extra:
            raise ValueError(f"feature mismatch: missing {missing}, unexpected {extra}")
        try:
            return np.array([float(x[f]) for f in names], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"a feature value is not a number: {exc}") from None

    def _matrix(self, X: Sequence[Row] | np.ndarray) -> np.ndarray:
        if isinstance(X, np.ndarray):
            M = X.astype(np.float64, copy=False)
        else:
            rows = list(X)
            if rows and isinstance(rows[0], Mapping):
                M = np.array([self._row_from_mapping(r) for r in rows], dtype=np.float64)
            else:
                try:
                    M = np.asarray(rows, dtype=np.float64)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"X is not a numeric matrix: {exc}") from None
        if M.ndim == 1 and M.size == 0:
            M = M.reshape(0, self.n_features or 0)
        if M.ndim != 2:
            raise ValueError(f"X must be two-dimensional, got shape {M.shape}")
        self._ensure_width(M.shape[1], None)
        return M

    def _one(self, x: Row) -> np.ndarray:
        if isinstance(x, Mapping):
            return self._row_from_mapping(x)[None, :]
        return self._matrix(np.asarray(x, dtype=np.float64).reshape(1, -1))

    def _check_finite(self, M: np.ndarray, what: str = "x") -> None:
        bad = ~np.isfinite(M) | (np.abs(M) > MAX_ABS_VALUE)
        if bad.any():
            r, c = (int(v[0]) for v in np.nonzero(bad))
            name = self.feature_names[c] if self.feature_names else f"column {c}"
            raise ValueError(
                f"{what} has a NaN, infinite or out-of-range value at row {r}, feature {name!r} "
                f"({M[r, c]!r}); the batch was rejected, nothing was learned"
            )

    @staticmethod
    def _target(y: float | Sequence[float] | np.ndarray, n: int) -> np.ndarray:
        t = np.atleast_1d(np.asarray(y, dtype=np.float64))
        if t.ndim != 1 or t.size != n:
            raise ValueError(f"y must hold {n} value(s), got shape {t.shape}")
        bad = ~np.isfinite(t) | (np.abs(t) > MAX_ABS_VALUE)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"y has a NaN, infinite or out-of-range value at row {i} ({t[i]!r}); "
                "the batch was rejected, nothing was learned"
            )
        return t

    # ------------------------------------------------------------------ learning

    def _fit_batch(self, M: np.ndarray, y: np.ndarray) -> None:
        if M.shape[0] == 0:
            return
        assert self._x_stats is not None
        self._x_stats.update(M)  # statistics first, so this batch is scaled like later ones
        self._y_stats.update(y[:, None])
        self._refresh_scaling()
        Z = (M - self._x_mu) / self._x_sd
        # Inputs were checked above: skip scikit-learn's repeated validation (most of its overhead).
        with config_context(assume_finite=True, skip_parameter_validation=True):
            self._sgd.partial_fit(Z, self._z_target(y))
        self.n_seen += M.shape[0]

    def _refresh_scaling(self) -> None:
        """Cache the standardisation so that prediction does not recompute it per call."""
        assert self._x_stats is not None
        self._x_mu = self._x_stats.mean.copy()
        self._x_sd = self._x_stats.scale()
        if self.params.scale_target:
            self._y_mu, self._y_sd = float(self._y_stats.mean[0]), float(self._y_stats.scale()[0])
        else:
            self._y_mu, self._y_sd = 0.0, 1.0

    def _z_target(self, y: np.ndarray) -> np.ndarray:
        return (y - self._y_mu) / self._y_sd

    def learn_one(self, x: Row, y: float) -> OnlineLearner:
        M = self._one(x)
        self._check_finite(M)
        self._fit_batch(M, self._target(y, 1))
        return self

    def learn_many(
        self, X: Sequence[Row] | np.ndarray, y: Sequence[float] | np.ndarray
    ) -> OnlineLearner:
        M = self._matrix(X)
        t = self._target(y, M.shape[0])
        self._check_finite(M)
        self._fit_batch(M, t)
        return self

    # ------------------------------------------------------------------ prediction

    @property
    def fitted(self) -> bool:
        return self.n_seen > 0

    def _predict(self, M: np.ndarray) -> np.ndarray:
        if not self.fitted:
            raise ValueError("the learner has not seen any sample yet")
        self._check_finite(M)
        out = ((M - self._x_mu) / self._x_sd) @ self._sgd.coef_ + self._sgd.intercept_[0]
        out = self._y_mu + self._y_sd * out
        lo = -np.inf if self.params.output_min is None else self.params.output_min
        hi = np.inf if self.params.output_max is None else self.params.output_max
        return np.clip(out, lo, hi)

    def predict_one(self, x: Row) -> float:
        return float(self._predict(self._one(x))[0])

    def coefficients(self) -> tuple[dict[str, float], float]:
        """The fitted model in the inputs' own units: ``y ≈ sum(w[f] * x[f]) + intercept``.

        Useful to explain the learner (e.g. "+2.1 ms per unit of load"); undoes both scalings.
        """
        if not self.fitted:
            raise ValueError("the learner has not seen any sample yet")
        w = self._y_sd * self._sgd.coef_ / self._x_sd
        b = self._y_mu + self._y_sd * self._sgd.intercept_[0] - float(w @ self._x_mu)
        names = self.feature_names or [f"x{i}" for i in range(w.size)]
        return {n: float(v) for n, v in zip(names, w, strict=True)}, float(b)

    def predict_many(self, X: Sequence[Row] | np.ndarray) -> np.ndarray:
        return self._predict(self._matrix(X))

    # ------------------------------------------------------------------ state

    def export_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Plain arrays and a JSON-able dict; `from_state` rebuilds an identical learner."""
        k = self.n_features or 0
        arrays = {
            "coef": np.array(self._sgd.coef_ if self.fitted else np.zeros(k), dtype=np.float64),
            "intercept": np.array(self._sgd.intercept_ if self.fitted else [0.0]),
            "x_mean": np.zeros(k) if self._x_stats is None else self._x_stats.mean.copy(),
            "x_m2": np.zeros(k) if self._x_stats is None else self._x_stats.m2.copy(),
            "y_mean": self._y_stats.mean.copy(),
            "y_m2": self._y_stats.m2.copy(),
        }
        meta = {
            "kind": "online_learner",
            "format": STATE_FORMAT,
            "feature_names": self.feature_names,
            "n_features": self.n_features,
            "n_seen": self.n_seen,
            "sgd_t": float(getattr(self._sgd, "t_", 1.0)),
            "params": asdict(self.params),
        }
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> OnlineLearner:
        if meta.get("kind") != "online_learner" or meta.get("format") != STATE_FORMAT:
            raise ValueError(
                f"not an online learner state of format {STATE_FORMAT}: "
                f"kind={meta.get('kind')!r} format={meta.get('format')!r}"
            )
        learner = cls(
            meta["feature_names"],
            n_features=meta["n_features"],
            params=LearnerParams(**meta["params"]),
        )
        n_seen = int(meta["n_seen"])
        k = learner.n_features
        if k is None:
            if n_seen:
                raise ValueError("state has samples but no feature count")
            return learner
        for name in ("coef", "x_mean", "x_m2"):
            if np.asarray(arrays[name]).shape != (k,):
                raise ValueError(f"state array {name!r} should have shape ({k},)")
        for name, arr in arrays.items():
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"state array {name!r} holds a non-finite value")
        assert learner._x_stats is not None
        learner._x_stats.n = n_seen
        learner._x_stats.mean = np.array(arrays["x_mean"], dtype=np.float64)
        learner._x_stats.m2 = np.array(arrays["x_m2"], dtype=np.float64)
        learner._y_stats.n = n_seen
        learner._y_stats.mean = np.array(arrays["y_mean"], dtype=np.float64).reshape(1)
        learner._y_stats.m2 = np.array(arrays["y_m2"], dtype=np.float64).reshape(1)
        learner.n_seen = n_seen
        if n_seen:
            sgd = learner._sgd
            sgd.coef_ = np.array(arrays["coef"], dtype=np.float64)
            sgd.intercept_ = np.array(arrays["intercept"], dtype=np.float64).reshape(1)
            sgd.t_ = float(meta["sgd_t"])
            sgd.n_features_in_ = k
            learner._refresh_scaling()
        return learner


@dataclass
class ResidualCorrector:
    """Learns the forest's residual ``actual - base`` and adds it back, within bounds.

    * No correction (the base prediction unchanged) until ``min_samples`` outcomes were learned:
      a corrector that has seen three rows should not move the forecast.
    * The learned correction is clipped to ``±max_correction_ms``, and the corrected prediction
      to ``[min_prediction_ms, max_prediction_ms]``: a wild extrapolation of a linear model cannot
      turn a 200 ms forecast into -50 ms or ten minutes.
    * With ``include_base=True`` the base prediction is an extra feature (``base_prediction``),
      because a forest's bias usually depends on the level it predicts (it regresses to the mean).
    """

    feature_names: Sequence[str] | None = None
    min_samples: int = 30
    max_correction_ms: float = 500.0
    min_prediction_ms: float = 0.0
    max_prediction_ms: float = 60_000.0
    include_base: bool = True
    params: LearnerParams = field(default_factory=LearnerParams)
    learner: OnlineLearner = field(init=False)

    def __post_init__(self) -> None:
        if self.min_samples < 0 or not self.max_correction_ms >= 0:
            raise ValueError("min_samples and max_correction_ms must be >= 0")
        if not self.min_prediction_ms < self.max_prediction_ms:
            raise ValueError("min_prediction_ms must be < max_prediction_ms")
        names = None
        if self.feature_names is not None:
            names = list(self.feature_names) + (["base_prediction"] if self.include_base else [])
        self.learner = OnlineLearner(names, params=self.params)

    @property
    def n_seen(self) -> int:
        return self.learner.n_seen

    @property
    def active(self) -> bool:
        return self.learner.n_seen >= self.min_samples

    def _with_base(self, X: Sequence[Row] | np.ndarray, base: np.ndarray) -> Any:
        if not self.include_base:
            return X
        if isinstance(X, np.ndarray):
            return np.column_stack([X.astype(np.float64, copy=False), base])
        rows = list(X)
        if rows and isinstance(rows[0], Mapping):
            return [{**r, "base_prediction": b} for r, b in zip(rows, base, strict=True)]
        return np.column_stack([np.asarray(rows, dtype=np.float64).reshape(len(rows), -1), base])

    @staticmethod
    def _base(base: float | Sequence[float] | np.ndarray, n: int) -> np.ndarray:
        b = np.atleast_1d(np.asarray(base, dtype=np.float64))
        if b.ndim != 1 or b.size != n:
            raise ValueError(f"base prediction must hold {n} value(s), got shape {b.shape}")
        if not np.all(np.isfinite(b)):
            raise ValueError("base prediction has a NaN or infinite value")
        return b

    def learn_one(self, x: Row, y: float, base: float) -> ResidualCorrector:
        return self.learn_many([x] if isinstance(x, Mapping) else [list(np.ravel(x))], [y], [base])

    def learn_many(
        self,
        X: Sequence[Row] | np.ndarray,
        y: Sequence[float] | np.ndarray,
        base: Sequence[float] | np.ndarray,
    ) -> ResidualCorrector:
        n = len(X)
        b = self._base(base, n)
        t = OnlineLearner._target(y, n)
        self.learner.learn_many(self._with_base(X, b), t - b)
        return self

    def corrections(
        self, X: Sequence[Row] | np.ndarray, base: Sequence[float] | np.ndarray
    ) -> np.ndarray:
        """The clipped residual that would be added to each base prediction (0 until active)."""
        n = len(X)
        b = self._base(base, n)
        Xb = self._with_base(X, b)
        if not self.active:  # still reject bad input, so a caller learns of it before warm-up ends
            self.learner._check_finite(self.learner._matrix(Xb))
            return np.zeros(n)
        r = self.learner.predict_many(Xb)
        return np.clip(r, -self.max_correction_ms, self.max_correction_ms)

    def predict_many(
        self, X: Sequence[Row] | np.ndarray, base: Sequence[float] | np.ndarray
    ) -> np.ndarray:
        b = self._base(base, len(X))
        out = b + self.corrections(X, b)
        return np.clip(out, self.min_prediction_ms, self.max_prediction_ms)

    def predict_one(self, x: Row, base: float) -> float:
        X = [x] if isinstance(x, Mapping) else [list(np.ravel(x))]
        return float(self.predict_many(X, [base])[0])

    def export_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, inner = self.learner.export_state()
        meta = {
            "kind": "residual_corrector",
            "format": STATE_FORMAT,
            "feature_names": None if self.feature_names is None else list(self.feature_names),
            "min_samples": self.min_samples,
            "max_correction_ms": self.max_correction_ms,
            "min_prediction_ms": self.min_prediction_ms,
            "max_prediction_ms": self.max_prediction_ms,
            "include_base": self.include_base,
            "learner": inner,
        }
        return arrays, meta

    @classmethod
    def from_state(
        cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
    ) -> ResidualCorrector:
        if meta.get("kind") != "residual_corrector" or meta.get("format") != STATE_FORMAT:
            raise ValueError("not a residual corrector state")
        inner = meta["learner"]
        rc = cls(
            feature_names=meta["feature_names"],
            min_samples=int(meta["min_samples"]),
            max_correction_ms=float(meta["max_correction_ms"]),
            min_prediction_ms=float(meta["min_prediction_ms"]),
            max_prediction_ms=float(meta["max_prediction_ms"]),
            include_base=bool(meta["include_base"]),
            params=LearnerParams(**inner["params"]),
        )
        rc.learner = OnlineLearner.from_state(arrays, inner)
        return rc
