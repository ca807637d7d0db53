"""No API key or authorisation header reaches a stored trace, an export or a log.

The key is set in the environment (as a real deployment does) and also planted inside a request's
metadata, headers, tool results, LLM input/output and error messages. After recording traces the
test reads the raw bytes of the SQLite file (and its WAL), the exports and the captured logs.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import pytest

from arcpoint.cli import main
from context_api.trace_builder import TraceBuilder
from context_api.traces import TraceStore, TraceWriter


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    value = "sk-ant-api03-" + secrets.token_urlsafe(48)
    monkeypatch.setenv("ANTHROPIC_API_KEY", value)
    return value


def _leaky_trace(key: str, i: int):
    """A trace whose every free-form field was handed the key somehow."""
    request = {
        "request_id": f"req-{i}",
        "tier": "gold",
        "metadata": {
            "api_key": key,
            "note": f"customer pasted their key {key} into the prompt",
            "headers": {"Authorization": f"Bearer {key}", "x-api-key": key},
            "callback": "https://hooks.slack.com/services/T0/B0/abcdefghijklmnop",
        },
    }
    tb = TraceBuilder(
        "escalation",
        parent_id=f"decision-{i}",
        inputs={"request": request},
        llm="claude",
        model="claude-sonnet-4-6",
        model_versions={"forecaster": "rf-v3"},
    )
    with tb.node("route", input={"request": request}):
        tb.tool_call(
            "get_request",
            {"request_id": f"req-{i}"},
            {"metadata": request["metadata"], "raw_headers": [["x-api-key", key]]},
            duration_s=0.001,
        )
        tb.llm_turn(
            model="claude-sonnet-4-6",
            input=[{"role": "user", "content": f"route this; auth header x-api-key: {key}"}],
            output=[{"type": "text", "text": f"I will not repeat {key}"}],
            input_tokens=100,
            output_tokens=10,
            latency_s=0.2,
            stop_reason="end_turn",
            error=f"401 Unauthorized: invalid x-api-key {key}",
        )
    return tb.finish(
        final={"backend": "b", "explanation": f"key {key} ignored"},
        fallback_reason=f"api_error: Authorization: Bearer {key} rejected",
        backend="b",
    )


def _all_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file())


def _assert_no_key(blob: bytes | str, key: str) -> None:
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    assert key not in text
    assert key[len("sk-ant-api03-") :][:24] not in text  # not even the key's body
    assert "hooks.slack.com/services/T0" not in text


def test_stored_traces_exports_and_logs_hold_no_secrets(
    key: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    db = db_dir / "arcpoint.db"
    with TraceStore(db) as traces:
        traces.append(_leaky_trace(key, 0))
        with TraceWriter(traces, max_queue=2) as writer:
            for i in range(1, 6):
                writer.submit(_leaky_trace(key, i))
            assert writer.flush(timeout_s=30)
        assert writer.stats.written == 5
        report = traces.verify()
        assert report.ok and report.checked == 6
        stored = traces.get(traces.list(limit=1)[0].trace_id)
        assert stored is not None
        # Scrubbed, not dropped: the structure and the harmless values are all still there.
        assert stored.inputs["request"]["metadata"]["headers"]["x-api-key"] == "[REDACTED]"
        assert stored.inputs["request"]["tier"] == "gold"
        assert stored.steps[2].input_tokens == 100
    # The raw file, its WAL and shared memory, byte for byte.
    _assert_no_key(_all_bytes(db_dir), key)

    assert main(["traces", "export", "--db", str(db)]) == 0
    assert main(["traces", "export", "--db", str(db), "--format", "otel"]) == 0
    assert main(["traces", "list", "--db", str(db), "--json"]) == 0
    shown = main(["traces", "show", stored.trace_id, "--db", str(db)])
    assert shown == 0
    out, err = capsys.readouterr()
    assert "[REDACTED]" in out
    _assert_no_key(out + err, key)
    _assert_no_key(caplog.text, key)


def test_a_failing_writer_logs_no_secret(
    key: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Failing(TraceStore):
        def append_many(self, records):
            raise OSError(f"could not write; request had Authorization: Bearer {key}")

    store = Failing(tmp_path / "f.db")
    writer = TraceWriter(store, retries=0)
    with caplog.at_level(logging.ERROR):
        writer.submit(_leaky_trace(key, 0))
        assert writer.flush(timeout_s=10)
    writer.close()
    store.close()
    assert writer.stats.failed == 1
    assert "not written" in caplog.text
    _assert_no_key(caplog.text, key)
    _assert_no_key(writer.stats.last_error or "", key)


def test_an_escalation_with_a_key_in_the_request_metadata_stores_no_secret(
    key: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The real path: the Router's escalation hook (offline reasoner) with a TraceWriter."""
    escalation = pytest.importorskip("agents.escalation")
    from tools.routing import Candidate, Decision, RouteRequest

    caplog.set_level(logging.DEBUG)
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    request = RouteRequest(
        "req-1",
        tier="standard",
        metadata={
            "api_key": key,
            "note": f"my key is {key}",
            "authorization": f"Bearer {key}",
        },
    )
    decision = Decision(
        "decision-1",
        request.request_id,
        1_700_000_000.0,
        "gpu-a",
        "predictive",
        "cheapest_within_sla",
        300.0,
        "standard",
        True,
        "interval_straddles_sla",
        (
            Candidate("gpu-a", 280.0, 220.0, 340.0, 1.0, 0.5, False),
            Candidate("gpu-b", 290.0, 230.0, 350.0, 0.8, 0.5, False),
        ),
        "rf-v1",
    )
    with TraceStore(db_dir / "arcpoint.db") as traces:
        writer = TraceWriter(traces)
        escalator = escalation.Escalator(traces=writer)
        try:
            escalator(request, decision)
        finally:
            escalator.close()
            writer.close()
        assert writer.stats.written >= 1
        (summary,) = traces.list(kind="escalation")
        stored = traces.get(summary.trace_id)
        assert stored is not None and stored.parent_id == "decision-1"
        assert "[REDACTED]" in stored.model_dump_json()
        assert traces.verify().ok
    _assert_no_key(_all_bytes(db_dir), key)
    _assert_no_key(caplog.text, key)


