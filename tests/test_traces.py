"""Trace records, the builder, the hash-chained store, search, the background writer, OTel."""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from context_api.store import Store
from context_api.trace_builder import TraceBuilder
from context_api.trace_otel import otel_document, otel_spans
from context_api.trace_records import (
    GENESIS_HASH,
    StoredTrace,
    TraceRecord,
    TraceStep,
    canonical_json,
    chain_hash,
)
from context_api.traces import TraceStore, TraceWriter

T0 = 1_700_000_000.0


def make(
    i: int = 0,
    *,
    kind: str = "escalation",
    backend: str | None = "b",
    question: str = "which backend?",
    final: object = None,
) -> TraceRecord:
    tb = TraceBuilder(
        kind,
        parent_id=f"decision-{i}",
        inputs={"question": question, "request": {"tier": "gold", "sla_ms": 300}},
        llm="offline",
        model="offline-reasoner",
        prompt_hash="ab" * 32,
        model_versions={"forecaster": "rf-v3", "policy": "predictive-1"},
        started_at=T0 + i,
    )
    with tb.node("route", input={"ambiguous_reason": "interval straddles SLA"}):
        tb.tool_call("get_fleet_state", {"backend": "a"}, {"p95_ms": 120.5}, duration_s=0.002)
        tb.llm_turn(
            model="offline-reasoner",
            input="2 messages",
            output=[{"type": "text", "text": "backend b has headroom"}],
            input_tokens=812,
            output_tokens=64,
            cache_read_tokens=700,
            cache_write_tokens=12,
            latency_s=0.4,
            stop_reason="tool_use",
        )
        tb.tool_call("submit_decision", {"backend": backend}, {"accepted": True}, duration_s=0.001)
    return tb.finish(
        final=final if final is not None else {"backend": backend},
        backend=backend,
        ended_at=T0 + i + 0.5,
    )


@pytest.fixture
def traces(tmp_path: Path):
    with TraceStore(tmp_path / "arcpoint.db") as ts:
        yield ts


# --- records -------------------------------------------------------------------------------------


def test_a_record_holds_everything_an_auditor_needs() -> None:
    r = make(1)
    assert r.kind == "escalation" and r.parent_id == "decision-1"
    assert (r.started_at, r.ended_at) == (T0 + 1, T0 + 1.5)
    assert r.inputs["question"] == "which backend?"
    assert [s.type for s in r.steps] == ["node", "tool_call", "llm_turn", "tool_call"]
    assert [s.parent for s in r.steps] == [None, 0, 0, 0]
    tool, turn = r.steps[1], r.steps[2]
    assert (tool.name, tool.arguments, tool.result, tool.duration_s) == (
        "get_fleet_state",
        {"backend": "a"},
        {"p95_ms": 120.5},
        0.002,
    )
    assert (turn.model, turn.input_tokens, turn.output_tokens) == ("offline-reasoner", 812, 64)
    assert (turn.cache_read_tokens, turn.cache_write_tokens) == (700, 12)
    assert (turn.latency_s, turn.stop_reason) == (0.4, "tool_use")
    assert r.final == {"backend": "b"}
    assert r.prompt_hash == "ab" * 32
    assert r.model_versions == {"forecaster": "rf-v3", "policy": "predictive-1"}
    assert r.llm == "offline"
    assert (r.input_tokens, r.output_tokens) == (812, 64)


@pytest.mark.parametrize(
    "change",
    [
        {"ended_at": T0 - 1},
        {"started_at": math.nan},
        {"started_at": -5.0},
        {"kind": "Not A Kind"},
        {"kind": ""},
        {"unknown_field": 1},
        {"steps": [{"type": "node", "name": "x", "parent": 0}]},
        {"steps": [{"type": "bogus", "name": "x"}]},
        {"steps": [{"type": "tool_call", "name": "x", "duration_s": -1.0}]},
        {"steps": [{"type": "llm_turn", "name": "m", "input_tokens": -3}]},
        {"steps": [{"type": "llm_turn", "name": "m", "latency_s": math.inf}]},
    ],
)
def test_bad_records_are_refused_with_a_clear_error(change: dict) -> None:
    data = {"kind": "chat", "started_at": T0, "ended_at": T0 + 1, **change}
    with pytest.raises(ValidationError):
        TraceRecord(**data)


