"""Changing the serving model, only with an approval.

A winning challenger (or, after a promotion, a previous model that wins its watch) is a proposal:
a row in `approvals` (the same table `arcpoint approvals` answers). With `auto_approve` the loop
approves it at once, recorded as approved by the setting; otherwise it waits, the loop keeps the
champion serving, and every check reads the answer: approved -> the change is made (the store's
active version and the router's forecaster, no restart; a promotion starts a post-promotion
watch); rejected -> the challenger is withdrawn. An operator's `promote` is itself the approval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from agents.monitors.base import KIND, LoopBase
from context_api import approvals
from context_api.model_store import register_forecaster
from context_api.timefmt import iso
from tools.forecaster import Forecaster

if TYPE_CHECKING:
    from agents.monitors.experiments import _Experiment
    from tools.experiment_stats import ExperimentVerdict


@dataclass
class _Waiting:
    """A proposed change and what it would do, while the loop waits for the answer."""

    approval_id: str
    action: Literal["promote", "rollback"]
    model: Forecaster
    """The version that would serve."""
    previous: str
    """The version serving when it was proposed."""
    reason: str


class PromotionGate(LoopBase):
    _waiting: _Waiting | None

    def _promote(self, exp: _Experiment, v: ExperimentVerdict) -> None:
        p = f", p={v.p_value:.2g}" if v.p_value is not None else ""
        self._propose("promote", exp, f"won {exp.label}: challenger_wins{p}")

    def _rollback(self, exp: _Experiment, v: ExperimentVerdict) -> None:
        self._propose("rollback", exp, f"post-promotion watch {exp.label}: previous model better")

    def _propose(
        self, action: Literal["promote", "rollback"], exp: _Experiment, reason: str
    ) -> None:
        model = exp.challenger
        v = exp.verdict
        try:
            row = approvals.create(
                self.store,
                action=action,
                model_kind=KIND,
                version_id=model.version_id,
                current_version_id=self.champion.version_id,
                experiment_id=exp.experiment_id,
                summary=f"{action} {model.version_id}: {reason}",
                evidence={
                    "experiment_id": exp.experiment_id,
                    "purpose": exp.purpose,
                    "verdict": v.model_dump(mode="json") if v is not None else None,
                    "look": exp.detail,
                },
                proposed_by="feedback_loop",
                created_at=self.now,
            )
        except approvals.ApprovalError as exc:
            self._note("change_not_proposed", f"{action} {model.version_id} not proposed: {exc}")
            return
        self._waiting = _Waiting(row.approval_id, action, model, self.champion.version_id, reason)
        self.stats["proposals"] += 1
        self._note(
            "change_proposed",
            f"proposed: {action} {model.version_id} (approval {row.approval_id}); "
            + (
                "auto-approve is on"
                if self.config.auto_approve
                else f"{self.champion.version_id} keeps serving until an operator answers"
            ),
            approval_id=row.approval_id,
            action=action,
            version=model.version_id,
        )
        if self.config.auto_approve:
            approvals.decide(
                self.store,
                row.approval_id,
                approved=True,
                by=approvals.AUTO_APPROVER,
                reason="LoopConfig.auto_approve is on",
                at=self.now,
            )
        self._poll_approval()

    def _poll_approval(self) -> None:
        """Act on the answer to the waiting proposal, if there is one yet."""
        w = self._waiting
        if w is None:
            return
        row = approvals.get(self.store, w.approval_id)
        if row is None or row.status == "pending":
            return
        self._waiting = None
        by = f"{row.status} by {row.decided_by}" + (f": {row.reason}" if row.reason else "")
        if row.status == "rejected":
            self.stats["rejections"] += 1
            self._note(
                "change_rejected",
                f"{w.action} {w.model.version_id} {by}; {self.champion.version_id} keeps serving",
                approval_id=w.approval_id,
            )
            return
        if row.status != "approved":  # applied, superseded or failed elsewhere
            self._note("change_answered", f"approval {w.approval_id} is {row.status}: {row.result}")
            return
        if self.champion.version_id != w.previous:
            approvals.finish(
                self.store,
                w.approval_id,
                status="superseded",
                result=f"not applied: {self.champion.version_id} serves now, not {w.previous}",
                at=self.now,
            )
            self._note("change_superseded", f"approval {w.approval_id}: another version serves")
            return
        reason = f"approval {w.approval_id} ({w.action}) {by}; {w.reason}"
        if w.action == "promote":
            self.promote(w.model, reason=reason)
        else:
            self._apply_rollback(w.model, reason)
        approvals.finish(
            self.store,
            w.approval_id,
            status="applied",
            result=f"{w.model.version_id} serves from {iso(self.now)} (was {w.previous})",
            at=self.now,
        )

    def promote(self, model: Forecaster, *, reason: str) -> None:
        """Make `model` the active version and the router's forecaster (no restart), and,
        unless disabled, watch it against the previous champion in shadow. The loop calls this
        only for an approved change; an operator calling it directly is the approval."""
        if self._experiment is not None:
            self._end_experiment("aborted", f"superseded by a promotion: {reason}", None)
        old = self.champion
        if old.version_id == model.version_id:
            return
        self.models[model.version_id] = model
        register_forecaster(
            self.store, model, artifact_dir=self.artifact_dir, at=self.now, note="promoted"
        )
        self.store.activate_model_version(model.version_id, reason=reason, at=self.now)
        self.fleet.set_forecaster(model)
        self.stats["promotions"] += 1
        self._last_training_end = self.now
        self._start_model(model, self.now)
        self._note(
            "promotion",
            f"promoted {model.version_id} (previous {old.version_id}); the router forecasts with "
            "it from the next tick, no restart",
            version=model.version_id,
            previous=old.version_id,
            reason=reason,
        )
        self._alert(
            "model_change",
            KIND,
            "info",
            f"None: {reason}. Roll back with `arcpoint models rollback --to {old.version_id}` "
            "if needed.",
            version=model.version_id,
            previous=old.version_id,
        )
        if self.config.watch_after_promotion:
            self._start_experiment(old, purpose="watch", mode="shadow")

    def _apply_rollback(self, good: Forecaster, reason: str) -> None:
        bad = self.champion
        self.store.rollback_model(KIND, to_version=good.version_id, reason=reason, at=self.now)
        self.fleet.set_forecaster(good)
        self.stats["rollbacks"] += 1
        self._start_model(good, self.now)
        self._note(
            "rollback",
            f"rolled back from {bad.version_id} to {good.version_id}: {reason}",
            version=good.version_id,
            previous=bad.version_id,
        )
        self._alert(
            "model_change",
            KIND,
            "high",
            "Investigate why the retrained model lost to its parent after promotion.",
            version=good.version_id,
            previous=bad.version_id,
        )
