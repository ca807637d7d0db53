"""Writes a replay's decisions and their (late) outcomes to the store, a tick at a time.

Decisions of one tick share their candidate list, so it is encoded to JSON once per tick, not
once per request. Outcomes are recorded through the store's batch API, the same path a calling
service's late reports take, with the observation time set to when the reply would have come.
"""

from __future__ import annotations

import json
import math

import numpy as np

from context_api.store import Store
from tools.routing import Decision
from tools.sim.run import SimTick
from tools.sim.scenario import Scenario


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None


class StoreSink:
    def __init__(
        self,
        store: Store,
        run_id: str,
        record_outcomes: bool = True,
        source: str | None = None,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.record_outcomes = record_outcomes
        self.source = source
        self.decisions = 0
        self.outcomes = 0
        self._telemetry: list = []

    def chaos(self, scenario: Scenario, start_ts: float) -> None:
        """Put the scenario's chaos events on the timeline, as an incident log would."""
        for ev in scenario.chaos:
            self.store.record_event(
                "chaos",
                subject=ev.backend,
                detail={
                    "chaos": ev.kind,
                    "scenario": scenario.name,
                    "start_ts": start_ts + ev.start_s,
                    "end_ts": start_ts + ev.start_s + ev.duration_s,
                    "magnitude": ev.magnitude,
                },
                ts=start_ts + ev.start_s,
                run_id=self.run_id,
            )

    def tick(self, result: SimTick) -> None:
        self._telemetry.extend(result.telemetry)
        if len(self._telemetry) >= 400:
            self.flush()

    def flush(self) -> None:
        if self._telemetry:
            self.store.insert_telemetry(
                self._telemetry, source=self.source, run_id=self.run_id, simulated=True
            )
            self._telemetry = []

    def __call__(
        self,
        decisions: list[Decision],
        latency_ms: np.ndarray,
        ok: np.ndarray,
        violated: np.ndarray | None = None,
    ) -> None:
        encoded: dict[int, str] = {}
        rows = []
        for d in decisions:
            key = id(d.candidates)
            cands = encoded.get(key)
            if cands is None:
                cands = json.dumps(
                    [
                        {
                            "backend": c.backend,
                            "forecast_ms": _num(c.forecast_ms),
                            "lo_ms": _num(c.lo_ms),
                            "hi_ms": _num(c.hi_ms),
                            "cost": c.cost_per_request,
                            "share": round(c.share, 4),
                            "ejected": c.ejected,
                        }
                        for c in d.candidates
                    ]
                )
                encoded[key] = cands
            chosen = d.chosen
            rows.append(
                {
                    "decision_id": d.decision_id,
                    "ts": d.ts,
                    "backend": d.backend,
                    "request_id": d.request_id,
                    "tier": d.tier,
                    "sla_ms": d.sla_ms,
                    "policy": d.policy,
                    "reason": d.reason,
                    "ambiguous": d.ambiguous,
                    "ambiguous_reason": d.ambiguous_reason,
                    "model_version": d.model_version,
                    "predicted_latency_ms": _num(chosen.forecast_ms) if chosen else None,
                    "predicted_lo_ms": _num(chosen.lo_ms) if chosen else None,
                    "predicted_hi_ms": _num(chosen.hi_ms) if chosen else None,
                    "candidates": cands,
                    "run_id": self.run_id,
                }
            )
        self.decisions += self.store.insert_decisions(rows)
        if self.record_outcomes:
            # A failed request has no latency to learn from: its outcome is not reported, and
            # the decision later expires (counted) like any prediction whose label never came.
            batch = [
                (d.decision_id, float(lat), d.ts + float(lat) / 1000.0)
                for d, lat, good in zip(decisions, latency_ms, ok, strict=True)
                if good
            ]
            self.outcomes += self.store.record_outcomes(batch).accepted