def test_node_marks_an_exception_and_still_times_it() -> None:
    clock = iter([T0, T0 + 1.0, T0 + 1.25, T0 + 2.0])
    tb = TraceBuilder("monitor", clock=lambda: next(clock))
    with pytest.raises(RuntimeError), tb.node("detect_drift"):
        tb.tool_call("ks_test", {"feature": "p95"}, {"p": 0.01})
        raise RuntimeError("store unavailable")
    record = tb.finish(fallback_reason="node failed")
    node = record.steps[0]
    assert node.is_error and node.error == "RuntimeError: store unavailable"
    assert node.duration_s == pytest.approx(0.25)
    assert record.steps[1].parent == 0
    assert record.ended_at == T0 + 2.0


def test_add_llm_run_records_every_turn_and_tool_call_of_the_agents_run() -> None:
    from agents.llm.base import (
        LLMError,
        LLMRun,
        LLMTurn,
        TokenUsage,
        ToolCallRecord,
        ToolResult,
    )

    call = ToolCallRecord(
        id="toolu_1",
        name="get_fleet_state",
        input={"backend": "a"},
        input_valid=True,
        result=ToolResult(content={"p95_ms": 120.0}),
        duration_s=0.003,
    )
    turns = [
        LLMTurn(
            index=0,
            model_id="claude-sonnet-4-6",
            input_messages=1,
            input_summary="1 message",
            output=[{"type": "tool_use", "id": "toolu_1", "name": "get_fleet_state"}],
            stop_reason="tool_use",
            tool_calls=[call],
            usage=TokenUsage(input_tokens=10, output_tokens=5, cache_read_tokens=900),
            cost_usd=0.001,
            latency_s=0.8,
            attempts=1,
            message_id="msg_1",
        ),
        LLMTurn(
            index=1,
            model_id="claude-sonnet-4-6",
            input_messages=3,
            input_summary="3 messages",
            output=[],
            stop_reason=None,
            usage=TokenUsage(),
            cost_usd=0.0,
            latency_s=0.0,
            attempts=3,
            error=LLMError(kind="overloaded", message="529", status_code=529),
        ),
    ]
    run = LLMRun(
        model_name="claude",
        model_id="claude-sonnet-4-6",
        final_text="",
        stop_reason="error",
        turns=turns,
        usage=TokenUsage(input_tokens=10, output_tokens=5, cache_read_tokens=900),
        cost_usd=0.001,
        duration_s=0.9,
        error=LLMError(kind="overloaded", message="529"),
    )
    tb = TraceBuilder("chat", parent_id="thread-1", llm="claude")
    with tb.node("agent"):
        tb.add_llm_run(run)
    record = tb.finish(final=None, fallback_reason="overloaded: 529")
    types = [(s.type, s.name, s.parent) for s in record.steps]
    assert types == [
        ("node", "agent", None),
        ("llm_turn", "claude-sonnet-4-6", 0),
        ("tool_call", "get_fleet_state", 0),
        ("llm_turn", "claude-sonnet-4-6", 0),
    ]
    first, tool, failed = record.steps[1:]
    assert (first.input_tokens, first.cache_read_tokens, first.stop_reason) == (10, 900, "tool_use")
    assert first.detail["message_id"] == "msg_1"
    assert (tool.arguments, tool.result, tool.tool_call_id) == (
        {"backend": "a"},
        {"p95_ms": 120.0},
        "toolu_1",
    )
    assert failed.is_error and failed.error == "overloaded: 529"


# --- canonical JSON and the chain ----------------------------------------------------------------


def test_canonical_json_sorts_keys_and_turns_nan_into_null() -> None:
    text = canonical_json({"b": 1, "a": [math.nan, math.inf, 1.5], "c": "é"})
    assert text == '{"a":[null,null,1.5],"b":1,"c":"é"}'
    assert canonical_json(json.loads(text)) == text


