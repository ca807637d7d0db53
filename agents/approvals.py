"""Answering the monitors' proposals: what `arcpoint approvals` and the HTTP service call.

    list_approvals(store, status=None)        newest first
    show_approval(store, approval_id)         the proposal, its evidence and its traces
    approve(store, approval_id, by=..., reason=None)
    reject(store, approval_id, by=..., reason=...)

Answering records the decision in the `approvals` table first (the record of who decided what
and why), then resumes the monitor pass waiting at that approval's LangGraph interrupt; the pass
applies an approved change (`MonitorGraph._apply_change`) and writes an `approval` trace. The
serving model changes only there. Errors an operator can fix (unknown id, already answered, no
reason for a rejection) raise `ApprovalError` with a message that says so.
"""

from __future__ import annotations

from typing import Any

from context_api import approvals
from context_api.approvals import Approval, ApprovalError
from context_api.store import Store

__all__ = [
    "Approval",
    "ApprovalError",
    "approve",
    "list_approvals",
    "reject",
    "show_approval",
]


def list_approvals(
    store: Store, status: approvals.Status | None = None, *, limit: int | None = 50
) -> list[Approval]:
    return approvals.list_approvals(store, status, limit=limit)


def show_approval(store: Store, approval_id: str) -> dict[str, Any]:
    """The approval with the traces behind it (the proposing pass, and the answer's)."""
    from context_api.traces import TraceStore

    row = approvals.require(store, approval_id)
    traces = TraceStore(store)
    answered = [t.trace_id for t in traces.list(kind="approval", parent_id=approval_id, limit=10)]
    experiment = store.get_experiment(row.experiment_id) if row.experiment_id else None
    return {
        **row.model_dump(mode="json"),
        "proposal_trace_id": row.trace_id,
        "answer_trace_ids": answered,
        "experiment": experiment.model_dump(mode="json") if experiment else None,
    }


def approve(
    store: Store, approval_id: str, *, by: str, reason: str | None = None, model: Any = None
) -> dict[str, Any]:
    """Approve and resume: the change is applied by the waiting monitor pass."""
    return _answer(store, approval_id, approved=True, by=by, reason=reason, model=model)


def reject(
    store: Store, approval_id: str, *, by: str, reason: str, model: Any = None
) -> dict[str, Any]:
    """Reject (a reason is required) and resume: the pass ends without a change."""
    return _answer(store, approval_id, approved=False, by=by, reason=reason, model=model)


def _answer(
    store: Store,
    approval_id: str,
    *,
    approved: bool,
    by: str,
    reason: str | None,
    model: Any,
) -> dict[str, Any]:
    from agents.monitor_graph import MonitorGraph
    from context_api.api import ContextAPI
    from context_api.traces import TraceStore

    api = ContextAPI(store)
    row = approvals.decide(
        store, approval_id, approved=approved, by=by, reason=reason, at=_now(api)
    )
    with MonitorGraph(api, model, traces=TraceStore(store)) as graph:
        outcome = graph.resume(row)
    final = approvals.require(store, approval_id)
    return {"approval": final.model_dump(mode="json"), **outcome}


def _now(api: Any) -> float:
    """The store's "now" (its newest telemetry: simulated time in a demo database)."""
    import time

    return time.time() if api.is_empty() else api.now()
