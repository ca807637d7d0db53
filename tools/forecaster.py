"""Random-forest forecast of each backend's p95 latency HORIZON_TICKS (5 minutes) ahead.

Training rows are (features at t, p95 at t + horizon) per backend, built by the same
`FeatureWindow` code that serves. One forest serves every backend.

Target. By default the forest learns `log1p(p95 at t+h)`: latency spans two orders of magnitude
between an idle and a saturated backend (up to the 30 s timeout), and in log space one error
does not swamp the rest. Forecasts and every reported figure are back in ms. "log_ratio"
(against the current 1-min mean) and "ms" targets are kept for comparison; on simulated
histories they did no better.

Leaves hold medians, not means (`refit_leaf_medians`): five minutes ahead a saturated backend
either stays saturated or drains back to normal, a bimodal future whose mean lies where neither
outcome does. The median is the MAE-optimal point forecast.

Inputs. `predict` takes full `FEATURE_NAMES` rows, as the windows give them; the forest reads
only its `model_features` (by default `DEFAULT_MODEL_FEATURES`, chosen by a measured ablation).

Split. Strictly temporal, in three periods separated by gaps of at least the horizon, so no
training target lies in a later period:
    fit rows | gap >= h | calibration rows | gap >= h | hold-out rows (feature time >= cut)
Training rows (fit and calibration) need only telemetry before the cut; `train` never sees a
telemetry value from the hold-out period. The forest is fitted on the fit rows.

Interval. The trees' spread: mu ± q·(sd + floor) in target space, where mu and sd are the mean and
standard deviation of the per-tree predictions. The multiplier q is a split-conformal quantile of
|y - mu| / (sd + floor) on the calibration rows (finite-sample rank ceil((n+1)·c)), for nominal
coverage c (default 90%). Time series are not exchangeable, so the guarantee is not formal:
the hold-out coverage is measured and reported beside the nominal one.

Serving. `Forecaster.predict` walks the flattened forest (`tools.flat_forest`); scikit-learn is
only used to fit and is not kept. The forecaster's `version_id` is a hash of everything that
determines its predictions, so two forecasters with the same id forecast identically.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from tools.features import (
    FEATURE_NAMES,
    LONG_TICKS,
    batch_features_with_ready,
    feature_index,
)
from tools.flat_forest import FlatForest, mean_over_trees
from tools.metrics import RegressionMetrics, improvement, interval_coverage, regression_metrics
from tools.telemetry import HORIZON_TICKS, TICK_SECONDS, TelemetryPoint

Target = Literal["log_ratio", "log", "ms"]

HORIZON_S = HORIZON_TICKS * TICK_SECONDS
REFERENCE_FEATURE = "p95_ma_short"
"""Level the log-ratio target is taken against."""
MA_BASELINE_FEATURE = "p95_ma_long"
"""The moving-average baseline: the last 5 minutes' mean p95 (the horizon's length)."""
SPREAD_FLOOR = {"log_ratio": 0.01, "log": 0.01, "ms": 1.0}
"""Added to the trees' standard deviation so that unanimous trees still give an interval."""
DEFAULT_MODEL_FEATURES: tuple[str, ...] = (
    "p95_ms",
    "p95_ma_short",
    "error_rate_ma_short",
    "tail_ratio",
)
"""The columns the forest is fitted on by default, chosen by a measured ablation on simulated
24 h histories (4 backends, 50 trees, leaf medians; MAE improvement over persistence on the
hold-out, mean of seeds 1-5): this set +5.1%; dropping p95_ma_short +3.2%, error_rate_ma_short
+3.8%, tail_ratio +4.6%; adding the load group (rps, in_flight, their averages and slopes) -7.0%,
the latency trend group +2.2%, the other latency averages +2.8%, the load/latency ratios +2.4%,
the other error rates +2.4%; every feature -6.0%. With one day of history the extra features let
the forest learn how that day's few overload episodes ended and apply it to the next ones.
Every FEATURE_NAMES column stays available to `train(model_features=...)`."""
MIN_ROWS = {"fit": 50, "calibration": 20, "holdout": 20}


# ------------------------------------------------------------------------------------- dataset
@dataclass(frozen=True)
class Dataset:
    """Supervised rows from telemetry; all arrays have one entry per row.

    `ts` is the feature time t, `target_ts` the time of the target (t + horizon), `y` the p95 at
    `target_ts` in ms, `p95_now` the p95 at t (persistence baseline) and `p95_ma` its moving
    average (`MA_BASELINE_FEATURE`, the moving-average baseline).
    """

    X: np.ndarray
    y: np.ndarray
    ts: np.ndarray
    target_ts: np.ndarray
    backend: np.ndarray
    p95_now: np.ndarray
    p95_ma: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, idx: np.ndarray) -> Dataset:
        return Dataset(**{k: getattr(self, k)[idx] for k in self.__dataclass_fields__})


