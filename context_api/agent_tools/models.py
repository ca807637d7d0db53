"""The forecaster's versions, its accuracy against outcomes, and the retraining policy."""

from __future__ import annotations

import re
from typing import Any

from context_api import api_models as m
from context_api import queries as q
from context_api.agent_tools.base import (
    ToolBase,
    ToolInfo,
)
from context_api.timefmt import ToolError, iso, num, rnd
from context_api.timefmt import iso_or_unknown as _iso


class ModelTools(ToolBase):
    TOOLS = (
        ToolInfo(
            "model_versions",
            "Model versions of a kind: the active one with its hold-out metrics, all "
            "versions, and the activation/rollback history.",
            m.ModelVersionsInput,
            m.ModelVersionsOut,
            "model_versions",
        ),
        ToolInfo(
            "model_history",
            "Which model version serves and since when, how it got there (promoted by which "
            "experiment and approval, or rolled back, and why), its training window and parent; "
            "or the same for one named version, with the periods it served and the "
            "experiments it was in.",
            m.ModelHistoryInput,
            m.ModelHistoryOut,
            "model_history",
        ),
        ToolInfo(
            "performance",
            "Forecast accuracy (MAE, RMSE, bias) per model version and backend over a "
            "window, and SLA violations per backend.",
            m.PerformanceInput,
            m.PerformanceOut,
            "performance",
        ),
        ToolInfo(
            "retrain_check",
            "Apply the retraining policy now (drift, recent error vs hold-out, new "
            "samples, cooldown): would a retrain be triggered, and why or why not.",
            m.RetrainCheckInput,
            m.RetrainCheckOut,
            "retrain_check",
        ),
        ToolInfo(
            "request_retrain",
            "Ask for a retrain. Allowed only when the retraining policy triggers one right "
            "now; then records a retrain request event with the training window.",
            m.RequestRetrainInput,
            m.WriteOut,
            "request_retrain",
            writes=True,
        ),
    )

    def model_versions(self, params: m.ModelVersionsInput | None = None) -> m.ModelVersionsOut:
        params = params or m.ModelVersionsInput()
        versions = self.store.list_model_versions(params.kind)
        active = self.store.active_model_version(params.kind)

        def brief(v: Any) -> dict[str, Any]:
            metrics = v.metrics or {}
            forest = metrics.get("forest") if isinstance(metrics.get("forest"), dict) else {}
            interval = metrics.get("interval") if isinstance(metrics.get("interval"), dict) else {}
            return {
                "version_id": v.version_id,
                "status": v.status,
                "parent_id": v.parent_id,
                "created_at": iso(v.created_at),
                "activated_at": iso(v.activated_at),
                "trained_from": iso(v.trained_from_ts),
                "trained_to": iso(v.trained_to_ts),
                "holdout_mae_ms": rnd(forest.get("mae_ms")),
                "interval_coverage": rnd(interval.get("holdout_coverage"), 3),
                "note": v.note,
            }

        return m.ModelVersionsOut(
            kind=params.kind,
            active=brief(active) if active else None,
            versions=[brief(v) for v in versions[-20:]],
            history=[
                {
                    "at": iso(h.ts),
                    "version_id": h.version_id,
                    "previous_version_id": h.previous_version_id,
                    "action": h.action,
                    "reason": h.reason,
                }
                for h in self.store.model_history(params.kind)[-20:]
            ],
        )

    def model_history(self, params: m.ModelHistoryInput | None = None) -> m.ModelHistoryOut:
        from context_api import approvals

        params = params or m.ModelHistoryInput()
        kind = params.kind
        versions = {v.version_id: v for v in self.store.list_model_versions(kind)}
        if params.version is not None and params.version not in versions:
            known = ", ".join(list(versions)[-5:]) or "none"
            raise ToolError(f"unknown model version {params.version!r}; known (newest): {known}")
        history = self.store.model_history(kind)
        by_version = {
            a.version_id: a
            for a in approvals.list_approvals(self.store, "applied", limit=None)
            if a.model_kind == kind
        }
        experiments = self.store.list_experiments()
        won = {
            e.winner_id: e.experiment_id
            for e in experiments
            if e.winner_id is not None and e.winner_id == e.challenger_id
        }
        now = None if self.is_empty() else self.now()

        def how(h: Any) -> dict[str, Any]:
            approval = by_version.get(h.version_id)
            mentioned = re.search(r"\b(exp[\w:.\-]*\d)", h.reason or "")
            return {
                "at": iso(h.ts),
                "action": h.action,
                "version_id": h.version_id,
                "previous_version_id": h.previous_version_id,
                "reason": h.reason,
                "experiment_id": (approval.experiment_id if approval else None)
                or (mentioned.group(1) if mentioned else None)
                or won.get(h.version_id),
                "approval_id": approval.approval_id if approval else None,
                "approved_by": approval.decided_by if approval else None,
            }

        def describe(version_id: str) -> dict[str, Any]:
            v = versions[version_id]
            served = []
            for i, h in enumerate(history):
                if h.version_id == version_id:
                    end = history[i + 1].ts if i + 1 < len(history) else None
                    served.append({"from": iso(h.ts), "until": iso(end) if end else "now"})
            forest = (v.metrics or {}).get("forest") if isinstance(v.metrics, dict) else None
            return {
                "version_id": version_id,
                "status": v.status,
                "created_at": iso(v.created_at),
                "parent_id": v.parent_id,
                "trained_from": iso(v.trained_from_ts),
                "trained_to": iso(v.trained_to_ts),
                "holdout_mae_ms": rnd(forest.get("mae_ms")) if isinstance(forest, dict) else None,
                "note": v.note,
                "served": served,
                "experiments": [
                    {
                        "experiment_id": e.experiment_id,
                        "role": "champion" if e.champion_id == version_id else "challenger",
                        "status": e.status,
                        "verdict": e.verdict,
                        "winner_id": e.winner_id,
                    }
                    for e in experiments
                    if version_id in (e.champion_id, e.challenger_id)
                ],
            }

        active = self.store.active_model_version(kind)
        serving = None
        notes: list[str] = []
        if active is not None:
            last = next((h for h in reversed(history) if h.version_id == active.version_id), None)
            serving = {
                **describe(active.version_id),
                "since": iso(active.activated_at),
                "how": how(last) if last else None,
            }
            if active.activated_at is not None and now is not None and active.activated_at > now:
                notes.append("the activation is stamped after the newest telemetry")
        else:
            notes.append(f"no {kind} version is serving")
        return m.ModelHistoryOut(
            kind=kind,
            now=iso(now),
            serving=serving,
            version=describe(params.version) if params.version else None,
            activations=[how(h) for h in history[-20:]],
            notes=notes,
        )

    def performance(self, params: m.PerformanceInput | None = None) -> m.PerformanceOut:
        params = params or m.PerformanceInput()
        since, until = self._window(params.since, params.until, 60.0)
        summary = self.store.error_summary(since, until + 1e-6)
        sla_rows = q.sla_by_backend(self.store, since, until + 1e-6, self.sla_ms)
        return m.PerformanceOut(
            since=_iso(since),
            until=_iso(until),
            by_version_backend=[
                {
                    "model_version": s.model_version,
                    "backend": s.backend,
                    "n": s.n,
                    "mae_ms": rnd(s.mae),
                    "rmse_ms": rnd(s.rmse),
                    "bias_ms": rnd(s.bias),
                }
                for s in summary
            ],
            sla_by_backend=[
                {
                    "backend": r["backend"],
                    "requests": r["n"],
                    "violations": r["over_sla"] + r["no_outcome"],
                    "violation_pct": round(100.0 * (r["over_sla"] + r["no_outcome"]) / r["n"], 2)
                    if r["n"]
                    else None,
                    "mean_latency_ms": rnd(r["mean_latency_ms"]),
                }
                for r in sla_rows
            ],
        )

    def _retrain_inputs(self, now: float) -> tuple[Any, dict[str, Any]]:
        from tools.retrain_policy import RetrainInputs

        active = self.store.active_model_version("forecaster")
        drift = self.drift_status(m.DriftInput(at=now))
        recent = self.store.error_summary(now - 3600.0, now + 1e-6, by=())
        holdout = None
        trained_to = None
        if active is not None:
            forest = active.metrics.get("forest") if isinstance(active.metrics, dict) else None
            holdout = num(forest.get("mae_ms")) if isinstance(forest, dict) else None
            trained_to = active.trained_to_ts or active.activated_at or active.created_at
        since_train = None if trained_to is None else max(0.0, now - trained_to)
        new_samples = q.outcomes_since(self.store, trained_to) if trained_to is not None else 0
        starts = [c.ts for c in drift.change_points]
        inputs = RetrainInputs(
            now_ts=now,
            drift_severity=drift.max_severity,  # type: ignore[arg-type]
            drift_started_at=max(starts) if starts and drift.max_severity != "none" else None,
            recent_mae_ms=num(recent[0].mae) if recent else None,
            recent_mae_samples=recent[0].n if recent else 0,
            holdout_mae_ms=holdout,
            new_samples_since_training=new_samples,
            seconds_since_training=since_train,
        )
        return inputs, {"active_version": active.version_id if active else None}

    def retrain_check(self, params: m.RetrainCheckInput | None = None) -> m.RetrainCheckOut:
        from tools.retrain_policy import decide_retrain, loop_policy

        params = params or m.RetrainCheckInput()
        now = self.now(params.at)
        inputs, extra = self._retrain_inputs(now)
        decision = decide_retrain(inputs, loop_policy())
        return m.RetrainCheckOut(
            now=_iso(now),
            retrain=decision.retrain,
            summary=decision.summary,
            decision=decision.model_dump(mode="json"),
            inputs={**inputs.model_dump(mode="json"), **extra},
        )

    def request_retrain(self, params: m.RequestRetrainInput) -> m.WriteOut:
        from tools.retrain_policy import decide_retrain, loop_policy

        busy = self._retrain_in_progress()
        if busy is not None:
            return m.WriteOut(ok=False, message=f"refused: {busy}", detail={})
        now = self.now(params.at)
        inputs, extra = self._retrain_inputs(now)
        decision = decide_retrain(inputs, loop_policy())
        if not decision.retrain:
            return m.WriteOut(
                ok=False,
                message=(
                    "refused: the retraining policy does not trigger a retrain now "
                    f"({decision.summary})"
                ),
                detail={"blockers": list(decision.blockers), "triggers": list(decision.triggers)},
            )
        window = decision.window.model_dump(mode="json") if decision.window else None
        event_id = self.store.record_event(
            "retrain_requested",
            subject="forecaster",
            detail={
                "reason": params.reason,
                "triggers": list(decision.triggers),
                "window": window,
                "active_version": extra["active_version"],
            },
            ts=now,
        )
        return m.WriteOut(
            ok=True,
            message=f"retrain requested (event {event_id}): {decision.summary}",
            detail={"event_id": event_id, "window": window, "triggers": list(decision.triggers)},
        )

    def _retrain_in_progress(self) -> str | None:
        """Why a new retrain request would be premature (None: it would not)."""
        from context_api import approvals

        handled = {
            int(e.detail.get("request_id", -1))
            for e in self.store.list_events(kind="retrain_handled", subject="forecaster")
        }
        for e in self.store.list_events(kind="retrain_requested", subject="forecaster"):
            if e.id not in handled:
                return f"retrain request {e.id} is still waiting for the feedback learner"
        running = self.store.list_experiments("running")
        if running:
            return f"experiment {running[0].experiment_id} is still judging the last challenger"
        waiting = approvals.pending(self.store, "forecaster")
        if waiting:
            return f"approval {waiting[0].approval_id} is still waiting for an operator"
        return None
