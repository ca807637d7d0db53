"""arcpoint serve in process: endpoint contracts, errors by field, tokens, limits, metrics."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from arcpoint.serve.app import create_app
from arcpoint.serve.config import ServeConfig, UnsafeBindError, check_bind, is_loopback
from context_api.store import Store

TOKEN = "s3cret-token-for-tests-0123456789"


def _config(tmp_path, **kw) -> ServeConfig:
    base = {
        "db": str(tmp_path / "serve.db"),
        "tick_s": 3600.0,  # ticks are driven by the tests
        "run_monitors": False,
    }
    base.update(kw)
    return ServeConfig(**base)


@pytest.fixture
def client(tmp_path):
    app = create_app(_config(tmp_path))
    with TestClient(app) as c:
        yield c


def _route(c: TestClient, **body) -> dict:
    r = c.post("/v1/route", json={"tier": "standard", **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_route_answers_with_a_decision_of_the_fleet(client):
    d = _route(client, tier="premium", input_tokens=900, metadata={"team": "search"})
    assert d["backend"] in {"b0", "b1", "b2", "b3"}
    assert d["sla_ms"] == 500.0  # the premium tier's TTFT SLO (tools.sim.workload.TIERS)
    assert d["recorded"] is True and d["escalated"] is False
    assert set(d) >= {"decision_id", "reason", "ambiguous", "p_meet_slo"}
    assert 0.0 < d["p_meet_slo"] < 1.0  # the per-request router's own probability
    d2 = _route(client, sla_ms=120)
    assert d2["sla_ms"] == 120 and d2["decision_id"] != d["decision_id"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tier": "gold"}, "body.tier"),
        ({"tier": "standard", "sla_ms": -5}, "body.sla_ms"),
        ({"tier": "standard", "input_tokens": "many"}, "body.input_tokens"),
        ({"tier": "standard", "colour": "red"}, "body.colour"),
        ({"metadata": {"k": "v" * 5000}}, "body.metadata"),
    ],
)
def test_bad_route_input_names_the_field(client, body, field):
    r = client.post("/v1/route", json=body)
    assert r.status_code == 422
    data = r.json()
    assert data["error"] == "invalid_request"
    assert any(d["field"] == field for d in data["detail"]), data
    assert "Traceback" not in r.text


def test_malformed_json_is_a_422_not_a_500(client):
    r = client.post("/v1/route", content=b'{"tier": ', headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_request"


def test_outcomes_are_judged_row_by_row_and_durable_when_acknowledged(client, tmp_path):
    a = _route(client)["decision_id"]
    b = _route(client)["decision_id"]
    rows = [
        {"decision_id": a, "e2e_ms": 180.0, "ttft_ms": 40.0, "status": "ok"},
        {"decision_id": a, "e2e_ms": 180.0, "ttft_ms": 40.0, "status": "ok"},  # a retry
        {"decision_id": "no-such-decision", "e2e_ms": 10.0},
        {"decision_id": b, "e2e_ms": 50.0, "ttft_ms": 60.0},  # TTFT after the end
        {"decision_id": b, "e2e_ms": 50.0, "status": "lost"},
        "not a row",
        {"decision_id": b, "e2e_ms": 30000.0, "status": "timeout"},
    ]
    r = client.post("/v1/outcomes", json={"outcomes": rows})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["accepted"] == 2 and out["duplicate"] == 1
    reasons = {x["index"]: x["reason"] for x in out["rejected"]}
    assert reasons == {2: "unknown_decision", 3: "bad_ttft", 4: "malformed", 5: "malformed"}
    # Acknowledged means committed: a second connection sees it, with TTFT and status.
    with Store(tmp_path / "serve.db") as store:
        assert store.get_decision(a)["actual_latency_ms"] == 180.0
        detail = list(store.db.query("SELECT * FROM outcome_details ORDER BY status"))
        assert [(d["status"], d["ttft_ms"]) for d in detail] == [("ok", 40.0), ("timeout", None)]
        # Rejections are stored with their reason, none lost silently.
        stored = {r.reason for r in store.list_outcome_rejections()}
        assert {"unknown_decision", "bad_ttft", "malformed"} <= stored
    broken = client.post(
        "/v1/outcomes", content=b'{"outcomes": [', headers={"content-type": "application/json"}
    )
    assert broken.status_code == 422 and broken.json()["detail"][0]["field"] == "body"
    empty = client.post("/v1/outcomes", json={"outcomes": []})
    assert empty.status_code == 422 and empty.json()["detail"][0]["field"] == "body.outcomes"
    shown = client.get(f"/v1/decisions/{a}").json()
    assert shown["outcome"]["ttft_ms"] == 40.0 and shown["outcome"]["status"] == "ok"
    assert client.get("/v1/decisions/nope").status_code == 404


def test_outcome_batch_size_is_bounded(tmp_path):
    app = create_app(_config(tmp_path, max_outcome_batch=3))
    with TestClient(app) as c:
        r = c.post("/v1/outcomes", json={"outcomes": [{}] * 4})
        assert r.status_code == 413
        assert r.json()["detail"][0]["field"] == "body.outcomes"


def test_body_size_limit_refuses_before_parsing(tmp_path):
    app = create_app(_config(tmp_path, max_body_bytes=2048))
    with TestClient(app) as c:
        r = c.post("/v1/route", json={"tier": "standard", "metadata": {"x": "y" * 3000}})
        assert r.status_code == 413
        assert "2048" in r.json()["detail"][0]["reason"]
        assert c.post("/v1/route", json={"tier": "standard"}).status_code == 200
        # A chunked body (no Content-Length) is cut off once it passes the limit.
        chunks = (b'{"tier": "standard", "metadata": {"x": "' + b"y" * 3000 + b'"}}',)
        r = c.post("/v1/route", content=iter(chunks), headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["detail"][0]["field"] == "body"


def test_token_guards_state_changing_endpoints_and_never_leaks(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    app = create_app(_config(tmp_path, token=SecretStr(TOKEN)))
    with TestClient(app) as c:
        assert c.post("/v1/route", json={}).status_code == 401
        wrong = c.post("/v1/route", json={}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"] == "Bearer"
        basic = c.post("/v1/route", json={}, headers={"Authorization": f"Basic {TOKEN}"})
        assert basic.status_code == 401
        ok = c.post("/v1/route", json={}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        for path in ("/v1/outcomes", "/v1/telemetry", "/v1/ask", "/v1/approvals/x"):
            assert c.post(path, json={}).status_code == 401, path
        assert c.get("/v1/fleet").status_code == 200  # reads stay open
        metrics = c.get("/metrics").text
        assert "arcpoint_auth_failures_total 7.0" in metrics
        assert TOKEN not in metrics
    assert TOKEN not in caplog.text


def test_refuses_a_public_bind_without_a_token():
    with pytest.raises(UnsafeBindError, match="ARCPOINT_TOKEN"):
        check_bind(ServeConfig(host="0.0.0.0"))
    check_bind(ServeConfig(host="0.0.0.0", token=SecretStr(TOKEN)))
    check_bind(ServeConfig(host="127.0.0.1"))
    assert is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.0.2")
    assert not is_loopback("10.0.0.1") and not is_loopback("example.org")


def test_ask_is_rate_limited_per_client(tmp_path):
    app = create_app(_config(tmp_path, ask_burst=2, ask_rate_per_min=1))
    with TestClient(app) as c:
        codes = [c.post("/v1/ask", json={"question": "state of the fleet?"}) for _ in range(3)]
        assert [r.status_code for r in codes[:2]] == [200, 200]
        assert "no telemetry" in codes[0].json()["answer"]
        assert codes[2].status_code == 429
        assert int(codes[2].headers["retry-after"]) >= 1
        assert c.post("/v1/ask", json={"question": ""}).status_code == 422


def test_telemetry_and_outcomes_become_ticks_the_router_and_store_see(client, tmp_path):
    page = {
        "backend": "b2",
        "num_requests_running": 4,
        "num_requests_waiting": 1,
        "kv_cache_usage_perc": 0.5,
        "e2e_request_latency_seconds": {
            "buckets": [[0.1, 0], [0.2, 10], ["+Inf", 10]],
            "count": 10,
            "sum": 1.5,
        },
    }
    r = client.post("/v1/telemetry", json={"scrapes": [page, {**page, "backend": "zz"}]})
    assert r.json()["accepted"] == 1
    assert r.json()["rejected"][0]["reason"] == "unknown_backend"
    bad = client.post("/v1/telemetry", json={"scrapes": [{**page, "kv_cache_usage_perc": 3}]})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["field"] == "body.scrapes.0.kv_cache_usage_perc"
    routed = [_route(client) for _ in range(8)]
    ids = [d["decision_id"] for d in routed if d["backend"] != "b2"]  # b2 speaks by its scrape
    client.post(
        "/v1/outcomes",
        json={"outcomes": [{"decision_id": d, "e2e_ms": 100.0 + i} for i, d in enumerate(ids)]},
    )
    unreported = sum(d["backend"] == "b2" for d in routed)
    svc = client.app.state.service
    points = client.portal.call(svc.tick)
    by = {p.backend: p for p in points}
    assert by["b2"].p95_ms == pytest.approx(195.0)  # from the scrape's histogram
    assert by["b2"].in_flight == 5.0  # running + waiting
    others = [p for b, p in by.items() if b != "b2"]
    assert others and all(100.0 <= p.p50_ms <= 108.0 for p in others)
    with Store(tmp_path / "serve.db") as store:
        assert len(store.list_telemetry()) == len(points)
    fleet = client.get("/v1/fleet").json()
    assert {b["name"] for b in fleet["backends"]} == {"b0", "b1", "b2", "b3"}
    assert sum(b["planned_share"] for b in fleet["backends"]) == pytest.approx(1.0, abs=1e-3)
    assert sum(b["in_flight"] for b in fleet["backends"]) == unreported
    hist = client.get("/v1/fleet/history").json()
    assert len(hist["ticks"]) == 1


def test_metrics_page_counts_what_happened(client):
    _route(client)
    client.post("/v1/route", json={"tier": "gold"})
    text = client.get("/metrics").text
    assert "arcpoint_route_latency_seconds_count 1.0" in text
    assert 'arcpoint_decisions_total{backend="' in text
    assert 'arcpoint_http_requests_total{code="422",method="POST",route="/v1/route"} 1.0' in text
    assert 'arcpoint_queue_depth{writer="decisions"}' in text
    assert "arcpoint_serving_model_info" in text


def test_health_readiness_and_openapi(client):
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/readyz").json() == {"ready": True, "problems": []}
    schema = client.get("/openapi.json").json()
    assert {"/v1/route", "/v1/outcomes", "/v1/telemetry", "/v1/ask"} <= set(schema["paths"])
    body = schema["paths"]["/v1/outcomes"]["post"]["requestBody"]["content"]["application/json"]
    assert "outcomes" in body["schema"]["properties"]
    assert client.get("/docs").status_code == 200


def test_approvals_list_and_answer_through_the_monitor_graph(tmp_path):
    from tests.serve_world import waiting_world

    db, approval_id, champion = waiting_world(tmp_path)
    app = create_app(_config(tmp_path, db=str(db)))
    with TestClient(app) as c:
        pending = c.get("/v1/approvals").json()["approvals"]
        assert [a["approval_id"] for a in pending] == [approval_id]
        assert pending[0]["action"] == "promote"
        assert c.get("/v1/fleet").json()["model_version"] == champion
        no_reason = c.post(f"/v1/approvals/{approval_id}", json={"decision": "reject"})
        assert no_reason.status_code == 422
        assert no_reason.json()["detail"][0]["field"] == "body.reason"
        unknown = c.post("/v1/approvals/apr-nope", json={"decision": "approve"})
        assert unknown.status_code == 404
        ok = c.post(
            f"/v1/approvals/{approval_id}",
            json={"decision": "approve", "reason": "figures hold", "by": "alice"},
        )
        assert ok.status_code == 200, ok.text
        promoted = ok.json()["approval"]["version_id"]
        assert ok.json()["approval"]["status"] == "applied"
        assert ok.json()["serving"] == promoted != champion
        assert c.get("/v1/approvals").json()["approvals"] == []
        again = c.post(f"/v1/approvals/{approval_id}", json={"decision": "approve"})
        assert again.status_code == 409 and "already answered" in again.text
    with Store(db) as store:
        assert store.active_model_version("forecaster").version_id == promoted


def test_a_per_request_policy_is_served_through_the_same_endpoints(tmp_path):
    # peak_ewma (Finagle) learns from every completion: a backend whose requests come back slow
    # is avoided, which needs outcomes to reach the policy per request.
    app = create_app(_config(tmp_path, policy="peak_ewma"))
    with TestClient(app) as c:
        first = [_route(c) for _ in range(40)]
        assert {d["reason"] for d in first} == {"peak_ewma"}
        rows = [
            {"decision_id": d["decision_id"], "e2e_ms": 5000.0 if d["backend"] == "b0" else 40.0}
            for d in first
        ]
        assert c.post("/v1/outcomes", json={"outcomes": rows}).json()["accepted"] == 40
        later = [_route(c)["backend"] for _ in range(40)]
        assert later.count("b0") <= 2, later
        fleet = c.get("/v1/fleet").json()
        assert fleet["router"]["routed"] == 80 and fleet["router"]["escalated"] == 0


def test_an_unknown_policy_is_a_clear_error(tmp_path):
    from arcpoint.cli import main

    code = main(["serve", "--db", str(tmp_path / "x.db"), "--policy", "fastest"])
    assert code == 2


def test_the_scraper_reads_each_backends_vllm_metrics_page(tmp_path):

    import httpx
    import respx

    from arcpoint.serve.scraper import scrape_once

    page = (
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{model_name="m"} 7\n'
        "# TYPE vllm:num_requests_waiting gauge\n"
        'vllm:num_requests_waiting{model_name="m"} 3\n'
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        'vllm:kv_cache_usage_perc{model_name="m"} 0.62\n'
    )
    app = create_app(_config(tmp_path))
    with TestClient(app) as c:
        svc = app.state.service
        targets = {"b0": "http://vllm-0.test/metrics", "b1": "http://vllm-1.test/metrics"}

        async def run() -> int:
            with respx.mock:
                respx.get(targets["b0"]).mock(return_value=httpx.Response(200, text=page))
                respx.get(targets["b1"]).mock(return_value=httpx.Response(503))
                async with httpx.AsyncClient() as client:
                    return await scrape_once(svc, client, targets)

        assert c.portal.call(run) == 1
        b0 = svc.live.last_scrape(0)
        assert (b0.num_requests_running, b0.num_requests_waiting) == (7, 3)
        assert b0.kv_cache_usage_perc == 0.62
        assert svc.live.last_scrape(1) is None
        text = c.get("/metrics").text
        assert 'arcpoint_telemetry_scrapes_total{result="error",source="scrape"} 1.0' in text
        assert c.get("/v1/fleet").json()["backends"][0]["kv_cache_usage_perc"] == 0.62


def test_the_scheduled_monitors_run_and_report(tmp_path):
    from arcpoint.serve.monitors import run_all

    app = create_app(_config(tmp_path))
    with TestClient(app) as c:
        svc = app.state.service
        c.portal.call(svc.on_agent_thread, run_all, svc, svc.monitor_state)
        runs = {m["name"]: m for m in c.get("/v1/monitors").json()["monitors"]}
        assert set(runs) == {"expire_outcomes", "monitor_pass", "sync_forecaster"}
        assert all(m["result"] == "ok" for m in runs.values()), runs
        assert runs["monitor_pass"]["detail"].startswith("skipped: no forecaster")
        assert 'arcpoint_monitor_runs_total{monitor="monitor_pass",result="ok"} 1.0' in (
            c.get("/metrics").text
        )


@pytest.mark.parametrize("policy", ["predictive", "peak_ewma"])
def test_the_answers_p_meet_slo_is_the_stored_decisions(tmp_path, policy):
    # The answer reads the chosen backend's probability from what the pick computed; the stored
    # decision's candidates are built later on the writer's thread. Both must say the same.
    from context_api.agent_tools.base import p_over

    app = create_app(_config(tmp_path, policy=policy))
    with TestClient(app) as c:
        c.app.state.service.adapter.tick([], 0, {})
        answers = [
            _route(c, tier=("premium", "standard", "batch")[i % 3], input_tokens=300 * i)
            for i in range(24)
        ]
        app.state.service.writer.flush_through(app.state.service.writer.submitted)
        for d in answers:
            stored = c.get(f"/v1/decisions/{d['decision_id']}").json()
            chosen = next(x for x in stored["candidates"] if x["backend"] == d["backend"])
            expected = chosen["p_meet_slo"]
            if expected is None and chosen["forecast_ms"] is not None:
                over = p_over(chosen["forecast_ms"], chosen["lo_ms"], chosen["hi_ms"], d["sla_ms"])
                expected = None if over is None else 1.0 - over
            if expected is None:
                assert d["p_meet_slo"] is None, (d, chosen)
            else:
                assert d["p_meet_slo"] == pytest.approx(expected, abs=1e-6), (d, chosen)
    if policy == "predictive":
        assert all(0.0 < d["p_meet_slo"] < 1.0 for d in answers if not d["escalated"])
