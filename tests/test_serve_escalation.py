"""`/v1/route` and the router agent. Advisory mode (the default): an escalated request is
answered at once with the router's pick, and the agent's advice (or why there is none) is
added to the stored decision when it comes. Override mode, with a slow agent: no request waits
past the escalation deadline, every one gets the router's own pick, and each fallback is
counted and recorded."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx

from agents.escalation import ADVICE_MARK, FALLBACK_MARK
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


def _stored_reasons(db: str) -> dict[str, str]:
    from context_api.store import Store

    with Store(db) as store:
        return {
            r["decision_id"]: r["reason"]
            for r in store.db.query("SELECT decision_id, reason FROM decisions")
        }


def _service(tmp_path, monkeypatch, model: Any, **settings: Any) -> tuple[Service, Any]:
    """A service whose router agent runs on `model` and where every `review` request escalates."""
    monkeypatch.setattr(Service, "_llm", lambda self: model)
    config = ServeConfig(
        db=str(tmp_path / "serve.db"),
        tick_s=3600.0,
        run_monitors=False,
        escalation_deadline_s=0.2,
        **settings,
    )
    svc = Service(config)
    app = create_app(config, service=svc)
    svc.open()
    assert svc.adapter is not None
    svc.adapter.router.escalation_budget = None
    return svc, app


@contextlib.asynccontextmanager
async def _serving(svc: Service, app: Any, agent: SlowReasoner) -> AsyncIterator[Any]:
    """The started service's HTTP client; on the way out the agent is released and the
    service stopped (its writers flushed)."""
    await svc.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as c:
            yield c
    finally:
        agent.gate.set()
        await svc.stop()


async def _review_requests(c: Any, n: int) -> list[Any]:
    return await asyncio.gather(*(c.post("/v1/route", json={"tier": "review"}) for _ in range(n)))


def test_override_mode_takes_the_routers_pick_at_once_while_the_agent_is_busy(
    tmp_path, monkeypatch
):
    slow = SlowReasoner()
    svc, app = _service(tmp_path, monkeypatch, slow, escalation_mode="override")
    config = svc.config
    assert svc.adapter is not None
    picks: dict[str, str] = {}
    route = svc.adapter.route

    def remember_the_pick(req: Any) -> Any:
        decision, request, wanted = route(req)
        picks[decision.decision_id] = decision.backend
        return decision, request, wanted

    monkeypatch.setattr(svc.adapter, "route", remember_the_pick)

    async def drive() -> tuple[list[dict[str, Any]], str]:
        async with _serving(svc, app, slow) as c:
            answers = await _review_requests(c, REQUESTS)
            metrics = (await c.get("/metrics")).text
        return [a.json() for a in answers if a.status_code == 200], metrics

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
    stored = _stored_reasons(config.db)
    for decision_id, why in reasons.items():
        assert stored[decision_id].endswith(f"{FALLBACK_MARK}{why}")


def test_advisory_mode_answers_before_the_agent_and_records_its_advice_later(tmp_path, monkeypatch):
    """The agent is held until every answer is in: the requests cannot have waited for it.
    Once it answers, the stored decision (and GET /v1/decisions/{id}) carries its advice."""
    slow = SlowReasoner()
    svc, app = _service(tmp_path, monkeypatch, slow)
    assert svc.config.escalation_mode == "advisory"  # the default
    assert svc.adapter is not None and svc.adapter.escalator is not None
    svc.adapter.escalator.deadline_s = 30.0  # long enough that only the gate decides

    async def drive() -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any], str]:
        async with _serving(svc, app, slow) as c:
            answers = await _review_requests(c, 5)
            first = answers[0].json()["decision_id"]
            assert svc.writer is not None
            await asyncio.to_thread(svc.writer.flush_through, svc.writer.submitted)
            before = (await c.get(f"/v1/decisions/{first}")).json()
            slow.gate.set()  # now the agent may answer
            for _ in range(200):
                await asyncio.sleep(0.02)
                await asyncio.to_thread(svc.writer.flush_through, svc.writer.submitted)
                after = (await c.get(f"/v1/decisions/{first}")).json()
                if ADVICE_MARK in after["reason"] and len(svc.escalations) == 5:
                    break  # the first's advice is stored and all five are settled and counted
            metrics = (await c.get("/metrics")).text
        return [a.json() for a in answers], before, after, metrics

    answers, before, after, metrics = asyncio.run(drive())
    stats = svc.adapter.escalator.stats
    assert stats.escalated == 5 and stats.agent_runs + stats.cache_hits == 5
    for a in answers:
        assert a["escalated"] is True
        assert ADVICE_MARK not in a["reason"] and FALLBACK_MARK not in a["reason"]
    # Stored before the agent answered: the policy's reason; afterwards, with the advice.
    assert before["reason"] == answers[0]["reason"]
    assert after["reason"].startswith(answers[0]["reason"] + ADVICE_MARK), after["reason"]
    assert after["backend"] == answers[0]["backend"]  # advisory: the pick stands
    stored = _stored_reasons(str(tmp_path / "serve.db"))
    for a in answers:
        assert ADVICE_MARK in stored[a["decision_id"]], stored[a["decision_id"]]
    assert 'arcpoint_escalations_total{result="advised"} 5.0' in metrics


def test_advisory_fallbacks_are_counted_and_recorded(tmp_path, monkeypatch):
    """An agent that misses its deadline: the requests were answered at once all the same, and
    the timeout (and the busy agent) are what the stored decisions and the metrics say."""
    slow = SlowReasoner()
    svc, app = _service(tmp_path, monkeypatch, slow)

    async def drive() -> tuple[list[dict[str, Any]], str]:
        async with _serving(svc, app, slow) as c:
            answers = await _review_requests(c, 20)
            assert svc.advice is not None
            for _ in range(200):  # the deadline (0.2 s) passes, the queue settles
                await asyncio.sleep(0.02)
                if svc.advice.pending == 0 and len(svc.escalations) == 20:
                    break
            metrics = (await c.get("/metrics")).text
        return [a.json() for a in answers], metrics

    answers, metrics = asyncio.run(drive())
    assert all(a["escalated"] is True for a in answers)
    stored = _stored_reasons(str(tmp_path / "serve.db"))
    reasons = {a["decision_id"]: stored[a["decision_id"]] for a in answers}
    whys = [r.split(FALLBACK_MARK, 1)[1] for r in reasons.values() if FALLBACK_MARK in r]
    assert len(whys) == 20, reasons  # every escalation settled, as a fallback
    # The first waited its deadline; the rest reused that failure or found the agent still busy.
    assert "timeout" in whys and set(whys) <= {"timeout", "agent_busy"}
    for why in set(whys):
        n = whys.count(why)
        assert f'arcpoint_escalation_fallbacks_total{{reason="{why}"}} {float(n)}' in metrics
    assert 'arcpoint_escalations_total{result="fallback"} 20.0' in metrics