def build_dataset(points: Iterable[TelemetryPoint]) -> Dataset:
    """Rows for every backend: features at each tick where the window is ready and a point
    exists exactly one horizon later (within half a tick). Points are grouped by backend and
    ordered by time; duplicates and bad values raise ValueError from the feature window."""
    by_backend: dict[str, list[TelemetryPoint]] = defaultdict(list)
    for p in points:
        by_backend[p.backend].append(p)
    parts: list[Dataset] = []
    for name in sorted(by_backend):
        pts = sorted(by_backend[name], key=lambda p: p.ts)
        X, ready = batch_features_with_ready(pts)
        ts = np.fromiter((p.ts for p in pts), dtype=np.float64, count=len(pts))
        p95 = np.fromiter((p.p95_ms for p in pts), dtype=np.float64, count=len(pts))
        j = np.searchsorted(ts, ts + HORIZON_S - TICK_SECONDS / 2)
        jc = np.minimum(j, len(ts) - 1)
        has_target = (j < len(ts)) & (np.abs(ts[jc] - (ts + HORIZON_S)) < TICK_SECONDS / 2)
        rows = np.flatnonzero(ready & has_target)
        parts.append(
            Dataset(
                X=X[rows],
                y=p95[jc[rows]],
                ts=ts[rows],
                target_ts=ts[jc[rows]],
                backend=np.full(rows.size, name),
                p95_now=p95[rows],
                p95_ma=X[rows, feature_index(MA_BASELINE_FEATURE)],
            )
        )
    if not parts:
        raise ValueError("no telemetry points")
    return Dataset(
        **{k: np.concatenate([getattr(d, k) for d in parts]) for k in Dataset.__dataclass_fields__}
    )


@dataclass(frozen=True)
class Split:
    """Row indices of the three periods and the times that separate them."""

    fit: np.ndarray
    calibration: np.ndarray
    holdout: np.ndarray
    calibration_cut_ts: float
    cut_ts: float


def temporal_split(
    ds: Dataset, *, holdout_fraction: float = 0.2, calibration_fraction: float = 0.15
) -> Split:
    """Split by time span: the last `holdout_fraction` of the span is the hold-out (feature time
    >= cut); training rows are those whose *target* lies before the cut; the last
    `calibration_fraction` of the span before the cut holds the calibration rows, again with
    the fit rows' targets before it."""
    if not (0 < holdout_fraction < 1 and 0 < calibration_fraction < 1):
        raise ValueError("holdout_fraction and calibration_fraction must lie in (0, 1)")
    if holdout_fraction + calibration_fraction >= 0.9:
        raise ValueError("hold-out and calibration leave too little to fit on")
    if len(ds) == 0:
        raise ValueError("no training rows: is the history longer than the window + horizon?")
    t0, t1 = float(ds.ts.min()), float(ds.ts.max())
    span = t1 - t0
    cut = t1 - holdout_fraction * span
    cal_cut = cut - calibration_fraction * span
    split = Split(
        fit=np.flatnonzero(ds.target_ts < cal_cut),
        calibration=np.flatnonzero((ds.ts >= cal_cut) & (ds.target_ts < cut)),
        holdout=np.flatnonzero(ds.ts >= cut),
        calibration_cut_ts=cal_cut,
        cut_ts=cut,
    )
    for part, minimum in MIN_ROWS.items():
        n = getattr(split, part).size
        if n < minimum:
            raise ValueError(
                f"only {n} {part} rows (need {minimum}); the history is too short: give at "
                f"least a few hours of telemetry"
            )
    return split


# ------------------------------------------------------------------------------------ reports
class IntervalReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    nominal_coverage: float
    calibration_coverage: float
    holdout_coverage: float
    multiplier: float
    mean_width_ms: float
    median_width_ms: float


class TrainReport(BaseModel):
    """Hold-out figures of the forest beside the persistence and moving-average baselines,
    all on the same rows, and the interval's coverage."""

    model_config = ConfigDict(frozen=True)

    n_fit: int
    n_calibration: int
    n_holdout: int
    calibration_cut_ts: float
    cut_ts: float
    holdout_to_ts: float
    target: str
    forest: RegressionMetrics
    persistence: RegressionMetrics
    moving_average: RegressionMetrics
    mae_improvement_vs_persistence: float
    mae_improvement_vs_moving_average: float
    interval: IntervalReport
    per_backend_mae_ms: dict[str, dict[str, float]]
    hyperparameters: dict[str, Any]
    fit_seconds: float


