"""`/v1/route` while the router agent is slow: no request waits past the escalation deadline,
every one gets the router's own pick, and each fallback is counted and recorded."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx

from agents.escalation import FALLBACK_MARK
from agents.offline import OfflineModel
from arcpoint.serve.app import create_app
from arcpoint.serve.config import ServeConfig
from arcpoint.serve.service import Service

REQUESTS = 120


class SlowReasoner(OfflineModel):
    """The offline reasoner (the service's default, which runs in process) behind a gate: no
    answer until the test opens it, as if one run took far longer than the deadline."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.calls = 0

    def next_turn(self, request: Any) -> Any:
        self.calls += 1
        self.gate.wait(30)
        return super().next_turn(request)


def test_route_takes_the_routers_pick_at_once_while_the_agent_is_busy(tmp_path, monkeypatch):
    slow = SlowReasoner()
    monkeypatch.setattr(Service, "_llm", lambda self: slow)
    config = ServeConfig(
        db=str(tmp_path / "serve.db"),
        tick_s=3600.0,
        run_monitors=False,
        escalation_deadline_s=0.2,
    )
    svc = Service(config)
    app = create_app(config, service=svc)
    svc.open()
    assert svc.adapter is not None
    svc.adapter.router.escalation_budget = None  # every `review` request escalates
    picks: dict[str, str] = {}
    route = svc.adapter.route

    def remember_the_pick(req: Any) -> Any:
        decision, request, wanted = route(req)
        picks[decision.decision_id] = decision.backend
        return decision, request, wanted

    monkeypatch.setattr(svc.adapter, "route", remember_the_pick)

    async def drive() -> tuple[list[dict[str, Any]], str]:
        await svc.start()
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://serve") as c:
                answers = await asyncio.gather(
                    *(c.post("/v1/route", json={"tier": "review"}) for _ in range(REQUESTS))
                )
                metrics = (await c.get("/metrics")).text
            return [a.json() for a in answers if a.status_code == 200], metrics
        finally:
            slow.gate.set()
            await svc.stop()

    try:
        answers, metrics = asyncio.run(drive())
    finally:
        slow.gate.set()
    assert len(answers) == REQUESTS
    assert slow.calls == 1  # one agent run at a time, nothing queued behind it
    reasons = {}
    for a in answers:
        assert a["escalated"] is True
        assert a["backend"] == picks[a["decision_id"]]  # the router's own pick
        assert FALLBACK_MARK in a["reason"], a["reason"]
        reasons[a["decision_id"]] = a["reason"].split(FALLBACK_MARK, 1)[1]
    # The request that reached the agent gave up at the deadline; the others found it busy
    # (or reused that failure within the tick).
    assert sorted(set(reasons.values())) in (["agent_busy", "timeout"], ["timeout"])
    busy = sum(1 for why in reasons.values() if why == "agent_busy")
    assert busy >= 1
    for why in set(reasons.values()):
        n = sum(1 for w in reasons.values() if w == why)
        assert f'arcpoint_escalation_fallbacks_total{{reason="{why}"}} {float(n)}' in metrics
    assert f'arcpoint_escalations_total{{result="fallback"}} {float(REQUESTS)}' in metrics
    # ... and on the stored decision.
    from context_api.store import Store

    with Store(config.db) as store:
        stored = {
            r["decision_id"]: r["reason"]
            for r in store.db.query("SELECT decision_id, reason FROM decisions")
        }
    for decision_id, why in reasons.items():
        assert stored[decision_id].endswith(f"{FALLBACK_MARK}{why}")
