"""Late outcomes: which decisions are sampled, and the label that judges each one.

A decision carries the forecast of its backend's p95 latency one horizon (5 minutes) ahead, so
the label that judges it is that backend's *measured p95 at decision time + horizon*, known only
when that tick's telemetry arrives: every outcome is five minutes late, joined to its decision
in the store through `record_outcomes`. The loop samples `samples_per_tick` requests per tick
with a seeded generator independent of the experiment's arm assignment (requests of one backend
in one tick share one forecast and one label, so recording all would repeat one error hundreds
of times). Each joined error feeds the drift watch and the online learner.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.monitors.base import HORIZON_S, LoopBase, rounded
from context_api.store import decision_row
from tools.features import LONG_TICKS, feature_index
from tools.routing import Decision
from tools.telemetry import TICK_SECONDS, TelemetryPoint

if TYPE_CHECKING:
    from agents.monitors.experiments import _Experiment

_RPS = feature_index("rps")


@dataclass(slots=True)
class _Pending:
    decision_id: str
    backend_index: int
    decision_ts: float
    target_ts: float
    features: np.ndarray
    corrected_ms: float | None


class OutcomeLabels(LoopBase):
    def _record_decisions(
        self,
        decisions: Sequence[Decision],
        X: np.ndarray | None,
        shadow: dict[str, np.ndarray],
    ) -> None:
        if X is None or not decisions or self._ticks <= LONG_TICKS:
            return  # no forecast from full feature windows yet
        k = min(self.config.samples_per_tick, len(decisions))
        picks = np.sort(self._rng.choice(len(decisions), size=k, replace=False))
        index = {n: i for i, n in enumerate(self.names)}
        rows, preds = [], []
        exp = self._experiment
        for p in picks:
            d = decisions[int(p)]
            chosen = d.chosen
            if chosen is None or not math.isfinite(chosen.forecast_ms):
                continue
            i = index[d.backend]
            x = X[i]
            rows.append(decision_row(d, run_id=self.run_id))
            corrected = None
            if self._corrector.active and d.model_version == self.champion.version_id:
                corrected = float(self._corrector.predict_many(x[None, :], [chosen.forecast_ms])[0])
            self._pending.append(_Pending(d.decision_id, i, d.ts, d.ts + HORIZON_S, x, corrected))
            self._rps_by_decision[d.decision_id] = (d.ts, float(x[_RPS]))
            if exp is not None:
                preds.extend(self._experiment_rows(exp, d, i, chosen.forecast_ms, shadow))
        if rows:
            self.stats["decisions_sampled"] += self.store.insert_decisions(rows)
        if preds:
            self.store.record_experiment_predictions(preds)

    def _experiment_rows(
        self,
        exp: _Experiment,
        d: Decision,
        i: int,
        routed_ms: float,
        shadow_pred: dict[str, np.ndarray],
    ) -> list[tuple[Any, ...]]:
        eid = exp.experiment_id
        if exp.mode == "split":
            arm = "challenger" if d.model_version == exp.challenger.version_id else "champion"
            return [(eid, d.decision_id, arm, d.model_version, routed_ms, 1)]
        shadow = shadow_pred.get(exp.challenger.version_id)
        if shadow is None or not math.isfinite(float(shadow[i])):
            return []
        return [
            (eid, d.decision_id, "champion", exp.champion.version_id, routed_ms, 1),
            (eid, d.decision_id, "challenger", exp.challenger.version_id, float(shadow[i]), 0),
        ]

    def _resolve_outcomes(self, telemetry: Sequence[TelemetryPoint]) -> bool:
        p95 = {p.backend: p.p95_ms for p in telemetry}
        half = TICK_SECONDS / 2.0
        due: list[_Pending] = []
        while self._pending and self._pending[0].target_ts <= self.now + half:
            item = self._pending.popleft()
            if abs(item.target_ts - self.now) < half and self.names[item.backend_index] in p95:
                due.append(item)
            else:
                self.stats["outcomes_missing_label"] += 1  # left pending: it expires, counted
        if not due:
            return False
        batch = [(u.decision_id, p95[self.names[u.backend_index]], self.now) for u in due]
        result = self.store.record_outcomes(batch)
        self.stats["outcomes_recorded"] += result.total
        self.stats["outcomes_accepted"] += result.accepted
        lo = min(u.decision_ts for u in due)
        hi = max(u.decision_ts for u in due)
        wanted = {u.decision_id: u for u in due}
        rows = [
            r
            for r in self.store.resolved_decisions(since=lo, until=hi + 1e-6, run_id=self.run_id)
            if r["decision_id"] in wanted
        ]
        alarm = False
        active = self.champion.version_id
        for r in rows:
            if r["predicted_latency_ms"] is None or r["model_version"] != active:
                continue
            u = wanted[r["decision_id"]]
            actual = float(r["actual_latency_ms"])
            predicted = float(r["predicted_latency_ms"])
            err = abs(actual - predicted)
            self._outcomes_since_training += 1
            self._online(u, predicted, actual)
            if u.target_ts < self._errors.since_ts + self.config.burn_in_s:
                continue  # the model's first minutes in service: not part of any reference
            self._errors.ts.append(u.target_ts)
            self._errors.abs_err.append(err)
            if self._ph.update(err):
                alarm = self._new_alarm = True
                self.ph_alarms.append(self.now)
        if not self._ph_ready_noted and self._ph.sigma_ is not None:
            self._ph_ready_noted = True
            self._note(
                "detector_ready",
                f"Page-Hinkley calibrated on {self.config.ph_warmup} errors of "
                f"{active} (sigma {self._ph.sigma_:.1f} ms, threshold "
                f"{self._ph.threshold_:.0f} ms)",
                store_event=False,
                sigma_ms=rounded(self._ph.sigma_),
                threshold_ms=rounded(self._ph.threshold_),
            )
        return alarm