# --------------------------------------------------------------------------------- forecaster
@dataclass(frozen=True)
class ForecastBatch:
    """Forecast p95 (ms) HORIZON_TICKS ahead for each row, with its interval."""

    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


class Forecaster:
    """A fitted forecaster that needs nothing but numpy to serve."""

    def __init__(
        self,
        *,
        forest: FlatForest,
        feature_names: tuple[str, ...],
        model_features: tuple[str, ...],
        target: Target,
        interval_multiplier: float,
        spread_floor: float,
        nominal_coverage: float,
        trained_from_ts: float,
        trained_to_ts: float,
        hyperparameters: dict[str, Any],
        ceiling_ms: float = math.inf,
        report: TrainReport | None = None,
        parent_version: str | None = None,
        created_at: str | None = None,
    ) -> None:
        feature_names = tuple(feature_names)
        model_features = tuple(model_features)
        if len(set(feature_names)) != len(feature_names):
            raise ValueError("feature_names has duplicates")
        unknown = [f for f in model_features if f not in feature_names]
        if unknown or not model_features or len(set(model_features)) != len(model_features):
            raise ValueError(
                f"model_features must be distinct names from feature_names; unknown: {unknown}"
            )
        if forest.n_features != len(model_features):
            raise ValueError(
                f"forest expects {forest.n_features} features, model_features gives "
                f"{len(model_features)}"
            )
        if target not in ("log_ratio", "log", "ms"):
            raise ValueError(f"unknown target {target!r}")
        if target == "log_ratio" and REFERENCE_FEATURE not in feature_names:
            raise ValueError(f"log_ratio target needs the feature {REFERENCE_FEATURE!r}")
        for name, v in (
            ("interval_multiplier", interval_multiplier),
            ("spread_floor", spread_floor),
        ):
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {v!r}")
        if not ceiling_ms > 0:  # NaN fails too
            raise ValueError(f"ceiling_ms must be > 0, got {ceiling_ms!r}")
        if not 0 < nominal_coverage < 1:
            raise ValueError("nominal_coverage must lie in (0, 1)")
        if not trained_from_ts <= trained_to_ts:
            raise ValueError("trained_from_ts must not be after trained_to_ts")
        self.forest = forest
        self.feature_names = feature_names
        self.model_features = model_features
        self._cols = np.array([feature_names.index(f) for f in model_features], dtype=np.intp)
        self.target: Target = target
        self.interval_multiplier = float(interval_multiplier)
        self.spread_floor = float(spread_floor)
        self.nominal_coverage = float(nominal_coverage)
        self.ceiling_ms = float(ceiling_ms)
        self.trained_from_ts = float(trained_from_ts)
        self.trained_to_ts = float(trained_to_ts)
        self.hyperparameters = dict(hyperparameters)
        self.report = report
        self.parent_version = parent_version
        self.created_at = created_at
        self._ref = feature_names.index(REFERENCE_FEATURE) if target == "log_ratio" else -1
        self.content_sha256 = content_hash(forest.arrays(), self.spec())
        self.version_id = "rf-" + self.content_sha256[:16]

    def spec(self) -> dict[str, Any]:
        """Everything besides the forest arrays that decides a prediction (JSON-able)."""
        return {
            "feature_names": list(self.feature_names),
            "model_features": list(self.model_features),
            "target": self.target,
            "reference_feature": REFERENCE_FEATURE if self.target == "log_ratio" else None,
            "interval_multiplier": self.interval_multiplier,
            "spread_floor": self.spread_floor,
            "nominal_coverage": self.nominal_coverage,
            "ceiling_ms": self.ceiling_ms if math.isfinite(self.ceiling_ms) else None,
            "horizon_ticks": HORIZON_TICKS,
            "tick_seconds": TICK_SECONDS,
            "trained_from_ts": self.trained_from_ts,
            "trained_to_ts": self.trained_to_ts,
            "hyperparameters": self.hyperparameters,
        }

    def _target_space(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise ValueError(
                f"X must have shape (n, {len(self.feature_names)}) in feature_names order, "
                f"got {X.shape}"
            )
        if not np.isfinite(X).all():
            raise ValueError("X contains NaN or infinite values")
        return _tree_mean_and_spread(self.forest, X[:, self._cols], self.spread_floor)

    def _to_ms(self, z: np.ndarray, X: np.ndarray) -> np.ndarray:
        if self.target == "ms":
            return z
        if self.target == "log_ratio":
            z = z + np.log1p(X[:, self._ref])
        return np.expm1(z)

    def predict(self, X: np.ndarray) -> ForecastBatch:
        """Forecasts in ms, within [0, ceiling_ms], for feature rows X of shape
        (n, len(feature_names)) as `FeatureWindow.features()` gives them; the forest reads
        its `model_features` columns."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[None, :]
        mu, sd = self._target_space(X)  # validates shape and finiteness
        half = self.interval_multiplier * sd
        z = np.stack((mu, mu - half, mu + half))  # one transform for all three rows
        ms = self._to_ms(z, X)
        np.minimum(ms, self.ceiling_ms, out=ms)
        np.maximum(ms, 0.0, out=ms)
        return ForecastBatch(mean=ms[0], lo=ms[1], hi=ms[2])

    def __repr__(self) -> str:
        return (
            f"Forecaster({self.version_id}, {self.forest.n_trees} trees on "
            f"{len(self.model_features)} features, target={self.target}, "
            f"trained {self.trained_from_ts:.0f}..{self.trained_to_ts:.0f})"
        )


def _tree_mean_and_spread(
    forest: FlatForest, X: np.ndarray, floor: float
) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the trees (as scikit-learn computes it) and their spread (sd + floor)."""
    per_tree = forest.predict_per_tree(X)
    mu = mean_over_trees(per_tree)
    dev = per_tree - mu
    # the population standard deviation, written out: ndarray.std costs several µs in wrappers
    return mu, np.sqrt(np.add.reduce(dev * dev, axis=0) / per_tree.shape[0]) + floor


def content_hash(arrays: dict[str, np.ndarray], spec: dict[str, Any]) -> str:
    """sha256 over the arrays (name, dtype, shape, little-endian bytes, in name order) and the
    canonical JSON of the spec. Any change to either changes the hash."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    h.update(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------------ training
def _encode(y_ms: np.ndarray, X: np.ndarray, target: Target) -> np.ndarray:
    if target == "ms":
        return y_ms
    z = np.log1p(y_ms)
    if target == "log_ratio":
        z = z - np.log1p(X[:, feature_index(REFERENCE_FEATURE)])
    return z


def train(
    points: Iterable[TelemetryPoint] | Dataset,
    *,
    n_estimators: int = 100,
    max_depth: int | None = 12,
    min_samples_leaf: int = 5,
    max_features: float | int | str | None = 0.5,
    seed: int = 0,
    holdout_fraction: float = 0.2,
    calibration_fraction: float = 0.15,
    nominal_coverage: float = 0.9,
    target: Target = "log",
    leaf_values: Literal["median", "mean"] = "median",
    model_features: Sequence[str] = DEFAULT_MODEL_FEATURES,
    n_jobs: int = 2,
    parent_version: str | None = None,
) -> tuple[Forecaster, TrainReport]:
    """Fit the forest on the fit period, calibrate the interval on the calibration period and
    score everything on the hold-out. Deterministic for a given seed (and any n_jobs)."""
    from sklearn.ensemble import RandomForestRegressor

    if leaf_values not in ("median", "mean"):
        raise ValueError(f"leaf_values must be 'mean' or 'median', got {leaf_values!r}")
    model_features = tuple(model_features)
    cols = [feature_index(f) for f in model_features]
    ds = points if isinstance(points, Dataset) else build_dataset(points)
    split = temporal_split(
        ds, holdout_fraction=holdout_fraction, calibration_fraction=calibration_fraction
    )
    fit, cal, hold = ds.take(split.fit), ds.take(split.calibration), ds.take(split.holdout)
    hyper = {
        "n_estimators": n_estimators,
        "max_depth": max_depth,
        "min_samples_leaf": min_samples_leaf,
        "max_features": max_features,
        "seed": seed,
        "holdout_fraction": holdout_fraction,
        "calibration_fraction": calibration_fraction,
        "leaf_values": leaf_values,
        "target": target,
    }
    started = time.perf_counter()
    rf = RandomForestRegressor(
        n_estimators=n_estimators,
        max_depth=max_depth,
        min_samples_leaf=min_samples_leaf,
        max_features=max_features,
        random_state=seed,
        n_jobs=n_jobs,
    )
    z_fit = _encode(fit.y, fit.X, target)
    rf.fit(fit.X[:, cols], z_fit)
    flat = FlatForest.from_sklearn(rf)
    del rf  # serving never touches scikit-learn
    if leaf_values == "median":
        flat = refit_leaf_medians(flat, fit.X[:, cols], z_fit)
    fit_seconds = time.perf_counter() - started

    floor = SPREAD_FLOOR[target]
    mu, sd = _tree_mean_and_spread(flat, cal.X[:, cols], floor)
    q = conformal_quantile(np.abs(_encode(cal.y, cal.X, target) - mu) / sd, nominal_coverage)

    forecaster = Forecaster(
        forest=flat,
        feature_names=FEATURE_NAMES,
        model_features=model_features,
        target=target,
        interval_multiplier=q,
        spread_floor=floor,
        nominal_coverage=nominal_coverage,
        # the fit rows' windows reach LONG_TICKS - 1 ticks before their first feature time
        trained_from_ts=float(fit.ts.min()) - (LONG_TICKS - 1) * TICK_SECONDS,
        trained_to_ts=float(cal.target_ts.max()),
        hyperparameters=hyper,
        # No p95 above the highest one in training: beyond it the log-space interval's upper
        # end only grows without meaning (the simulator's requests time out at 30 s).
        ceiling_ms=float(max(fit.y.max(), cal.y.max())),
        parent_version=parent_version,
    )
    cal_fc = forecaster.predict(cal.X)
    hold_fc = forecaster.predict(hold.X)
    width = hold_fc.hi - hold_fc.lo
    per_backend = {}
    for name in np.unique(hold.backend):
        m = hold.backend == name
        per_backend[str(name)] = {
            "forest": float(np.mean(np.abs(hold_fc.mean[m] - hold.y[m]))),
            "persistence": float(np.mean(np.abs(hold.p95_now[m] - hold.y[m]))),
            "moving_average": float(np.mean(np.abs(hold.p95_ma[m] - hold.y[m]))),
        }
    forest_m = regression_metrics(hold.y, hold_fc.mean)
    persist_m = regression_metrics(hold.y, hold.p95_now)
    ma_m = regression_metrics(hold.y, hold.p95_ma)
    report = TrainReport(
        n_fit=len(fit),
        n_calibration=len(cal),
        n_holdout=len(hold),
        calibration_cut_ts=split.calibration_cut_ts,
        cut_ts=split.cut_ts,
        holdout_to_ts=float(hold.target_ts.max()),
        target=target,
        forest=forest_m,
        persistence=persist_m,
        moving_average=ma_m,
        mae_improvement_vs_persistence=improvement(forest_m.mae_ms, persist_m.mae_ms),
        mae_improvement_vs_moving_average=improvement(forest_m.mae_ms, ma_m.mae_ms),
        interval=IntervalReport(
            nominal_coverage=nominal_coverage,
            calibration_coverage=interval_coverage(cal.y, cal_fc.lo, cal_fc.hi),
            holdout_coverage=interval_coverage(hold.y, hold_fc.lo, hold_fc.hi),
            multiplier=q,
            mean_width_ms=float(np.mean(width)),
            median_width_ms=float(np.median(width)),
        ),
        per_backend_mae_ms=per_backend,
        hyperparameters=hyper,
        fit_seconds=fit_seconds,
    )
    forecaster.report = report
    return forecaster, report


def refit_leaf_medians(forest: FlatForest, X: np.ndarray, z: np.ndarray) -> FlatForest:
    """Replace every leaf's value by the median target of the fit rows that reach it.

    Why: scikit-learn's leaves hold means. Five minutes ahead, a saturated backend either stays
    saturated or drains back to normal, so the future is bimodal; the mean lands between the two
    modes, where neither outcome lies, and loses to plain persistence on MAE. The median is the
    MAE-optimal point forecast (the idea of Meinshausen's quantile regression forests, with the
    leaf's rows from the whole fit set rather than the tree's bootstrap sample). Leaves no fit
    row reaches keep their mean.
    """
    leaves = forest.apply(X).ravel()  # global node ids: unique across trees
    values = np.tile(np.asarray(z, dtype=np.float64), forest.n_trees)
    order = np.lexsort((values, leaves))
    leaves, values = leaves[order], values[order]
    ids, start, count = np.unique(leaves, return_index=True, return_counts=True)
    median = (values[start + (count - 1) // 2] + values[start + count // 2]) / 2
    new = forest.value.copy()
    new[ids] = median
    return forest.with_leaf_values(new)


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The ceil((n+1)·coverage)-th smallest score (the largest one if that rank exceeds n)."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    if s.size == 0 or not np.isfinite(s).all():
        raise ValueError("conformal scores must be finite and non-empty")
    rank = min(math.ceil((s.size + 1) * coverage), s.size)
    return float(s[rank - 1])
