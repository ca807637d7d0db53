"""The webhook channel over httpx, mocked with respx: success, 5xx, timeouts, silence, secrets."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from context_api.alerting import AlertService, WebhookChannel, recent_alerts
from context_api.store import Store
from tools.alerts import RetryPolicy

URL = "https://hooks.slack.com/services/T0001/B0002/S3CR3TT0K3N"
SECRET = "S3CR3TT0K3N"
T0 = 1_700_000_000.0
RETRY = RetryPolicy(max_attempts=4, base_s=10.0, cap_s=60.0, timeout_s=2.0)


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "arcpoint.db")
    yield s
    s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def svc(store: Store, clock: Clock) -> Iterator[AlertService]:
    service = AlertService.with_webhook(store, URL, retry=RETRY, clock=clock, rng=random.Random(3))
    yield service
    service.close()


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


def emit(svc: AlertService, subject: str = "b1", severity: str = "high") -> str:
    return svc.emit(
        kind="anomaly",
        subject=subject,
        severity=severity,
        evidence={"score": 0.97, "p95_ms": 812.0},
        recommended_action="drain the backend and page its owner",
    ).alert_id


def delivery(store: Store, alert_id: str) -> Any:
    alert = store.get_alert(alert_id)
    assert alert is not None
    [d] = alert.deliveries
    return d


def run_until_settled(svc: AlertService, clock: Clock, store: Store, rounds: int = 20) -> None:
    """Call deliver_due at each next_attempt_at until nothing is pending (no sleeping)."""
    for _ in range(rounds):
        svc.deliver_due()
        due = [
            d.next_attempt_at
            for a in store.list_alerts(limit=None)
            for d in a.deliveries
            if d.state in ("pending", "failed")
        ]
        if not due:
            return
        clock.t = max(clock.t, min(due))


def test_success_posts_slack_json(mock, svc, store, clock) -> None:
    route = mock.post(URL).mock(return_value=httpx.Response(200, text="ok"))
    alert_id = emit(svc)
    report = svc.deliver_due()
    assert report.delivered == 1 and route.call_count == 1
    request = route.calls.last.request
    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.content)
    assert set(body) == {"text", "blocks"} and "b1" in body["text"]
    assert any(b["type"] == "header" for b in body["blocks"])
    assert alert_id in request.content.decode()
    d = delivery(store, alert_id)
    assert (d.state, d.attempts, d.last_error, d.delivered_at) == ("delivered", 1, None, T0)


def test_each_request_carries_the_short_timeout(mock, svc) -> None:
    route = mock.post(URL).mock(return_value=httpx.Response(200))
    emit(svc)
    svc.deliver_due()
    timeout = route.calls.last.request.extensions["timeout"]
    assert timeout == {"connect": 2.0, "read": 2.0, "write": 2.0, "pool": 2.0}


def test_500s_then_success(mock, svc, store, clock) -> None:
    route = mock.post(URL).mock(
        side_effect=[httpx.Response(500), httpx.Response(503), httpx.Response(200)]
    )
    alert_id = emit(svc)
    svc.deliver_due()
    d = delivery(store, alert_id)
    assert (d.state, d.attempts, d.last_error) == ("failed", 1, "HTTP 500")
    assert T0 + 5 <= d.next_attempt_at <= T0 + 10
    clock.t = d.next_attempt_at - 0.001
    assert svc.deliver_due().attempted == 0  # backoff respected
    run_until_settled(svc, clock, store)
    d = delivery(store, alert_id)
    assert (d.state, d.attempts) == ("delivered", 3) and route.call_count == 3
    assert d.delivered_at == clock.t


def test_persistent_500s_end_dead_after_max_attempts(mock, svc, store, clock) -> None:
    route = mock.post(URL).mock(return_value=httpx.Response(500, text="internal_error"))
    alert_id = emit(svc)
    run_until_settled(svc, clock, store)
    d = delivery(store, alert_id)
    assert (d.state, d.attempts) == ("dead", RETRY.max_attempts)
    assert d.last_error == "HTTP 500: internal_error"
    assert route.call_count == RETRY.max_attempts
    # Backoff grew: 4 attempts spaced by >= 5, 10, 20 s.
    assert clock.t - T0 >= 5 + 10 + 20
    # Dead is still stored and listed.
    [view] = recent_alerts(store)
    assert view.alert.alert_id == alert_id and view.delivery_state == "dead"


def test_client_errors_are_dead_at_once(mock, svc, store) -> None:
    route = mock.post(URL).mock(return_value=httpx.Response(404, text="no_service"))
    alert_id = emit(svc)
    assert svc.deliver_due().dead == 1
    d = delivery(store, alert_id)
    assert d.state == "dead" and d.last_error == "HTTP 404: no_service (not retried)"
    assert route.call_count == 1


def test_429_honours_retry_after(mock, svc, store) -> None:
    mock.post(URL).mock(return_value=httpx.Response(429, headers={"Retry-After": "45"}))
    alert_id = emit(svc)
    svc.deliver_due()
    d = delivery(store, alert_id)
    assert d.state == "failed" and d.next_attempt_at >= T0 + 45


@pytest.mark.parametrize(
    "error",
    [
        httpx.ReadTimeout("timed out"),
        httpx.ConnectTimeout("timed out"),
        httpx.PoolTimeout("timed out"),
    ],
)
def test_timeouts_are_retried(mock, svc, store, clock, error) -> None:
    route = mock.post(URL).mock(side_effect=[error, httpx.Response(200)])
    alert_id = emit(svc)
    svc.deliver_due()
    d = delivery(store, alert_id)
    assert d.state == "failed" and d.last_error == f"no answer within 2 s ({type(error).__name__})"
    run_until_settled(svc, clock, store)
    assert delivery(store, alert_id).state == "delivered" and route.call_count == 2


def test_a_webhook_that_never_answers(mock, svc, store, clock) -> None:
    """Every attempt times out (httpx raises ReadTimeout after the 2 s read timeout)."""
    route = mock.post(URL).mock(side_effect=httpx.ReadTimeout("timed out"))
    alert_id = emit(svc)
    run_until_settled(svc, clock, store)
    d = delivery(store, alert_id)
    assert d.state == "dead" and d.attempts == RETRY.max_attempts
    assert route.call_count == RETRY.max_attempts
    assert route.calls.last.request.extensions["timeout"]["read"] == 2.0


def test_emitting_while_the_webhook_is_down_returns_at_once_and_loses_nothing(
    mock, svc, store, clock
) -> None:
    route = mock.post(URL).mock(side_effect=httpx.ReadTimeout("timed out"))
    ids = [emit(svc, subject=f"b{i}") for i in range(40)]
    # emit never touches the network: nothing can block the loop there.
    assert route.call_count == 0
    # A deliver_due call against a dead endpoint costs one attempt; the rest wait their turn.
    report = svc.deliver_due()
    assert (report.attempted, report.deferred) == (1, 39) and route.call_count == 1
    # Outage over.
    route.mock(side_effect=None, return_value=httpx.Response(200))
    clock.t += 3600
    run_until_settled(svc, clock, store)
    states = {a.alert_id: a.deliveries[0].state for a in store.list_alerts(limit=None)}
    assert set(states) == set(ids)
    assert set(states.values()) == {"delivered"}
    assert route.call_count == 1 + 40


def test_the_url_secret_never_appears_in_logs_errors_or_reprs(
    mock, svc, store, clock, caplog: pytest.LogCaptureFixture
) -> None:
    mock.post(URL).mock(
        side_effect=[
            httpx.ConnectError(f"connection refused: {URL}"),
            httpx.Response(500, text=f"failed for {URL}"),
            httpx.ReadTimeout(f"timed out on {URL}"),
            httpx.Response(400, text="invalid_payload"),
        ]
    )
    with caplog.at_level(logging.DEBUG):
        alert_id = emit(svc)
        reports = []
        for _ in range(4):
            reports.append(svc.deliver_due())
            d = delivery(store, alert_id)
            if d.next_attempt_at:
                clock.t = d.next_attempt_at
    assert delivery(store, alert_id).state == "dead"
    assert "hooks.slack.com" in caplog.text  # the host is named
    everything = "\n".join(
        [
            caplog.text,
            *(r.getMessage() for r in caplog.records),
            repr(svc._channels),
            *(c.describe() for c in svc._channels.values()),
            *(e for r in reports for e in r.errors),
            json.dumps([a.model_dump() for a in store.list_alerts(limit=None)]),
        ]
    )
    assert SECRET not in everything and "/services/" not in everything


def test_bad_webhook_urls_are_refused_without_echoing_them() -> None:
    with pytest.raises(ValueError) as info:
        WebhookChannel("ftp://example.com/secret-path")
    assert "secret-path" not in str(info.value)
    with pytest.raises(ValueError):
        WebhookChannel(URL, timeout_s=0)


def test_no_url_means_no_webhook(store, clock) -> None:
    service = AlertService.with_webhook(store, None, clock=clock)
    assert service.channels == ()
    alert_id = emit(service)
    assert store.get_alert(alert_id).deliveries == []  # type: ignore[union-attr]


def test_a_real_silent_endpoint_is_cut_off_by_the_timeout(store, clock) -> None:
    """Not a mock: httpx's own transport over a local Unix socket whose server never answers.

    The kernel accepts the connection (listen backlog), the request is written, and no response
    ever comes: only the read timeout ends the attempt. No network is involved.
    """
    workdir = tempfile.mkdtemp(prefix="ap", dir="/tmp")
    path = os.path.join(workdir, "hook.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(path)
        server.listen(8)
        client = httpx.Client(transport=httpx.HTTPTransport(uds=path))
        channel = WebhookChannel("http://hooks.internal/h/S3CR3T", timeout_s=0.05, client=client)
        service = AlertService(
            store, webhooks=[channel], retry=RETRY, clock=clock, rng=random.Random(0)
        )
        alert_id = emit(service)
        report = service.deliver_due()
        assert (report.attempted, report.retrying) == (1, 1)
        d = delivery(store, alert_id)
        assert d.state == "failed" and d.last_error == "no answer within 0.05 s (ReadTimeout)"
        client.close()
    finally:
        server.close()
        shutil.rmtree(workdir, ignore_errors=True)
