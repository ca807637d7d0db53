"""Champion-vs-challenger experiments: stored looks and a fresh evaluation of running ones; for
the experiment monitor, starting one, taking a look, and proposing the change its verdict calls
for (a proposal waits for an operator's approval: nothing here activates a model)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from context_api import api_models as m
from context_api import approvals, shadow
from context_api.agent_tools.base import (
    ToolBase,
    ToolInfo,
)
from context_api.model_store import KIND
from context_api.timefmt import ToolError, iso, rnd
from context_api.timefmt import iso_or_unknown as _iso


class ExperimentTools(ToolBase):
    TOOLS = (
        ToolInfo(
            "experiments",
            "Champion-vs-challenger experiments: status, a fresh evaluation of running "
            "ones (sample-ratio mismatch, significance with alpha spending, MAE of each "
            "arm, recommendation promote/keep/rollback/continue), stored verdicts.",
            m.ExperimentsInput,
            m.ExperimentsOut,
            "experiments",
        ),
        ToolInfo(
            "approvals",
            "Proposed changes to the serving model (promotion or rollback) and their answers: "
            "pending ones wait for an operator; each with its evidence, who answered, and "
            "what applying it did.",
            m.ApprovalsInput,
            m.ApprovalsOut,
            "approvals",
        ),
        ToolInfo(
            "start_experiment",
            "Start a shadow experiment: the serving champion against a trained challenger, both "
            "forecasting every stored tick from the same features and judged against the p95 "
            "measured one horizon later. Refused while another experiment runs.",
            m.StartExperimentInput,
            m.WriteOut,
            "start_experiment",
            writes=True,
        ),
        ToolInfo(
            "evaluate_experiment",
            "Take a look at a running experiment (paired test on 60 s blocks of absolute "
            "error, alpha spending across looks); store it, and conclude the experiment when "
            "the verdict is in.",
            m.ExperimentIdInput,
            m.WriteOut,
            "evaluate_experiment",
            writes=True,
        ),
        ToolInfo(
            "propose_model_change",
            "Propose the change a concluded experiment calls for (promote a winning challenger; "
            "roll back when a post-promotion watch finds the previous model better). It waits "
            "for an operator's approval; nothing changes until then.",
            m.ProposeChangeInput,
            m.WriteOut,
            "propose_model_change",
            writes=True,
        ),
    )

    def experiments(self, params: m.ExperimentsInput | None = None) -> m.ExperimentsOut:
        params = params or m.ExperimentsInput()
        if params.experiment_id is not None:
            one = self.store.get_experiment(params.experiment_id)
            if one is None:
                raise ToolError(f"unknown experiment {params.experiment_id!r}")
            found = [one]
        else:
            found = self.store.list_experiments(params.status)
        out = []
        for e in found:
            results = self.store.list_experiment_results(e.experiment_id)
            last = results[-1] if results else None
            live = self._evaluate_experiment(e, last) if e.status == "running" else None
            out.append(
                m.ExperimentOut(
                    experiment_id=e.experiment_id,
                    name=e.name,
                    mode=e.mode,
                    status=e.status,
                    champion_id=e.champion_id,
                    challenger_id=e.challenger_id,
                    started_at=_iso(e.started_at),
                    ended_at=iso(e.ended_at),
                    verdict=e.verdict,
                    winner_id=e.winner_id,
                    purpose=e.params.get("purpose"),
                    source=e.params.get("source"),
                    live=live,
                    last_result=None
                    if last is None
                    else {
                        "at": iso(last.ts),
                        "verdict": last.verdict,
                        "n_champion": last.n_champion,
                        "n_challenger": last.n_challenger,
                        "champion_mae_ms": rnd(last.champion_mae),
                        "challenger_mae_ms": rnd(last.challenger_mae),
                        "p_value": last.p_value,
                        "srm_p_value": last.srm_p_value,
                    },
                )
            )
        notes = [] if out else ["no experiments are stored"]
        return m.ExperimentsOut(experiments=out, untested_challengers=self._untested(), notes=notes)

    def _untested(self) -> list[dict[str, Any]]:
        tried = {e.challenger_id for e in self.store.list_experiments()} | {
            e.champion_id for e in self.store.list_experiments()
        }
        served = {h.version_id for h in self.store.model_history(KIND)}
        return [
            {
                "version_id": v.version_id,
                "created_at": iso(v.created_at),
                "parent_id": v.parent_id,
                "trained_from": iso(v.trained_from_ts),
                "trained_to": iso(v.trained_to_ts),
                "note": v.note,
            }
            for v in reversed(self.store.list_model_versions(KIND))
            if v.version_id not in tried and v.version_id not in served and v.artifact_path
        ]

    def _evaluate_experiment(self, e: Any, last: Any) -> dict[str, Any]:
        from tools.experiment_stats import ExperimentConfig, evaluate_shadow, evaluate_split

        prev = _spent([last] if last else [])
        if e.params.get("source") == shadow.SOURCE:
            try:
                verdict, detail = shadow.look(
                    self.store, e, self.models.get, previous_fraction=prev
                )
            except ValueError as exc:
                return {"error": f"cannot evaluate: {exc}"}
            return {**_verdict_fields(verdict), "detail": detail}

        allowed = set(ExperimentConfig.model_fields)
        cfg = ExperimentConfig(**{k: v for k, v in e.params.items() if k in allowed})
        rows = self.store.experiment_errors(e.experiment_id)
        if e.mode == "shadow":
            pairs: dict[str, dict[str, float]] = defaultdict(dict)
            for r in rows:
                pairs[r["decision_id"]][r["arm"]] = r["abs_error"]
            both = [p for p in pairs.values() if "champion" in p and "challenger" in p]
            champ = [p["champion"] for p in both]
            chall = [p["challenger"] for p in both]
            verdict = evaluate_shadow(champ, chall, cfg, previous_information_fraction=prev)
        else:
            champ = [r["abs_error"] for r in rows if r["arm"] == "champion"]
            chall = [r["abs_error"] for r in rows if r["arm"] == "challenger"]
            verdict = evaluate_split(champ, chall, cfg, previous_information_fraction=prev)
        out = _verdict_fields(verdict)
        if verdict.srm is not None:
            out["srm"] = verdict.srm.model_dump(mode="json")
        return out

    def approvals(self, params: m.ApprovalsInput | None = None) -> m.ApprovalsOut:
        params = params or m.ApprovalsInput()
        try:
            rows = (
                [approvals.require(self.store, params.approval_id)]
                if params.approval_id
                else approvals.list_approvals(self.store, params.status, limit=20)
            )
        except approvals.ApprovalError as exc:
            raise ToolError(str(exc)) from None
        return m.ApprovalsOut(
            pending=len(approvals.pending(self.store)),
            approvals=[
                {
                    **r.model_dump(
                        mode="json",
                        exclude={"created_at", "decided_at", "applied_at", "evidence"},
                    ),
                    "created_at": iso(r.created_at),
                    "decided_at": iso(r.decided_at),
                    "applied_at": iso(r.applied_at),
                    "last_look": (r.evidence or {}).get("last_look"),
                }
                for r in rows
            ],
        )

    # -- the experiment monitor's writes -----------------------------------------------------

    def start_experiment(self, params: m.StartExperimentInput) -> m.WriteOut:
        running = self.store.list_experiments("running")
        if running:
            raise ToolError(f"experiment {running[0].experiment_id} is still running")
        active = self.store.active_model_version(KIND)
        if active is None:
            raise ToolError("no forecaster is serving: nothing to compare a challenger with")
        if params.challenger_id == active.version_id:
            raise ToolError(f"{params.challenger_id} is the serving champion")
        challenger = self.store.get_model_version(params.challenger_id)
        if challenger is None or challenger.kind != KIND:
            raise ToolError(f"unknown forecaster version {params.challenger_id!r}")
        for version in (active.version_id, challenger.version_id):
            try:
                self.models.get(version)
            except (ValueError, OSError) as exc:
                raise ToolError(f"cannot run an experiment: {exc}") from None
        return self._start(active.version_id, challenger, purpose="challenge")

    def _start(self, champion_id: str, challenger: Any, *, purpose: str) -> m.WriteOut:
        now = self.now()
        # Never score the challenger on the data it learned from.
        start = max(now, float(challenger.trained_to_ts or now))
        cfg = shadow.default_config()
        eid = f"exp-{approvals.new_approval_id(purpose, challenger.version_id, now)[4:]}"
        name = "champion vs challenger" if purpose == "challenge" else "post-promotion watch"
        self.store.create_experiment(
            eid,
            champion_id,
            challenger.version_id,
            "shadow",
            name=name,
            started_at=now,
            params={
                **cfg.model_dump(),
                "purpose": purpose,
                "source": shadow.SOURCE,
                "unit": f"{shadow.BLOCK_S:g} s block of per-tick absolute error against the "
                "p95 measured one horizon later",
                "evaluate_from": start,
            },
        )
        return m.WriteOut(
            ok=True,
            message=(
                f"experiment {eid} started ({name}, shadow): {champion_id} vs "
                f"{challenger.version_id}, scored on telemetry from {iso(start)}; the first "
                f"verdict needs {cfg.min_samples_per_arm} blocks of {shadow.BLOCK_S:g} s"
            ),
            detail={"experiment_id": eid, "evaluate_from": iso(start), "purpose": purpose},
        )

    def evaluate_experiment(self, params: m.ExperimentIdInput) -> m.WriteOut:
        from context_api.store import ExperimentResult

        e = self.store.get_experiment(params.experiment_id)
        if e is None:
            raise ToolError(f"unknown experiment {params.experiment_id!r}")
        if e.status != "running":
            raise ToolError(f"experiment {e.experiment_id} is {e.status}: {e.verdict}")
        if e.params.get("source") != shadow.SOURCE:
            raise ToolError(
                f"experiment {e.experiment_id} is judged by the closed loop that runs it, "
                "not over the store"
            )
        results = self.store.list_experiment_results(e.experiment_id)
        prev = _spent(results)
        now = self.now()
        try:
            verdict, detail = shadow.look(self.store, e, self.models.get, previous_fraction=prev)
        except ValueError as exc:
            raise ToolError(f"cannot evaluate {e.experiment_id}: {exc}") from None
        detail["look"] = len(results) + 1
        self.store.record_experiment_result(
            ExperimentResult.from_verdict(e.experiment_id, now, verdict, detail)
        )
        out = {"experiment_id": e.experiment_id, **_verdict_fields(verdict), "detail": detail}
        if verdict.recommendation == "continue":
            message = f"look {detail['look']}: {verdict.summary}"
            return m.WriteOut(ok=True, message=message, detail=out)
        winner = {
            "challenger_wins": e.challenger_id,
            "champion_wins": e.champion_id,
        }.get(verdict.state)
        self.store.conclude_experiment(
            e.experiment_id,
            verdict=f"{verdict.state}: {verdict.summary}",
            winner_id=winner,
            ended_at=now,
        )
        purpose = e.params.get("purpose", "challenge")
        change = None
        if verdict.state == "challenger_wins":
            change = "promote" if purpose == "challenge" else "rollback"
        out["concluded"] = True
        out["change_warranted"] = change
        tail = (
            f"; propose to {change} {e.challenger_id} (propose_model_change)"
            if change
            else f"; {e.champion_id} keeps serving"
        )
        return m.WriteOut(
            ok=True,
            message=f"experiment {e.experiment_id} concluded: {verdict.summary}{tail}",
            detail=out,
        )

    def propose_model_change(self, params: m.ProposeChangeInput) -> m.WriteOut:
        e = self.store.get_experiment(params.experiment_id)
        if e is None:
            raise ToolError(f"unknown experiment {params.experiment_id!r}")
        if e.status != "concluded" or e.winner_id != e.challenger_id:
            raise ToolError(
                f"experiment {e.experiment_id} is {e.status}"
                + (f" ({e.verdict})" if e.verdict else "")
                + ": only a concluded experiment whose challenger won warrants a change"
            )
        active = self.store.active_model_version(KIND)
        if active is None or active.version_id != e.champion_id:
            raise ToolError(
                f"the serving model is {active.version_id if active else 'none'}, not the "
                f"experiment's champion {e.champion_id}: its verdict no longer applies"
            )
        purpose = e.params.get("purpose", "challenge")
        action = "promote" if purpose == "challenge" else "rollback"
        last = self.store.list_experiment_results(e.experiment_id)
        evidence = {
            "experiment_id": e.experiment_id,
            "purpose": purpose,
            "verdict": e.verdict,
            "last_look": last[-1].model_dump(mode="json") if last else None,
        }
        try:
            proposal = approvals.create(
                self.store,
                action=action,
                model_kind=KIND,
                version_id=e.challenger_id,
                current_version_id=e.champion_id,
                experiment_id=e.experiment_id,
                summary=f"{action} {e.challenger_id} (serving: {e.champion_id}): {params.reason}",
                evidence=evidence,
                proposed_by="experiment_monitor",
                created_at=self.now(),
            )
        except approvals.ApprovalError as exc:
            raise ToolError(str(exc)) from None
        return m.WriteOut(
            ok=True,
            message=(
                f"proposed: {action} {e.challenger_id} (approval {proposal.approval_id}); it "
                "waits for an operator: `arcpoint approvals approve "
                f"{proposal.approval_id}` or `reject {proposal.approval_id} --reason ...`"
            ),
            detail={
                "approval_id": proposal.approval_id,
                "action": action,
                "version_id": e.challenger_id,
                "current_version_id": e.champion_id,
            },
        )

    # -- applying an approved change (never a tool: only the approval graph calls it) ---------

    def apply_approved(self, approval_id: str) -> approvals.Approval:
        """Make the change an operator approved: activate the proposed version (the serving
        model changes here and nowhere else in the monitors), then watch it against the model it
        replaced in a post-promotion shadow experiment. A change whose premise no longer holds
        (another version serves now) is marked superseded, not applied."""
        proposal = approvals.require(self.store, approval_id)
        if proposal.status != "approved":
            raise ToolError(f"approval {approval_id} is {proposal.status}, not approved")
        now = self.now()
        active = self.store.active_model_version(proposal.model_kind)
        serving = active.version_id if active else None
        if serving != proposal.current_version_id:
            return approvals.finish(
                self.store,
                approval_id,
                status="superseded",
                result=f"not applied: {serving} serves now, not {proposal.current_version_id}",
                at=now,
            )
        try:
            self.models.get(proposal.version_id)
        except (ValueError, OSError) as exc:
            return approvals.finish(
                self.store, approval_id, status="failed", result=f"cannot load: {exc}", at=now
            )
        reason = f"approval {approval_id} ({proposal.action}) by {proposal.decided_by}" + (
            f": {proposal.reason}" if proposal.reason else ""
        )
        if proposal.action == "rollback":
            self.store.rollback_model(
                proposal.model_kind, to_version=proposal.version_id, reason=reason, at=now
            )
        else:
            self.store.activate_model_version(proposal.version_id, reason=reason, at=now)
        result = f"{proposal.version_id} serves from {iso(now)} (was {serving})"
        if proposal.action == "promote" and serving is not None:
            previous = self.store.get_model_version(serving)
            watch = self._start(proposal.version_id, previous, purpose="watch")
            result += f"; {watch.detail['experiment_id']} watches it against {serving}"
        return approvals.finish(self.store, approval_id, status="applied", result=result, at=now)


def _spent(results: list[Any]) -> float:
    """The information fraction through which alpha was spent at the last look (0: none)."""
    if not results:
        return 0.0
    return float(results[-1].detail.get("spent_through_fraction", 0.0) or 0.0)


def _verdict_fields(verdict: Any) -> dict[str, Any]:
    v = verdict.model_dump(mode="json")
    keep = (
        "state",
        "recommendation",
        "test",
        "p_value",
        "alpha_spent_at_look",
        "information_fraction",
        "n_champion",
        "n_challenger",
        "min_samples_per_arm",
        "mae_champion_ms",
        "mae_challenger_ms",
        "mae_difference_ms",
        "relative_change",
        "ci_low_ms",
        "ci_high_ms",
        "ci_level",
        "summary",
    )
    return {k: v.get(k) for k in keep}
