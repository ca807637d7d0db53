"""The offline router agent's rule for an ambiguous request (the `submit_decision` it makes).

It never reads request metadata: that text is data for auditors, not input to a decision.
"""

from __future__ import annotations

from typing import Any

from agents.offline.text import OFFLINE_TAG

MOVE_FROM = 0.6
MOVE_MARGIN = 0.3
"""A request leaves a healthy pick only when the pick is at least `MOVE_FROM` likely to breach
and the target is `MOVE_MARGIN` less likely: the policy's split already weighs these forecasts
against load, which one request's picture does not show."""
ROOMY = 0.6
"""A backend above this utilisation is not a target for moved requests (queues grow fast)."""


def choose_backend(ctx: dict[str, Any]) -> dict[str, Any]:
    """The router agent's rule for an ambiguous request.

    The policy's split balances load across the fleet; the agent sees one request's picture. So
    the agent confirms the policy's pick unless it is clearly worse than an alternative:
    - a pick is moved when its backend is failing (errors >= 5%) or alarmed, or when it is at
      least `MOVE_FROM` likely to breach the SLA and the target is `MOVE_MARGIN` less likely;
    - the target is the cheapest allowed backend confidently within the SLA (breach probability
      < 0.25) with room to spare (utilisation < `ROOMY`, when known), else the roomy backend
      least likely to breach;
    - every backend that would not be moved is listed as also acceptable, so requests that keep
      their pick keep the policy's load balance (the answer is shared by a tick's requests).
    """
    allowed = set(ctx.get("allowed_backends") or [])
    sla = (ctx.get("request") or {}).get("sla_ms", ctx.get("sla_ms"))
    cands = [c for c in ctx.get("candidates") or [] if c.get("backend") in allowed]
    if not cands:
        return {"backend": "", "confidence": 0.0, "rationale": "no allowed backend"}

    def p(c: dict[str, Any]) -> float:
        v = c.get("p_over_sla")
        return 0.5 if v is None else float(v)

    def cost(c: dict[str, Any]) -> float:
        v = c.get("cost_per_request")
        return float("inf") if v is None else float(v)

    def util(c: dict[str, Any]) -> float:
        v = c.get("utilisation")
        return 0.0 if v is None else float(v)

    def troubled(c: dict[str, Any]) -> bool:
        return bool(c.get("alarm")) or float(c.get("error_rate") or 0.0) >= 0.05

    targets = [c for c in cands if util(c) < ROOMY and not troubled(c) and p(c) < 0.5]
    clear = [c for c in targets if p(c) < 0.25]
    if clear:
        best = min(clear, key=lambda c: (cost(c), p(c), c["backend"]))
        why = "the cheapest allowed backend confidently within the SLA with room to spare"
    elif targets:
        floor = min(p(c) for c in targets)  # wide intervals: similar p, compare forecasts
        near = [c for c in targets if p(c) <= floor + 0.1]
        best = min(near, key=lambda c: (c.get("forecast_ms") or 1e12, cost(c), c["backend"]))
        why = "no backend is confidently within the SLA; the roomy one least likely to breach it"
    else:
        best = None
        why = ""

    def moved(c: dict[str, Any]) -> bool:
        if best is None or c is best:
            return False
        return troubled(c) or (p(c) >= MOVE_FROM and p(c) - p(best) >= MOVE_MARGIN)

    policy = ctx.get("policy_choice")
    pick = next((c for c in cands if c["backend"] == policy), None)
    if best is None:
        # Nothing is clearly better: confirm the policy's load-balanced pick.
        best = pick or min(cands, key=lambda c: (p(c), cost(c), c["backend"]))
        why = (
            "no allowed backend with room to spare is more likely than not within the SLA; "
            "moving traffic would only pile it onto one backend, so the policy's pick stands"
        )
    also = [c["backend"] for c in cands if c is not best and not moved(c)]
    fc, lo, hi = best.get("forecast_ms"), best.get("lo_ms"), best.get("hi_ms")
    if all(isinstance(v, int | float) for v in (fc, lo, hi, sla)):
        figures = (
            f"forecast p95 {fc:.0f} ms (90% interval {lo:.0f}-{hi:.0f} ms), {p(best):.0%} breach "
            f"probability against the {sla:.0f} ms SLA"
        )
    else:
        figures = "no forecast available"
    note = ""
    if pick is not None and pick is not best:
        verb = "is moved" if moved(pick) else "is kept (acceptable)"
        note = f" The policy's pick {policy} ({p(pick):.0%} breach probability) {verb}."
    elif policy and pick is None:
        note = f" The policy's pick {policy} is not allowed."
    return {
        "backend": best["backend"],
        "confidence": round(min(0.99, max(0.01, 1.0 - p(best))), 3),
        "rationale": f"{OFFLINE_TAG} {best['backend']}: {why}; {figures}.{note}",
        "also_acceptable": also[:7],
    }