def test_append_chains_hashes_anyone_can_recompute(traces: TraceStore) -> None:
    stored = [traces.append(make(i)) for i in range(3)]
    assert [s.seq for s in stored] == [1, 2, 3]
    assert stored[0].prev_hash == GENESIS_HASH
    assert stored[1].prev_hash == stored[0].hash and stored[2].prev_hash == stored[1].hash
    # Recompute from the raw file with nothing but sqlite3 and hashlib.
    conn = sqlite3.connect(traces.store.path)
    prev = GENESIS_HASH
    for seq, text, digest in conn.execute(
        "SELECT seq, content_json, hash FROM traces ORDER BY seq"
    ):
        assert hashlib.sha256(f"{prev}\n{seq}\n{text}".encode()).hexdigest() == digest
        prev = digest
    conn.close()
    third = traces.get(stored[2].trace_id)
    assert chain_hash(stored[1].hash, 3, canonical_json(third.content())) == stored[2].hash


def test_nan_in_a_tool_result_is_stored_as_null(traces: TraceStore) -> None:
    tb = TraceBuilder("monitor", started_at=T0)
    tb.tool_call("forecast", {"backend": "a"}, {"p95_ms": math.nan, "hi": math.inf})
    receipt = traces.append(tb.finish(ended_at=T0 + 1))
    assert traces.get(receipt.trace_id).steps[0].result == {"p95_ms": None, "hi": None}
    assert traces.verify().ok


def test_round_trip_and_id_prefix(traces: TraceStore) -> None:
    record = make(7)
    stored = traces.append(record)
    back = traces.get(record.trace_id)
    assert isinstance(back, StoredTrace)
    assert back.content() == record.content()
    assert (back.seq, back.hash) == (stored.seq, stored.hash)
    assert traces.get(record.trace_id[:12]).trace_id == record.trace_id
    assert traces.get(record.trace_id[-8:]).trace_id == record.trace_id
    assert traces.get("%%%%%%") is None  # LIKE wildcards are taken literally
    assert traces.get("nope-not-there") is None


def test_ambiguous_prefix_is_an_error(traces: TraceStore) -> None:
    a = make(1).model_copy(update={"trace_id": "shared-prefix-1"})
    b = make(2).model_copy(update={"trace_id": "shared-prefix-2"})
    traces.append_many([a, b])
    with pytest.raises(ValueError, match="ambiguous"):
        traces.get("shared-prefix")


def test_a_trace_id_is_written_once_and_a_failed_batch_writes_nothing(
    traces: TraceStore,
) -> None:
    first = make(1)
    traces.append(first)
    with pytest.raises(ValueError, match="already stored"):
        traces.append(first)
    with pytest.raises(ValueError):
        traces.append_many([make(2), first])  # the new one rolls back with the duplicate
    assert traces.count() == 1
    assert traces.verify().ok
    assert traces.append(make(3)).seq == 2


def test_append_rejects_what_is_not_a_trace(traces: TraceStore) -> None:
    with pytest.raises(TypeError):
        traces.append({"kind": "chat"})  # type: ignore[arg-type]


