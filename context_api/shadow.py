"""Champion against challenger in shadow, judged from the store's telemetry alone.

The experiment monitor runs over the store, not inside a router, so its experiments are shadow
experiments on telemetry: at every stored tick after the experiment started (and after the
challenger's training window, so it is never scored on data it learned from), both models
forecast each backend's p95 five minutes ahead from the same features, and each forecast is
judged against the p95 the store measured one horizon later, exactly the label the forecaster is
trained on. Consecutive ticks' errors are correlated, so the unit is a 60 s block: each arm's mean
absolute error per block (batch means), paired across arms, tested with the alpha-spending rule
of `tools.experiment_stats` at every look.

A look needs only the two model artifacts and the telemetry; nothing is written here (the
experiment tool records the look).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from context_api.store import Experiment, Store
from tools.experiment_stats import ExperimentConfig, ExperimentVerdict, evaluate_shadow
from tools.features import LONG_TICKS
from tools.forecaster import Forecaster, build_dataset
from tools.series_stats import block_means, effective_sample_size
from tools.telemetry import HORIZON_SECONDS, TICK_SECONDS

BLOCK_S = 60.0
SOURCE = "telemetry"
"""`params.source` of experiments judged here (the loop's experiments are judged on decisions)."""


def default_config() -> ExperimentConfig:
    """Blocks of 60 s: at least 20 per arm before any test, 90 (1.5 h) at the planned horizon
    (the closed loop's settings, `agents.feedback_loop.LoopConfig`)."""
    return ExperimentConfig(
        alpha=0.05, min_samples_per_arm=20, planned_samples_per_arm=90, n_bootstrap=2000
    )


@dataclass
class ArmErrors:
    """Paired absolute errors, one row per backend and tick, in time order."""

    ts: np.ndarray
    backend: np.ndarray
    champion: np.ndarray
    challenger: np.ndarray

    @property
    def n(self) -> int:
        return int(self.ts.size)


def paired_errors(
    store: Store,
    champion: Forecaster,
    challenger: Forecaster,
    *,
    since: float,
    until: float | None = None,
) -> ArmErrors:
    """Both models' absolute errors on every stored tick in [since, until) whose label (the
    p95 one horizon later) is stored too."""
    warmup = (LONG_TICKS + 1) * TICK_SECONDS
    end = None if until is None else until + HORIZON_SECONDS + TICK_SECONDS
    points = store.list_telemetry(since=since - warmup, until=end)
    empty = np.empty(0)
    if not points:
        return ArmErrors(empty, np.empty(0, dtype=object), empty, empty)
    try:
        ds = build_dataset(points)
    except ValueError:
        return ArmErrors(empty, np.empty(0, dtype=object), empty, empty)
    keep = ds.ts >= since
    if until is not None:
        keep &= ds.ts < until
    ds = ds.take(np.flatnonzero(keep))
    order = np.argsort(ds.ts, kind="stable")
    ds = ds.take(order)
    if len(ds) == 0:
        return ArmErrors(empty, np.empty(0, dtype=object), empty, empty)
    a = np.abs(champion.predict(ds.X).mean - ds.y)
    b = np.abs(challenger.predict(ds.X).mean - ds.y)
    ok = np.isfinite(a) & np.isfinite(b)
    return ArmErrors(ds.ts[ok], ds.backend[ok], a[ok], b[ok])


def look(
    store: Store,
    experiment: Experiment,
    load: Callable[[str], Forecaster],
    *,
    previous_fraction: float = 0.0,
    until: float | None = None,
) -> tuple[ExperimentVerdict, dict[str, Any]]:
    """One interim analysis: the verdict and the figures an operator needs to trust it."""
    champion = load(experiment.champion_id)
    challenger = load(experiment.challenger_id)
    cfg = config_of(experiment)
    start = float(experiment.params.get("evaluate_from", experiment.started_at))
    errors = paired_errors(store, champion, challenger, since=start, until=until)
    a = block_means(errors.ts, errors.champion, start, BLOCK_S)
    b = block_means(errors.ts, errors.challenger, start, BLOCK_S)
    verdict = evaluate_shadow(a, b, cfg, previous_information_fraction=previous_fraction)
    rho1, n_eff = effective_sample_size(b - a) if a.size else (0.0, 0.0)
    detail = {
        "source": SOURCE,
        "unit": f"{BLOCK_S:g} s block",
        "evaluated_from": start,
        "evaluated_until": float(errors.ts.max()) if errors.n else None,
        "ticks_scored": errors.n,
        "blocks": int(a.size),
        "request_mae_ms": {
            "champion": round(float(errors.champion.mean()), 2) if errors.n else None,
            "challenger": round(float(errors.challenger.mean()), 2) if errors.n else None,
        },
        "lag1_autocorrelation": round(rho1, 3),
        "effective_samples": round(n_eff, 1),
        "state": verdict.state,
        "summary": verdict.summary,
        "spent_through_fraction": verdict.spent_through_fraction,
    }
    return verdict, detail


def config_of(experiment: Experiment) -> ExperimentConfig:
    allowed = set(ExperimentConfig.model_fields)
    params = {k: v for k, v in experiment.params.items() if k in allowed}
    return ExperimentConfig(**{**default_config().model_dump(), **params})
