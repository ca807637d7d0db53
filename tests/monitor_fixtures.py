"""A store that lives through a drift, for the monitor and approval tests.

Four backends report telemetry every 10 s: load follows a slow wave with noise, latency bends with
utilisation as a queue does, with autocorrelated noise. At `DRIFT_AT` backend b0 degrades (its
latency is multiplied by `DRIFT_FACTOR` from then on). A champion forecaster (10 trees) is trained
on the first two hours, saved as an artifact and activated; every tick after that, one decision
per backend records the champion's forecast and, one horizon later, the p95 measured then as its
outcome (the closed loop's label). `advance(seconds)` lets time pass: more telemetry, decisions
and outcomes, exactly as a running service would add them.
"""

from __future__ import annotations

import numpy as np

from context_api.model_store import ModelCache, register_forecaster
from context_api.store import Store
from tools.forecaster import Forecaster, build_dataset, train
from tools.telemetry import TICK_SECONDS, TelemetryPoint

START_TS = 1_700_000_000.0
TRAIN_S = 2 * 3600.0
DRIFT_AT = START_TS + 2.5 * 3600.0
DRIFT_FACTOR = 2.2
BACKENDS = {"b0": (32.0, 110.0), "b1": (8.0, 170.0), "b2": (16.0, 65.0), "b3": (10.0, 110.0)}
"""name: (capacity rps, idle p95 ms)."""


class MonitorWorld:
    def __init__(self, store: Store, artifact_dir: str, *, seed: int = 0) -> None:
        self.store = store
        self.rng = np.random.default_rng(seed)
        self.now = START_TS
        self.noise = dict.fromkeys(BACKENDS, 0.0)
        self.points: list[TelemetryPoint] = []
        self._tick_until(START_TS + TRAIN_S)
        self.champion, _ = train(self.points, n_estimators=10, max_depth=8, seed=0, n_jobs=1)
        register_forecaster(
            store,
            self.champion,
            artifact_dir=artifact_dir,
            at=self.now,
            note="first champion",
        )
        store.activate_model_version(self.champion.version_id, reason="start", at=self.now)
        self.decided_until = self.now
        self.models = ModelCache(store)
        self.models.put(self.champion)

    def _tick_until(self, end: float) -> None:
        batch = []
        while self.now + TICK_SECONDS <= end:
            self.now += TICK_SECONDS
            wave = 0.5
            for name, (cap, idle) in BACKENDS.items():
                rps = max(0.1, cap * (wave + 0.05 * self.rng.normal()))
                util = min(rps / cap, 0.95)
                self.noise[name] = 0.8 * self.noise[name] + 0.2 * self.rng.normal()
                p95 = idle * (1.0 + util / (1.0 - util)) * (1.0 + 0.15 * self.noise[name])
                if name == "b0" and self.now >= DRIFT_AT:
                    p95 *= DRIFT_FACTOR
                p95 = max(p95, 5.0)
                batch.append(
                    TelemetryPoint(
                        ts=self.now,
                        backend=name,
                        rps=float(rps),
                        p50_ms=float(p95 * 0.55),
                        p95_ms=float(p95),
                        error_rate=0.0,
                        in_flight=float(rps * p95 / 1000.0),
                    )
                )
        self.points.extend(batch)
        self.store.insert_telemetry(batch, source="monitor-world")

    def _decide(self) -> None:
        """One decision per backend and tick with the serving model's forecast; the outcome is
        the p95 one horizon later (for the ticks whose label is in)."""
        ds = build_dataset(self.points)
        active = self.store.active_model_version("forecaster")
        assert active is not None
        model: Forecaster = self.models.get(active.version_id)
        rows = np.flatnonzero((ds.ts > self.decided_until) & (ds.ts <= self.now))
        if rows.size == 0:
            return
        pred = model.predict(ds.X[rows]).mean
        decisions, outcomes = [], []
        for i, p in zip(rows, pred, strict=True):
            did = f"d-{int(ds.ts[i])}-{ds.backend[i]}"
            decisions.append(
                {
                    "decision_id": did,
                    "ts": float(ds.ts[i]),
                    "backend": str(ds.backend[i]),
                    "tier": "standard",
                    "sla_ms": 300.0,
                    "policy": "predictive",
                    "model_version": model.version_id,
                    "predicted_latency_ms": float(p),
                }
            )
            outcomes.append((did, float(ds.y[i]), float(ds.target_ts[i])))
        self.store.insert_decisions(decisions)
        self.store.record_outcomes(outcomes)
        self.decided_until = float(ds.ts[rows].max())

    def advance(self, seconds: float) -> None:
        self._tick_until(self.now + seconds)
        self._decide()
