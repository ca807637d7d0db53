"""The feedback learner's tools: the retrain requests waiting for it, and training a challenger
for one of them from the store's telemetry.

A retrain request is a `retrain_requested` event (written by `request_retrain`, within the
retraining policy); acting on it writes a `retrain_handled` event naming the request and what
came of it, so every request is acted on exactly once. A challenger is only a registered model
version with an artifact: it serves nothing until it wins an experiment and an operator approves
its promotion.
"""

from __future__ import annotations

from typing import Any

from context_api import api_models as m
from context_api.agent_tools.base import ToolBase, ToolInfo
from context_api.model_store import KIND, register_forecaster
from context_api.timefmt import ToolError, iso

TRAINING = {
    "n_estimators": 60,
    "max_depth": 12,
    "holdout_fraction": 0.25,
    "calibration_fraction": 0.3,
}
"""How a challenger is trained: the closed loop's settings (`agents.feedback_loop.LoopConfig`),
so a challenger trained here and one trained inside a replay are comparable."""


class LearningTools(ToolBase):
    TOOLS = (
        ToolInfo(
            "retrain_requests",
            "Retrain requests the feedback learner has not acted on yet (each with its "
            "training window, triggers and reason), and optionally the ones it has.",
            m.RetrainRequestsInput,
            m.RetrainRequestsOut,
            "retrain_requests",
        ),
        ToolInfo(
            "train_challenger",
            "Act on one retrain request: train a challenger forecaster on the request's "
            "window of stored telemetry, save its artifact and register it (it serves nothing "
            "until it wins an experiment and an operator approves). Marks the request handled.",
            m.TrainChallengerInput,
            m.WriteOut,
            "train_challenger",
            writes=True,
        ),
    )

    def _requests(self) -> tuple[list[Any], dict[int, dict[str, Any]]]:
        requests = self.store.list_events(kind="retrain_requested", subject=KIND)
        handled = {
            int(e.detail.get("request_id", -1)): {**e.detail, "at": iso(e.ts)}
            for e in self.store.list_events(kind="retrain_handled", subject=KIND)
        }
        return requests, handled

    def retrain_requests(
        self, params: m.RetrainRequestsInput | None = None
    ) -> m.RetrainRequestsOut:
        params = params or m.RetrainRequestsInput()
        requests, handled = self._requests()

        def view(e: Any) -> dict[str, Any]:
            return {
                "request_id": e.id,
                "at": iso(e.ts),
                "reason": e.detail.get("reason"),
                "triggers": e.detail.get("triggers"),
                "window": e.detail.get("window"),
                "active_version": e.detail.get("active_version"),
            }

        return m.RetrainRequestsOut(
            now=iso(self.now()) or "unknown",
            pending=[view(e) for e in requests if e.id not in handled],
            handled=[{**view(e), "outcome": handled[e.id]} for e in requests if e.id in handled]
            if params.include_handled
            else [],
        )

    def train_challenger(self, params: m.TrainChallengerInput) -> m.WriteOut:
        from tools.forecaster import train

        requests, handled = self._requests()
        request = next((e for e in requests if e.id == params.request_id), None)
        if request is None:
            raise ToolError(
                f"no retrain request {params.request_id}; pending: "
                f"{[e.id for e in requests if e.id not in handled] or 'none'}"
            )
        if request.id in handled:
            raise ToolError(
                f"retrain request {request.id} was already acted on: {handled[request.id]}"
            )
        if self.artifact_dir is None:
            raise ToolError("this store has no artifact directory (an in-memory database)")
        window = request.detail.get("window") or {}
        start, end = window.get("start_ts"), window.get("end_ts")
        if start is None or end is None:
            raise ToolError(f"retrain request {request.id} has no training window")
        now = self.now()
        active = self.store.active_model_version(KIND)
        parent = active.version_id if active else None
        points = self.store.list_telemetry(since=float(start), until=float(end) + 1e-6)
        try:
            model, report = train(
                points, seed=request.id, n_jobs=1, parent_version=parent, **TRAINING
            )
        except ValueError as exc:
            self.store.record_event(
                "retrain_handled",
                subject=KIND,
                detail={"request_id": request.id, "status": "failed", "error": str(exc)},
                ts=now,
            )
            return m.WriteOut(
                ok=False,
                message=f"training failed on {len(points)} telemetry points: {exc}",
                detail={"request_id": request.id, "points": len(points)},
            )
        register_forecaster(
            self.store,
            model,
            artifact_dir=self.artifact_dir,
            at=now,
            parent_id=parent,
            note=f"challenger trained by the feedback learner for retrain request {request.id}",
        )
        self.models.put(model)
        holdout = {
            "n": report.n_holdout,
            "mae_ms": round(report.forest.mae_ms, 2),
            "persistence_mae_ms": round(report.persistence.mae_ms, 2),
            "interval_coverage": round(report.interval.holdout_coverage, 3),
        }
        self.store.record_event(
            "retrain_handled",
            subject=KIND,
            detail={
                "request_id": request.id,
                "status": "trained",
                "version_id": model.version_id,
                "parent": parent,
                "holdout": holdout,
            },
            ts=now,
        )
        return m.WriteOut(
            ok=True,
            message=(
                f"challenger {model.version_id} trained on {len(points)} telemetry points "
                f"({iso(float(start))} to {iso(float(end))}); hold-out MAE "
                f"{holdout['mae_ms']} ms vs persistence {holdout['persistence_mae_ms']} ms. "
                "It serves nothing until it wins an experiment and the promotion is approved."
            ),
            detail={
                "request_id": request.id,
                "version_id": model.version_id,
                "parent": parent,
                "trained_from": iso(model.trained_from_ts),
                "trained_to": iso(model.trained_to_ts),
                "holdout": holdout,
            },
        )