def test_secrets_are_scrubbed_before_hashing(traces: TraceStore, monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-test-key-0123456789abcdef")
    record = make(1, question="use sk-ant-api03-test-key-0123456789abcdef please")
    traces.append(record)
    assert "sk-ant" not in traces.get(record.trace_id).inputs["question"]
    assert traces.verify().ok  # the hash covers the scrubbed content


def test_steps_and_columns_are_plain_sql(traces: TraceStore) -> None:
    stored = traces.append(make(1))
    conn = sqlite3.connect(traces.store.path)
    row = conn.execute(
        "SELECT kind, parent_id, backend, llm, model, final, n_steps, input_tokens, output_tokens,"
        " duration_s FROM traces"
    ).fetchone()
    assert row == (
        "escalation",
        "decision-1",
        "b",
        "offline",
        "offline-reasoner",
        '{"backend":"b"}',
        4,
        812,
        64,
        0.5,
    )
    steps = conn.execute(
        "SELECT idx, parent_idx, type, name, duration_s, input_tokens, cache_read_tokens "
        "FROM trace_steps WHERE trace_id = ? ORDER BY idx",
        (stored.trace_id,),
    ).fetchall()
    conn.close()
    assert steps == [
        (0, None, "node", "route", steps[0][4], None, None),
        (1, 0, "tool_call", "get_fleet_state", 0.002, None, None),
        (2, 0, "llm_turn", "offline-reasoner", 0.4, 812, 700),
        (3, 0, "tool_call", "submit_decision", 0.001, None, None),
    ]


# --- listing and search --------------------------------------------------------------------------


def test_list_filters_combine(traces: TraceStore) -> None:
    traces.append(make(0, kind="chat", backend=None, question="what is the state of the fleet?"))
    traces.append(make(10, kind="escalation", backend="a"))
    traces.append(make(20, kind="escalation", backend="b"))
    traces.append(make(30, kind="monitor", backend=None, final="drift on backend-c: KS p=0.001"))
    assert [r.seq for r in traces.list()] == [4, 3, 2, 1]  # newest first
    assert [r.seq for r in traces.list(kind="escalation")] == [3, 2]
    assert [r.seq for r in traces.list(backend="a")] == [2]
    assert [r.seq for r in traces.list(since=T0 + 10, until=T0 + 25)] == [3, 2]
    assert [r.seq for r in traces.list(parent_id="decision-20")] == [3]
    assert [r.seq for r in traces.list(llm="offline", limit=2)] == [4, 3]
    assert traces.list(llm="claude") == []
    with pytest.raises(ValueError):
        traces.list(limit=-1)


def test_full_text_search(traces: TraceStore) -> None:
    traces.append(make(0, kind="chat", backend=None, question="why did quality drop at 14:00?"))
    traces.append(make(1, final="backend-c shows drift"))
    traces.append(make(2))
    assert [r.seq for r in traces.list(search="quality drop")] == [1]
    assert [r.seq for r in traces.list(search="drift")] == [2]
    assert [r.seq for r in traces.list(search="backend-c")] == [2]
    assert len(traces.list(search="get_fleet_state")) == 3  # step text is indexed
    assert traces.list(search="quality drift") == []  # every word must appear
    assert traces.list(search='"; DROP TABLE traces; -- AND OR NOT*') == []  # no query syntax
    assert [r.seq for r in traces.list(search="drift", kind="escalation")] == [2]
    with pytest.raises(ValueError):
        traces.list(search="   ")


def test_rebuild_search_index(traces: TraceStore) -> None:
    traces.append(make(1, final="rebuilt index works"))
    with traces.store.transaction() as conn:
        conn.execute("DELETE FROM traces_fts")
    assert traces.list(search="rebuilt") == []
    assert traces.rebuild_search_index() == 1
    assert len(traces.list(search="rebuilt")) == 1


def test_iter_traces_in_chain_order(traces: TraceStore) -> None:
    for i in range(7):
        traces.append(make(i, kind="chat" if i % 2 else "monitor"))
    assert [t.seq for t in traces.iter_traces(batch=3)] == list(range(1, 8))
    assert [t.seq for t in traces.iter_traces(kind="chat", since=T0 + 2)] == [4, 6]


def test_an_existing_store_is_shared_and_left_open(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db") as store:
        ts = TraceStore(store)
        ts.append(make(1))
        ts.close()  # does not close the caller's store
        assert store.schema_version >= 5
        assert TraceStore(store).count() == 1


# --- concurrency ---------------------------------------------------------------------------------


def test_threads_appending_keep_one_chain(traces: TraceStore) -> None:
    def worker(k: int) -> None:
        for i in range(25):
            traces.append(make(k * 100 + i))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = traces.verify()
    assert report.ok and report.checked == 100 and report.head_seq == 100


def test_processes_appending_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    TraceStore(path).close()  # create and migrate once
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
        from context_api.trace_builder import TraceBuilder
        from context_api.traces import TraceStore
        ts = TraceStore({str(path)!r})
        for i in range(30):
            tb = TraceBuilder("monitor", inputs={{"proc": sys.argv[1], "i": i}})
            tb.tool_call("check", {{"i": i}}, {{"ok": True}}, duration_s=0.0)
            ts.append(tb.finish())
        ts.close()
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(k)], stderr=subprocess.PIPE)
        for k in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
    with TraceStore(path) as ts:
        report = ts.verify()
    assert report.ok, report.problems
    assert report.checked == 60


