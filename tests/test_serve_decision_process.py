"""The decision writer's worker process: rows identical to the in-process ones, shared snapshots
sent once, the full-queue policy, a dead child counted, close() commits everything."""

from __future__ import annotations

import pickle

import pytest

from arcpoint.serve.adapter import RouteInput
from arcpoint.serve.config import ServeConfig
from arcpoint.serve.decision_process import DecisionProcess, Packer, ReasonUpdate, _rows
from arcpoint.serve.service import Service
from context_api.store import Store, decision_row
from context_api.traces import TraceRecord, TraceStore


@pytest.fixture
def service(tmp_path):
    svc = Service(ServeConfig(db=str(tmp_path / "d.db"), run_monitors=False, tick_s=3600.0))
    svc.open()
    svc.adapter.tick([], 0, {})
    yield svc
    svc.writer.close(5.0)
    for s in (svc.store, svc.agent_store):
        s.close()


def _decisions(svc: Service, n: int) -> list:
    return [
        svc.adapter.route(
            RouteInput(None, ("premium", "standard", "batch")[i % 3], None, 64 * i, {})
        )[0]
        for i in range(n)
    ]


def test_packed_decisions_make_the_same_rows_and_snapshots_are_sent_once(service):
    decisions = _decisions(service, 6)
    packer = Packer()
    payload = b"".join(packer.pack(d) for d in decisions)
    payload += packer.pack(ReasonUpdate(decisions[0].decision_id, "advised"))
    # The tick's fleet view and the grid snapshot go once each, then by reference.
    assert packer.shared_sent == 2
    rows, updates, traces = _rows(payload)
    assert rows == [decision_row(d) for d in decisions]  # builds the parent's candidates too
    assert updates == [(decisions[0].decision_id, "advised")] and traces == []
    assert packer.rows_sent == 0
    # A decision whose candidates were already built travels as its finished row.
    assert pickle.loads(packer.pack(decisions[1]))[0] == "row" and packer.rows_sent == 1


def test_the_process_commits_decisions_and_reasons_then_exits_on_close(service, tmp_path):
    service.writer.close(5.0)
    w = DecisionProcess(str(tmp_path / "d.db"), linger_s=0.001)
    decisions = _decisions(service, 40)
    assert all(w.submit(d) for d in decisions)
    assert w.submit(ReasonUpdate(decisions[3].decision_id, "policy; advised: b2"))
    trace = TraceRecord(
        kind="escalation", parent_id=decisions[3].decision_id, started_at=1.0, ended_at=2.0
    )
    assert w.submit_trace(trace)
    assert w.flush_through(w.submitted, timeout=30)
    assert (w.stats.written, w.stats.failed, w.depth) == (41, 0, 0)
    for _ in range(100):  # traces are appended after the frame's decisions, then acknowledged
        if w.trace_depth == 0:
            break
        w.flush_through(w.submitted, timeout=1)
    assert (w.traces_done, w.traces_failed) == (1, 0)
    more = _decisions(service, 5)
    for d in more:
        w.submit(d)
    assert w.close(timeout=10) and w.proc.returncode == 0
    assert not w.alive and w.submit(more[0]) is False and w.stats.dropped == 1
    with Store(tmp_path / "d.db") as store:
        got = store.get_decision(decisions[3].decision_id)
        assert got["reason"] == "policy; advised: b2"
        assert [c["backend"] for c in got["candidates"]] == ["b0", "b1", "b2", "b3"]
        stored = {r["decision_id"] for r in store.db.query("SELECT decision_id FROM decisions")}
        got_trace = TraceStore(store).get(trace.trace_id)
        assert got_trace is not None and got_trace.parent_id == decisions[3].decision_id
    assert {d.decision_id for d in decisions + more} <= stored


def test_full_queue_drops_and_counts_and_a_dead_child_stops_intake(service, tmp_path):
    service.writer.close(5.0)
    w = DecisionProcess(str(tmp_path / "d.db"), max_queue=3, linger_s=60.0)
    decisions = _decisions(service, 5)
    results = [w.submit(d) for d in decisions]
    # Nothing is sent before the linger or a flush: three wait, two are dropped and counted.
    assert results == [True, True, True, False, False] and w.stats.dropped == 2
    assert w.depth == 3
    w.proc.kill()
    w.proc.wait(10)
    assert w.flush_through(w.submitted, timeout=10)  # settled: counted as failed, no hang
    assert not w.alive and w.stats.failed == 3 and "exited" in (w.stats.last_error or "")
    assert w.submit(decisions[0]) is False and w.stats.dropped == 3
    # A trace is refused (the caller writes it itself), never lost in a dead pipe.
    assert not w.submit_trace(TraceRecord(kind="escalation", started_at=1.0, ended_at=2.0))
    w.close(timeout=2)
