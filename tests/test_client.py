"""arcpoint.client.Client at the HTTP layer (respx): bodies, auth header, errors, retries."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from arcpoint.client import ArcpointError, ArcpointTimeout, Client

BASE = "http://router.test:8787"
DECISION = {
    "decision_id": "d-1",
    "backend": "b2",
    "reason": "cheapest_within_sla",
    "ambiguous": False,
    "p_meet_slo": 0.93,
    "escalated": False,
    "recorded": True,
    "sla_ms": 250.0,
    "model_version": "fc-1",
}


@respx.mock
def test_route_sends_the_request_and_the_token():
    call = respx.post(f"{BASE}/v1/route").mock(return_value=httpx.Response(200, json=DECISION))
    with Client(BASE, token="tok-123") as c:
        d = c.route(tier="premium", input_tokens=800, metadata={"team": "a"})
    assert d.backend == "b2" and d.p_meet_slo == 0.93
    req = call.calls.last.request
    assert req.headers["authorization"] == "Bearer tok-123"
    assert json.loads(req.content) == {
        "tier": "premium",
        "input_tokens": 800,
        "metadata": {"team": "a"},
    }


@respx.mock
def test_errors_carry_the_fields_and_reasons():
    respx.post(f"{BASE}/v1/route").mock(
        return_value=httpx.Response(
            422,
            json={"error": "invalid_request", "detail": [{"field": "body.tier", "reason": "bad"}]},
        )
    )
    with Client(BASE) as c, pytest.raises(ArcpointError) as info:
        c.route(tier="gold")
    assert info.value.status == 422
    assert info.value.detail == [{"field": "body.tier", "reason": "bad"}]
    assert "body.tier: bad" in str(info.value)


@respx.mock
def test_outcomes_are_retried_on_5xx_and_connection_errors():
    route = respx.post(f"{BASE}/v1/outcomes").mock(
        side_effect=[
            httpx.ConnectError("refused"),
            httpx.Response(503, json={"error": "unavailable", "detail": []}),
            httpx.Response(200, json={"accepted": 1, "duplicate": 0, "rejected": []}),
        ]
    )
    with Client(BASE, retries=3) as c:
        rep = c.record_outcomes([{"decision_id": "d-1", "e2e_ms": 90.0, "status": "ok"}])
    assert rep.accepted == 1 and route.call_count == 3


def test_outcomes_are_not_retried_on_4xx():
    with respx.mock:
        bad = respx.post(f"{BASE}/v1/outcomes").mock(
            return_value=httpx.Response(401, json={"error": "unauthorized", "detail": []})
        )
        with Client(BASE, retries=3) as c, pytest.raises(ArcpointError):
            c.record_outcomes([{"decision_id": "d-1", "e2e_ms": 90.0}])
    assert bad.call_count == 1


@respx.mock
def test_route_is_never_retried_and_times_out_with_a_clear_error():
    route = respx.post(f"{BASE}/v1/route").mock(side_effect=httpx.ReadTimeout("slow"))
    with Client(BASE, retries=3) as c, pytest.raises(ArcpointTimeout) as info:
        c.route()
    assert route.call_count == 1
    assert route.calls.last.request.extensions["timeout"]["read"] == 2.0
    assert info.value.status == 0 and info.value.error == "timeout"
    assert str(info.value) == f"HTTP 0 timeout: -: POST {BASE}/v1/route: no answer within 2 s"


@respx.mock
def test_every_call_has_a_finite_timeout():
    fleet = respx.get(f"{BASE}/v1/fleet").mock(side_effect=httpx.ReadTimeout("slow"))
    with Client(BASE, retries=1) as c, pytest.raises(ArcpointTimeout):
        c.fleet()
    assert fleet.call_count == 2  # a read is retried, then gives up with the error
    assert fleet.calls.last.request.extensions["timeout"]["read"] == 5.0
    with pytest.raises(ValueError, match="timeout_s"):
        Client(BASE, timeout_s=float("inf"))
    with pytest.raises(ValueError, match="route_timeout_s"):
        Client(BASE, route_timeout_s=0)


@respx.mock
def test_ask_returns_the_answer_and_its_trace():
    respx.post(f"{BASE}/v1/ask").mock(
        return_value=httpx.Response(
            200,
            json={
                "answer": "b2 is healthy",
                "trace_id": "t-9",
                "llm": "offline",
                "agent": "operator",
                "tools_called": ["fleet_state"],
                "thread_id": "th-1",
            },
        )
    )
    with Client(BASE) as c:
        a = c.ask("how is b2?", thread_id="th-1")
    assert (a.answer, a.trace_id, a.tools_called) == ("b2 is healthy", "t-9", ["fleet_state"])