# --- the background writer -----------------------------------------------------------------------


def test_writer_writes_everything_and_flushes(traces: TraceStore) -> None:
    with TraceWriter(traces, max_queue=16) as writer:
        for i in range(100):
            writer.submit(make(i))
        assert writer.flush(timeout_s=30)
        assert writer.stats.written == 100 and writer.stats.failed == 0
    assert traces.count() == 100
    assert traces.verify().ok


class _SlowTraceStore(TraceStore):
    """Appends block until released, so the writer's queue fills up."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()

    def append_many(self, records):
        if threading.current_thread().name == "arcpoint-trace-writer":
            self.gate.wait(10)
        return super().append_many(records)


def test_full_queue_writes_on_the_callers_thread_and_loses_nothing(tmp_path: Path) -> None:
    slow = _SlowTraceStore(tmp_path / "slow.db")
    writer = TraceWriter(slow, max_queue=2)
    try:
        for i in range(10):
            writer.submit(make(i))
        assert writer.stats.written_inline >= 1  # the queue was full: no drop, no wait
        slow.gate.set()
        assert writer.flush(timeout_s=30)
    finally:
        writer.close()
        slow.close()
    assert writer.stats.submitted == 10
    assert writer.stats.written == 10 and writer.stats.failed == 0
    with TraceStore(tmp_path / "slow.db") as ts:
        assert ts.count() == 10 and ts.verify().ok


class _BrokenTraceStore(TraceStore):
    def append_many(self, records):
        raise sqlite3.OperationalError("disk I/O error")


def test_failures_are_counted_logged_and_kept(tmp_path: Path, caplog) -> None:
    broken = _BrokenTraceStore(tmp_path / "broken.db")
    writer = TraceWriter(broken, retries=1, retry_delay_s=0.0)
    record = make(1)
    with caplog.at_level("ERROR", logger="context_api.trace_writer"):
        writer.submit(record)
        assert writer.flush(timeout_s=10)
    writer.close()
    broken.close()
    assert writer.stats.failed == 1 and writer.stats.written == 0
    assert writer.failed_records == [record]
    assert record.trace_id in caplog.text and "disk I/O error" in caplog.text


def test_closed_writer_refuses_new_traces(traces: TraceStore) -> None:
    writer = TraceWriter(traces)
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(make(1))
    with pytest.raises(ValueError):
        TraceWriter(traces, max_queue=0)


# --- OpenTelemetry -------------------------------------------------------------------------------


def _attrs(span: dict) -> dict:
    out = {}
    for a in span["attributes"]:
        ((kind, value),) = a["value"].items()
        if kind == "intValue":
            value = int(value)
        elif kind == "arrayValue":
            value = [next(iter(v.values())) for v in value["values"]]
        out[a["key"]] = value
    return out


def test_otel_spans_use_genai_names_and_nest(traces: TraceStore) -> None:
    stored = traces.get(traces.append(make(3)).trace_id)
    spans = otel_spans(stored)
    assert len(spans) == 1 + len(stored.steps)
    root, node, tool, turn, _ = spans
    assert len(root["traceId"]) == 32 and all(len(s["spanId"]) == 16 for s in spans)
    assert {s["traceId"] for s in spans} == {root["traceId"]}
    assert "parentSpanId" not in root
    assert node["parentSpanId"] == root["spanId"]
    assert tool["parentSpanId"] == turn["parentSpanId"] == node["spanId"]
    r, t, c = _attrs(root), _attrs(tool), _attrs(turn)
    assert r["gen_ai.operation.name"] == "invoke_agent"
    assert r["arcpoint.trace.hash"] == stored.hash
    assert r["arcpoint.model_version.forecaster"] == "rf-v3"
    assert (t["gen_ai.operation.name"], t["gen_ai.tool.name"]) == (
        "execute_tool",
        "get_fleet_state",
    )
    assert tool["name"] == "execute_tool get_fleet_state"
    assert c["gen_ai.operation.name"] == "chat"
    assert c["gen_ai.request.model"] == "offline-reasoner"
    # input_tokens includes cached tokens (semantic-convention rule); the parts are separate.
    assert c["gen_ai.usage.input_tokens"] == 812 + 700 + 12
    assert c["gen_ai.usage.cache_read.input_tokens"] == 700
    assert c["gen_ai.usage.cache_creation.input_tokens"] == 12
    assert c["gen_ai.usage.output_tokens"] == 64
    assert c["gen_ai.response.finish_reasons"] == ["tool_use"]
    for span in spans:
        assert int(span["startTimeUnixNano"]) <= int(span["endTimeUnixNano"])
    assert otel_spans(stored) == spans  # deterministic ids


def test_otel_document_shape_and_error_status() -> None:
    tb = TraceBuilder("chat", parent_id="thread-9", llm="claude", model="claude-sonnet-4-6")
    tb.tool_call("get_backend", {"backend": "zz"}, {"error": "unknown backend"}, is_error=True)
    record = tb.finish(fallback_reason="timeout")
    doc = otel_document([record])
    (resource,) = doc["resourceSpans"]
    (scope,) = resource["scopeSpans"]
    root, tool = scope["spans"]
    assert scope["scope"]["name"] == "arcpoint.traces"
    assert root["status"]["code"] == 2 and tool["status"]["code"] == 2
    assert _attrs(root)["gen_ai.provider.name"] == "anthropic"
    assert _attrs(root)["gen_ai.conversation.id"] == "thread-9"
    assert "error.type" in _attrs(tool)
    json.dumps(doc)  # plain JSON


def test_step_constructor_defaults() -> None:
    step = TraceStep(type="node", name="n")
    assert step.parent is None and step.detail == {} and not step.is_error


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None)
@given(
    inputs=st.dictionaries(st.text(max_size=8), _json, max_size=4),
    result=_json,
    n=st.integers(0, 3),
)
def test_spliced_encoding_equals_plain_canonical_json(inputs, result, n) -> None:
    from context_api.trace_rows import encode_content

    tb = TraceBuilder("chat", inputs=inputs, started_at=T0)
    for i in range(n):
        tb.tool_call(f"tool{i}", {"steps": [], "x": result}, result)
    content = tb.finish(final=result, ended_at=T0).content()
    text, step_texts = encode_content(content)
    assert text == canonical_json(content)
    assert step_texts == [canonical_json(s) for s in content["steps"]]


def test_a_writer_left_open_is_flushed_at_exit(tmp_path: Path) -> None:
    path = tmp_path / "exit.db"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
        from context_api.trace_builder import TraceBuilder
        from context_api.traces import TraceStore, TraceWriter
        writer = TraceWriter(TraceStore({str(path)!r}))
        for i in range(50):
            writer.submit(TraceBuilder("chat", inputs={{"i": i}}).finish(final="ok"))
        # no flush, no close: the interpreter exits with the queue still full
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    with TraceStore(path) as ts:
        assert ts.count() == 50
        assert ts.verify().ok


def test_unusual_types_from_tools_become_plain_json(traces: TraceStore) -> None:
    import datetime as dt
    import enum

    import numpy as np

    from tools.routing import Candidate

    class Mode(enum.Enum):
        SHADOW = "shadow"

    tb = TraceBuilder("monitor", started_at=T0)
    tb.tool_call(
        "odd_tool",
        {"when": dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC), "mode": Mode.SHADOW},
        {
            "p95": np.float64(123.5),
            "counts": np.arange(3),
            "tags": {"a"},
            "candidate": Candidate("gpu-a", 1.0, 0.5, 1.5, 0.1, 1.0, False),
            "raw": object.__new__(object),
        },
    )
    receipt = traces.append(tb.finish(ended_at=T0 + 1))
    step = traces.get(receipt.trace_id).steps[0]
    assert step.arguments == {"when": "2025-01-02T03:04:05+00:00", "mode": "shadow"}
    assert step.result["p95"] == 123.5 and step.result["counts"] == [0, 1, 2]
    assert step.result["tags"] == ["a"] and step.result["candidate"]["backend"] == "gpu-a"
    assert step.result["raw"].startswith("<object object")