def test_arcpoint_ask_on_claude_with_the_key_everywhere_stores_and_logs_no_secret(
    key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`arcpoint ask` with ANTHROPIC_API_KEY set runs the real Claude client (the SDK talking to
    an httpx2 MockTransport, no network). The key is sent where it belongs (the x-api-key
    header), and the model echoes it in a tool argument (so it reaches a tool result) and in its
    answer; none of it may reach the stored trace, the database file or the logs."""
    httpx2 = pytest.importorskip("httpx2")
    ask = pytest.importorskip("arcpoint.commands.ask")
    from agents.llm.claude import ClaudeConfig, ClaudeModel
    from context_api.store import Store
    from tools.telemetry import TelemetryPoint

    db = tmp_path / "db" / "arcpoint.db"
    db.parent.mkdir()
    with Store(db) as store:  # a little telemetry: enough for the context API to answer
        store.insert_telemetry(
            TelemetryPoint(1_700_000_000.0 + 10 * i, b, 40.0, 80.0, 150.0 + i, 0.0, 5.0)
            for i in range(30)
            for b in ("b0", "b1")
        )
    seen_keys: list[str] = []

    def reply(body: dict) -> httpx2.Response:
        base = {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-x"}
        usage = {"input_tokens": 100, "output_tokens": 20}
        return httpx2.Response(200, json={**base, **body, "stop_sequence": None, "usage": usage})

    def api(request: httpx2.Request) -> httpx2.Response:
        headers = request.headers
        seen_keys.append(headers.get("x-api-key", "") + headers.get("authorization", ""))
        if len(seen_keys) == 1:
            use = {"type": "tool_use", "id": "toolu_1", "name": "explain_decision"}
            use["input"] = {"decision_id": key}
            return reply({"content": [use], "stop_reason": "tool_use"})
        answer = f"All good. (Do not share Authorization: Bearer {key}.)"
        return reply({"content": [{"type": "text", "text": answer}], "stop_reason": "end_turn"})

    def claude_with_mock_http(settings):
        secret = settings.anthropic_api_key.get_secret_value()
        return ClaudeModel(
            ClaudeConfig(model_id="claude-x", calls_per_minute=None, tokens_per_hour=None),
            api_key=secret,
            http_client=httpx2.Client(transport=httpx2.MockTransport(api)),
        )

    monkeypatch.setattr(ask, "model_from_settings", claude_with_mock_http)
    caplog.set_level(logging.DEBUG)
    code = main(["ask", "Why was this decision routed there?", "--db", str(db), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert seen_keys and all(key in k for k in seen_keys)  # the key was really in use
    with TraceStore(db) as traces:
        (summary,) = traces.list(kind="chat")
        stored = traces.get(summary.trace_id)
        assert stored is not None and stored.llm == "claude"
        assert any(s.type == "tool_call" and s.name == "explain_decision" for s in stored.steps)
        assert "[REDACTED]" in stored.model_dump_json()
        assert traces.verify().ok
    _assert_no_key(_all_bytes(db.parent), key)
    # stderr carries the command's own messages; stdout is the model's answer as the operator
    # sees it (redacting what a model says on screen is the ask command's call, not the trace's).
    _assert_no_key(err, key)
    assert out
    _assert_no_key(caplog.text, key)
