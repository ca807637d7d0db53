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


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None


class StoreSink:
    def __init__(self, store: Store, run_id: str, record_outcomes: bool = True) -> None:
        self.store = store
        self.run_id = run_id
        self.record_outcomes = record_outcomes
        self.decisions = 0
        self.outcomes = 0

    def __call__(self, decisions: list[Decision], latency_ms: np.ndarray, ok: np.ndarray) -> None:
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
