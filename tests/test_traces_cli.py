"""`arcpoint traces list|show|export|verify` as an operator or auditor uses them."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from arcpoint.cli import main
from arcpoint.commands.traces import EXIT_NO_DB, EXIT_OK, EXIT_USAGE
from context_api.trace_builder import TraceBuilder
from context_api.trace_records import canonical_json
from context_api.traces import TraceStore

T0 = 1_700_000_000.0


def _record(i: int, kind: str, backend: str | None, question: str, final: object):
    tb = TraceBuilder(
        kind,
        parent_id=f"thread-{i}" if kind == "chat" else f"decision-{i}",
        inputs={"question": question},
        llm="offline",
        model="offline-reasoner",
        prompt_hash="c0ffee" * 10 + "abcd",
        model_versions={"forecaster": "rf-v3"},
        started_at=T0 + 60 * i,
    )
    with tb.node("agent"):
        tb.tool_call("get_fleet_state", {}, {"backends": ["a", "b"]}, duration_s=0.0021)
        tb.llm_turn(
            model="offline-reasoner",
            input="1 message",
            output="Backend b is healthiest.",
            input_tokens=321,
            output_tokens=45,
            cache_read_tokens=200,
            latency_s=0.012,
            stop_reason="end_turn",
        )
    return tb.finish(final=final, backend=backend, ended_at=T0 + 60 * i + 0.25)


@pytest.fixture
def db(tmp_path: Path) -> tuple[str, list[str]]:
    path = tmp_path / "arcpoint.db"
    rows = [
        (0, "chat", None, "what is the state of the fleet?", "All 3 backends are healthy."),
        (1, "escalation", "a", "route gold request", {"backend": "a"}),
        (2, "escalation", "b", "route gold request", {"backend": "b"}),
        (3, "monitor", "c", "drift check", "Drift on backend c (KS p=0.001)."),
    ]
    with TraceStore(path) as traces:
        ids = [traces.append(_record(*r)).trace_id for r in rows]
    return str(path), ids


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_newest_first_with_filters(db, capsys) -> None:
    path, ids = db
    code, out, _ = _run(capsys, "traces", "list", "--db", path)
    assert code == EXIT_OK
    lines = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [line.split()[0] for line in lines] == ["4", "3", "2", "1"]
    assert ids[0] in out and "321/45" in out
    _, out, _ = _run(capsys, "traces", "list", "--db", path, "--kind", "escalation")
    assert ids[1] in out and ids[2] in out and ids[0] not in out
    _, out, _ = _run(capsys, "traces", "list", "--db", path, "--backend", "b")
    assert ids[2] in out and ids[1] not in out
    _, out, _ = _run(capsys, "traces", "list", "--db", path, "--search", "drift")
    assert ids[3] in out and ids[1] not in out
    _, out, _ = _run(capsys, "traces", "list", "--db", path, "--limit", "1")
    assert ids[3] in out and ids[2] not in out


def test_list_since_and_json(db, capsys) -> None:
    path, ids = db
    code, out, _ = _run(capsys, "traces", "list", "--db", path, "--since", str(T0 + 100), "--json")
    payload = json.loads(out)
    assert code == EXIT_OK
    assert [t["trace_id"] for t in payload["traces"]] == [ids[3], ids[2]]
    assert payload["traces"][0]["kind"] == "monitor"
    assert payload["traces"][0]["time"].startswith("2023-11-14T")


def test_list_says_when_nothing_matches(db, capsys) -> None:
    path, _ = db
    code, out, _ = _run(capsys, "traces", "list", "--db", path, "--kind", "retrain")
    assert code == EXIT_OK and "no traces match" in out and "4 stored" in out


def test_show_draws_the_tree_with_timings_and_tokens(db, capsys) -> None:
    path, ids = db
    code, out, _ = _run(capsys, "traces", "show", ids[1][-8:], "--db", path)
    assert code == EXIT_OK
    assert f"trace {ids[1]}  escalation" in out
    assert "parent: decision-1" in out
    assert "model versions: forecaster=rf-v3" in out
    assert "└─ [0] node agent" in out
    assert "├─ [1] tool get_fleet_state({})  2.1 ms" in out
    assert "[2] llm offline-reasoner  321 in / 45 out tok (cache read 200, write 0)" in out
    assert "12.0 ms  stop=end_turn" in out
    assert 'final: {"backend": "a"}' in out
    assert "chain: seq 2" in out


def test_show_json_and_unknown_id(db, capsys) -> None:
    path, ids = db
    code, out, _ = _run(capsys, "traces", "show", ids[0], "--db", path, "--json")
    data = json.loads(out)
    assert code == EXIT_OK and data["trace_id"] == ids[0] and data["seq"] == 1
    assert data["steps"][2]["input_tokens"] == 321
    code, _, err = _run(capsys, "traces", "show", "no-such-trace", "--db", path)
    assert code == EXIT_USAGE and "no trace" in err
    code, _, err = _run(capsys, "traces", "show", ids[0][:8], "--db", path)
    assert code == EXIT_USAGE and "ambiguous" in err  # ids share their time prefix


def test_export_jsonl_can_be_verified_elsewhere(db, capsys, tmp_path: Path) -> None:
    path, ids = db
    out_path = tmp_path / "traces.jsonl"
    code, _, err = _run(capsys, "traces", "export", "--db", path, "--out", str(out_path))
    assert code == EXIT_OK and "exported 4 traces" in err
    lines = out_path.read_text().splitlines()
    assert len(lines) == 4
    prev = "0" * 64
    for line in lines:
        item = json.loads(line)
        text = canonical_json(item["trace"])
        expected = hashlib.sha256(f"{prev}\n{item['seq']}\n{text}".encode()).hexdigest()
        assert item["prev_hash"] == prev and item["hash"] == expected
        prev = item["hash"]
    assert [json.loads(line)["trace"]["trace_id"] for line in lines] == ids


def test_export_otel_to_stdout(db, capsys) -> None:
    path, _ = db
    code, out, _ = _run(capsys, "traces", "export", "--db", path, "--format", "otel")
    assert code == EXIT_OK
    doc = json.loads(out)
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert len(spans) == 4 * 4  # root + node + tool + llm per trace
    names = {s["name"] for s in spans}
    assert {"chat offline-reasoner", "execute_tool get_fleet_state"} <= names
    keys = {a["key"] for s in spans for a in s["attributes"]}
    assert {
        "gen_ai.operation.name",
        "gen_ai.tool.name",
        "gen_ai.request.model",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.response.finish_reasons",
    } <= keys


def test_export_filters(db, capsys) -> None:
    path, ids = db
    _, out, _ = _run(capsys, "traces", "export", "--db", path, "--kind", "escalation")
    assert [json.loads(line)["trace"]["trace_id"] for line in out.splitlines()] == ids[1:3]


def test_missing_or_foreign_database(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "none.db"
    code, _, err = _run(capsys, "traces", "list", "--db", str(missing))
    assert code == EXIT_NO_DB and "no traces yet" in err
    assert not missing.exists()  # a read command creates nothing
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE x (a)")
    conn.close()
    code, _, err = _run(capsys, "traces", "verify", "--db", str(foreign))
    assert code == EXIT_NO_DB and "not an Arcpoint database" in err
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all" * 100)
    code, _, err = _run(capsys, "traces", "show", "abc", "--db", str(junk))
    assert code == EXIT_NO_DB


def test_an_empty_arcpoint_database(tmp_path: Path, capsys) -> None:
    path = tmp_path / "empty.db"
    TraceStore(path).close()
    code, out, _ = _run(capsys, "traces", "list", "--db", str(path))
    assert code == EXIT_OK and "no traces yet" in out
    code, out, _ = _run(capsys, "traces", "verify", "--db", str(path))
    assert code == EXIT_OK and "OK: 0 traces" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["traces", "list", "--limit", "-1"],
        ["traces", "list", "--since", "yesterday-ish"],
        ["traces", "list", "--search", "  "],
        ["traces", "verify", "--anchor", "12:nothex"],
        ["traces", "verify", "--anchor", "x:" + "a" * 64],
        ["traces"],
    ],
)
def test_bad_arguments_exit_2(db, capsys, argv: list[str]) -> None:
    path, _ = db
    extra = ["--db", path] if len(argv) > 1 else []
    code, _, err = _run(capsys, *argv, *extra)
    assert code == EXIT_USAGE
    assert err


def test_db_from_the_environment(db, capsys, monkeypatch) -> None:
    path, ids = db
    monkeypatch.setenv("ARCPOINT_DB", path)
    code, out, _ = _run(capsys, "traces", "list", "--kind", "chat")
    assert code == EXIT_OK and ids[0] in out
