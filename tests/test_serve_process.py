"""A real `arcpoint serve` process: kill -9 loses no acknowledged outcome; the client works
against it, and SIGTERM drains and flushes."""

from __future__ import annotations

import signal
import threading

import httpx
import pytest

from arcpoint.client import ArcpointError, Client
from arcpoint.serve.process import ServerProcess
from context_api.store import Store

TOKEN = "process-test-token-0123456789abcdef"


def test_kill_9_loses_no_acknowledged_outcome(tmp_path):
    db = tmp_path / "kill.db"
    acked: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    with ServerProcess(db, "--no-monitors") as server:
        client = Client(server.url, retries=0)

        def report() -> None:
            # Route and report in batches until the server dies under us; remember what was
            # acknowledged (a 200 from /v1/outcomes) and nothing else.
            try:
                while not stop.is_set():
                    ids = [client.route().decision_id for _ in range(20)]
                    rows = [{"decision_id": d, "e2e_ms": 50.0, "status": "ok"} for d in ids]
                    report = client.record_outcomes(rows)
                    assert report.accepted == len(ids), report
                    acked.extend(ids)
            except (httpx.TransportError, ArcpointError) as exc:
                errors.append(exc)

        worker = threading.Thread(target=report)
        worker.start()
        while len(acked) < 200 and worker.is_alive():
            threading.Event().wait(0.01)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        stop.set()
        worker.join(10)
        client.close()
    assert len(acked) >= 200, errors
    assert errors, "the worker should have seen the server die mid-stream"
    with Store(db) as store:
        found = {r["decision_id"] for r in store.db.query("SELECT decision_id FROM outcomes")}
    missing = set(acked) - found
    assert not missing, f"{len(missing)} acknowledged outcomes lost"


def test_client_against_a_real_server_then_sigterm_drains_and_flushes(tmp_path):
    db = tmp_path / "client.db"
    with ServerProcess(db, "--no-monitors", env={"ARCPOINT_TOKEN": TOKEN}) as server:
        with Client(server.url, token=TOKEN) as client:
            d = client.route(tier="premium", input_tokens=512, metadata={"app": "chat"})
            assert d.backend in {"b0", "b1", "b2", "b3"} and d.sla_ms == 500.0  # premium TTFT SLO
            rep = client.record_outcomes(
                [{"decision_id": d.decision_id, "e2e_ms": 210.0, "ttft_ms": 35.0}]
            )
            assert (rep.accepted, rep.duplicate, rep.rejected) == (1, 0, [])
            again = client.record_outcomes([{"decision_id": d.decision_id, "e2e_ms": 210.0}])
            assert again.duplicate == 1
            answer = client.ask("What is the state of the fleet?")
            assert answer.llm == "offline" and answer.answer
        with Client(server.url, token="wrong") as bad, pytest.raises(ArcpointError) as info:
            bad.route()
        assert info.value.status == 401
        assert info.value.detail[0]["field"] == "header.authorization"
        # SIGTERM: every decision routed so far is flushed to the file before the exit.
        with Client(server.url, token=TOKEN) as client:
            ids = [client.route(tier="batch").decision_id for _ in range(300)]
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(10)  # drained and flushed within 10 s, or this raises
        err = server.log()
    assert code in (0, 128 + signal.SIGTERM, -signal.SIGTERM), err
    assert "decisions and traces flushed" in err
    with Store(db) as store:
        stored = {r["decision_id"] for r in store.db.query("SELECT decision_id FROM decisions")}
    assert set(ids) | {d.decision_id} <= stored
