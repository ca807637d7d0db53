"""The forecaster a scenario asks for, trained on simulated history before its runs.

Scenarios that share a forecaster spec share one trained forecaster (the harness keys them by
spec); the agent eval trains its case states' forecasters the same way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from evals.results import START_TS
from tools.sim.scenario import Scenario

Progress = Callable[[str], None]


def train_forecaster(spec: Any, progress: Progress) -> tuple[Any, dict[str, Any]]:
    """Train the forecaster a scenario asks for, on simulated history (as `arcpoint demo`)."""
    from tools.forecaster import train
    from tools.sim.history import simulate_history

    t0 = time.perf_counter()
    progress(
        f"training a forecaster: {spec.n_estimators} trees on {spec.history_hours:g} h of "
        "simulated history"
    )
    history = simulate_history(
        spec.history_hours * 3600.0,
        seed=spec.history_seed,
        start_ts=START_TS - spec.history_hours * 3600.0 - 600.0,
    )
    forecaster, report = train(
        history,
        n_estimators=spec.n_estimators,
        max_depth=spec.max_depth,
        seed=spec.seed,
        n_jobs=min(2, os.cpu_count() or 1),
    )
    info = {
        "version": forecaster.version_id,
        "spec": spec.model_dump(),
        "mae_ms": round(report.forest.mae_ms, 2),
        "persistence_mae_ms": round(report.persistence.mae_ms, 2),
        "interval_coverage": round(report.interval.holdout_coverage, 4),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return forecaster, info


def warm_up(forecaster: Any) -> None:
    """Replay two simulated minutes in this process, so compiled code (the numba feature loop,
    compiled on first use) is inherited by the forked workers instead of compiled in each."""
    from evals.replay import run_policy
    from tools.sim.scenario import build

    warm = build(Scenario(name="warm-up", duration_s=120.0))
    run_policy(warm, "predictive", forecaster=forecaster)
