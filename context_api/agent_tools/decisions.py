"""Stored routing decisions: find them, and explain why one went where it did."""

from __future__ import annotations

from typing import Any

from context_api import api_models as m
from context_api import explain as ex
from context_api import queries as q
from context_api.agent_tools.base import (
    ToolBase,
    ToolInfo,
    p_over,
)
from context_api.timefmt import ToolError, iso, num, rnd
from context_api.timefmt import iso_or_unknown as _iso


class DecisionTools(ToolBase):
    TOOLS = (
        ToolInfo(
            "explain_decision",
            "Why a stored routing decision went where it did: its candidates with "
            "forecasts, intervals and breach probabilities, the policy's reason, the "
            "ambiguity and any escalation, and the outcome that arrived later.",
            m.ExplainInput,
            m.ExplainOut,
            "explain_decision",
        ),
        ToolInfo(
            "find_decisions",
            "The newest stored decisions in a window (optionally one backend's, or only "
            "ambiguous ones), with their outcomes: use it to find decision ids.",
            m.FindDecisionsInput,
            m.DecisionsOut,
            "find_decisions",
        ),
    )

    def explain_decision(self, params: m.ExplainInput) -> m.ExplainOut:
        row = self.store.get_decision(params.decision_id)
        if row is None:
            raise ToolError(
                f"no stored decision {params.decision_id!r}; use find_decisions to list recent ids"
            )
        sla = num(row.get("sla_ms")) or self.sla_ms
        cands: list[m.CandidateView] = []
        for c in row.get("candidates") or []:
            mean, lo, hi = num(c.get("forecast_ms")), num(c.get("lo_ms")), num(c.get("hi_ms"))
            p = p_over(mean, lo, hi, sla)
            cands.append(
                m.CandidateView(
                    backend=str(c.get("backend")),
                    forecast_ms=rnd(mean),
                    lo_ms=rnd(lo),
                    hi_ms=rnd(hi),
                    p_over_sla=rnd(p, 3),
                    cost_per_request=num(c.get("cost")),
                    share=rnd(c.get("share"), 3),
                    ejected=bool(c.get("ejected")),
                    allowed=not bool(c.get("ejected")),
                )
            )
        chosen = next((c for c in cands if c.backend == row["backend"]), None)
        reason = row.get("reason") or ""
        base_reason, _, fallback = reason.partition(";agent_fallback=")
        policy = row.get("policy")
        if policy == "router_agent":
            decided_by = "router_agent"
            base_reason = base_reason.removeprefix("agent:")
        elif fallback:
            decided_by = "policy_after_agent_fallback"
        else:
            decided_by = "policy"
        amb = row.get("ambiguous_reason")
        outcome: dict[str, Any] = {"status": row.get("status")}
        actual = num(row.get("actual_latency_ms"))
        if actual is not None:
            outcome.update(
                actual_latency_ms=round(actual, 1),
                within_sla=actual <= sla,
                forecast_error_ms=rnd(row.get("error_ms")),
                observed_at=iso(num(row.get("observed_at"))),
            )
        elif row.get("status") == "pending":
            outcome["note"] = "no outcome reported (yet): a failed request reports none"
        explanation = ex.explain_lines(
            row, cands, chosen, sla, base_reason, decided_by, fallback, amb
        )
        escalation = self._escalation_of(row["decision_id"]) if row.get("ambiguous") else None
        if escalation is not None and escalation.get("rationale"):
            explanation.append(
                f"Router agent ({escalation.get('llm')}, confidence "
                f"{escalation.get('confidence')}): {escalation['rationale']}"
            )
        return m.ExplainOut(
            decision_id=row["decision_id"],
            request_id=row.get("request_id"),
            at=_iso(row["ts"]),
            tier=row.get("tier"),
            sla_ms=sla,
            backend=row["backend"],
            decided_by=decided_by,  # type: ignore[arg-type]
            policy=policy,
            reason=base_reason or None,
            reason_text=ex.REASON_TEXT.get(base_reason, base_reason or "not recorded"),
            ambiguous=bool(row.get("ambiguous")),
            ambiguous_reason=amb,
            ambiguity_text=ex.ambiguity_text(amb),
            agent_fallback_reason=fallback or None,
            model_version=row.get("model_version"),
            candidates=cands,
            chosen=chosen,
            outcome=outcome,
            explanation=explanation,
            escalation=escalation,
        )

    def _escalation_of(self, decision_id: str) -> dict[str, Any] | None:
        """The escalation trace of a decision (and the shared agent run it reused), if any."""
        from context_api.traces import TraceStore

        try:
            traces = TraceStore(self.store)
            found = traces.list(kind="escalation", parent_id=decision_id, limit=1)
            if not found:
                return None
            trace = traces.get(found[0].trace_id)
            if trace is None:
                return None
            final = trace.final if isinstance(trace.final, dict) else {}
            source = trace
            shared = trace.inputs.get("shared_trace_id")
            if shared:
                source = traces.get(shared) or trace
            answer = source.final if isinstance(source.final, dict) else {}
        except Exception:  # an odd or older file: the decision is still explained
            return None
        return {
            "trace_id": trace.trace_id,
            "agent_trace_id": source.trace_id,
            "decided_by": final.get("decided_by"),
            "backend": final.get("backend"),
            "agent_backend": answer.get("agent_backend"),
            "confidence": answer.get("confidence"),
            "rationale": answer.get("rationale"),
            "fallback_reason": trace.fallback_reason,
            "llm": trace.llm,
            "model": trace.model,
        }

    def find_decisions(self, params: m.FindDecisionsInput | None = None) -> m.DecisionsOut:
        params = params or m.FindDecisionsInput()
        self._check_backend(params.backend)
        since, until = self._window(params.since, params.until, 15.0)
        found = q.recent_decisions(
            self.store,
            since,
            until + 1e-6,
            backend=params.backend,
            ambiguous_only=params.ambiguous_only,
            limit=params.limit,
        )
        return m.DecisionsOut(
            since=_iso(since),
            until=_iso(until),
            decisions=[
                {
                    "decision_id": r["decision_id"],
                    "at": iso(r["ts"]),
                    "backend": r["backend"],
                    "tier": r["tier"],
                    "sla_ms": r["sla_ms"],
                    "policy": r["policy"],
                    "reason": r["reason"],
                    "ambiguous": bool(r["ambiguous"]),
                    "actual_latency_ms": rnd(r["actual"]),
                    "status": r["status"],
                }
                for r in found
            ],
        )
