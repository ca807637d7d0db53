"""Proposed changes to the serving model and the operator's answers (the `approvals` table).

A monitor never changes the serving model itself: the experiment monitor *proposes* a promotion
or a rollback, which is stored here as `pending` while the monitor graph waits at a LangGraph
interrupt. An operator approves or rejects it (`arcpoint approvals`, or the HTTP service), which
resumes that graph; only the graph's apply step activates a model, and only after `approved`.

Status moves one way: pending -> approved -> applied | superseded (the serving model changed
while it waited) | failed (the change could not be made); or pending -> rejected.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from context_api.store import Store

Action = Literal["promote", "rollback"]
Status = Literal["pending", "approved", "rejected", "applied", "superseded", "failed"]
STATUSES: tuple[Status, ...] = (
    "pending",
    "approved",
    "rejected",
    "applied",
    "superseded",
    "failed",
)


AUTO_APPROVER = "auto-approve setting"
"""`decided_by` of a change approved by the auto-approve setting, not by a person."""


class ApprovalError(ValueError):
    """A request about an approval that cannot be honoured (unknown id, already answered...)."""


class Approval(BaseModel):
    approval_id: str
    created_at: float
    action: Action
    model_kind: str
    version_id: str
    """The version that would serve once applied."""
    current_version_id: str | None
    """The version serving when the change was proposed."""
    experiment_id: str | None
    summary: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    proposed_by: str
    thread_id: str | None = None
    trace_id: str | None = None
    status: Status = "pending"
    decided_at: float | None = None
    decided_by: str | None = None
    reason: str | None = None
    applied_at: float | None = None
    result: str | None = None


def _row(r: dict[str, Any]) -> Approval:
    r = dict(r)
    r["evidence"] = json.loads(r.get("evidence") or "{}")
    return Approval(**r)


def new_approval_id(action: str, version_id: str, created_at: float) -> str:
    digest = hashlib.sha256(f"{action}:{version_id}:{created_at!r}".encode()).hexdigest()
    return f"apr-{digest[:10]}"


def create(
    store: Store,
    *,
    action: Action,
    model_kind: str,
    version_id: str,
    current_version_id: str | None,
    experiment_id: str | None,
    summary: str,
    evidence: dict[str, Any],
    proposed_by: str,
    created_at: float,
) -> Approval:
    """Store a pending proposal. Refused (ApprovalError) while another one for the same model
    kind is pending: the operator answers one change at a time."""
    with store.transaction() as conn:
        waiting = pending(store, model_kind)
        if waiting:
            raise ApprovalError(
                f"approval {waiting[0].approval_id} ({waiting[0].action} "
                f"{waiting[0].version_id}) is still waiting for an answer"
            )
        if store.get_model_version(version_id) is None:
            raise ApprovalError(f"unknown model version {version_id!r}")
        approval_id = new_approval_id(action, version_id, created_at)
        conn.execute(
            "INSERT INTO approvals (approval_id, created_at, action, model_kind, version_id,"
            " current_version_id, experiment_id, summary, evidence, proposed_by)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                approval_id,
                created_at,
                action,
                model_kind,
                version_id,
                current_version_id,
                experiment_id,
                summary,
                json.dumps(evidence, default=str),
                proposed_by,
            ),
        )
        store.record_event(
            "approval_requested",
            subject=model_kind,
            detail={
                "approval_id": approval_id,
                "action": action,
                "version_id": version_id,
                "current_version_id": current_version_id,
                "experiment_id": experiment_id,
                "summary": summary,
            },
            ts=created_at,
        )
    found = get(store, approval_id)
    assert found is not None
    return found


def get(store: Store, approval_id: str) -> Approval | None:
    rows = store._query("SELECT * FROM approvals WHERE approval_id = ?", [approval_id])
    return _row(rows[0]) if rows else None


def require(store: Store, approval_id: str) -> Approval:
    found = get(store, approval_id)
    if found is None:
        known = [a.approval_id for a in list_approvals(store, limit=5)]
        hint = f"; recent: {', '.join(known)}" if known else "; there are no approvals yet"
        raise ApprovalError(f"no approval {approval_id!r}{hint}")
    return found


def list_approvals(
    store: Store, status: Status | None = None, *, limit: int | None = 50
) -> list[Approval]:
    """Newest first."""
    if status is not None and status not in STATUSES:
        raise ApprovalError(f"unknown status {status!r}; known: {', '.join(STATUSES)}")
    sql = "SELECT * FROM approvals"
    params: list[Any] = []
    if status is not None:
        sql += " WHERE status = ?"
        params.append(status)
    sql += " ORDER BY created_at DESC, approval_id"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return [_row(r) for r in store._query(sql, params)]


def pending(store: Store, model_kind: str | None = None) -> list[Approval]:
    return [
        a
        for a in list_approvals(store, "pending", limit=None)
        if model_kind is None or a.model_kind == model_kind
    ]


def attach(store: Store, approval_id: str, *, thread_id: str | None, trace_id: str | None) -> None:
    """Name the graph thread waiting on the approval, and the trace of the run that proposed it."""
    with store.transaction() as conn:
        conn.execute(
            "UPDATE approvals SET thread_id = COALESCE(?, thread_id),"
            " trace_id = COALESCE(?, trace_id) WHERE approval_id = ?",
            (thread_id, trace_id, approval_id),
        )


def decide(
    store: Store,
    approval_id: str,
    *,
    approved: bool,
    by: str,
    reason: str | None,
    at: float,
) -> Approval:
    """Record the operator's answer. Only a pending approval can be answered."""
    if not by.strip():
        raise ApprovalError("who answers must be named")
    if not approved and not (reason or "").strip():
        raise ApprovalError("a rejection needs a reason")
    with store.transaction() as conn:
        current = require(store, approval_id)
        if current.status != "pending":
            raise ApprovalError(
                f"approval {approval_id} was already answered: {current.status}"
                + (f" by {current.decided_by}" if current.decided_by else "")
            )
        status = "approved" if approved else "rejected"
        conn.execute(
            "UPDATE approvals SET status = ?, decided_at = ?, decided_by = ?, reason = ?"
            " WHERE approval_id = ?",
            (status, at, by.strip(), (reason or "").strip() or None, approval_id),
        )
        store.record_event(
            f"approval_{status}",
            subject=current.model_kind,
            detail={"approval_id": approval_id, "by": by.strip(), "reason": reason},
            ts=at,
        )
    return require(store, approval_id)


def finish(
    store: Store,
    approval_id: str,
    *,
    status: Literal["applied", "superseded", "failed"],
    result: str,
    at: float,
) -> Approval:
    """Record what applying an approved change did."""
    with store.transaction() as conn:
        current = require(store, approval_id)
        if current.status != "approved":
            raise ApprovalError(f"approval {approval_id} is {current.status}, not approved")
        conn.execute(
            "UPDATE approvals SET status = ?, applied_at = ?, result = ? WHERE approval_id = ?",
            (status, at, result, approval_id),
        )
    return require(store, approval_id)
