"""Tampering with a real trace database file, the way someone with the file and sqlite3 would.

Each test writes a chain through the public API, closes it, edits / deletes / reorders rows with
the plain `sqlite3` module (dropping the append-only triggers first, as a tamperer would), and
checks that `TraceStore.verify` and `arcpoint traces verify` name the first bad trace and that the
command exits non-zero.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from arcpoint.cli import main
from arcpoint.commands.traces import EXIT_TAMPERED
from context_api.trace_builder import TraceBuilder
from context_api.traces import TraceStore

N = 6


def _record(i: int):
    tb = TraceBuilder(
        "escalation" if i % 2 else "chat",
        parent_id=f"decision-{i}",
        inputs={"question": f"which backend for request {i}?"},
        llm="offline",
        model="offline-reasoner",
        prompt_hash="p" * 64,
        model_versions={"forecaster": "rf-v3"},
        started_at=1_700_000_000.0 + i,
        clock=lambda: 1_700_000_000.0 + i,
    )
    with tb.node("route"):
        tb.tool_call("get_fleet_state", {"backend": "a"}, {"p95_ms": 120.0 + i}, duration_s=0.002)
        tb.llm_turn(
            model="offline-reasoner",
            input="2 messages",
            output="choose b",
            input_tokens=100 + i,
            output_tokens=20,
            latency_s=0.01,
            stop_reason="end_turn",
        )
    return tb.finish(final={"backend": "b", "i": i}, backend="b", ended_at=1_700_000_000.5 + i)


@pytest.fixture
def db(tmp_path: Path) -> tuple[Path, list[str]]:
    path = tmp_path / "arcpoint.db"
    with TraceStore(path) as traces:
        ids = [traces.append(_record(i)).trace_id for i in range(N)]
        assert traces.verify().ok
    return path, ids


def _tamper(path: Path, *statements: str, params: tuple = ()) -> None:
    conn = sqlite3.connect(path)
    try:
        for trigger in (
            "traces_no_update",
            "traces_no_delete",
            "trace_steps_no_update",
            "trace_steps_no_delete",
        ):
            conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        for sql in statements:
            conn.execute(sql, params if "?" in sql else ())
        conn.commit()
    finally:
        conn.close()


def _verify(path: Path):
    with TraceStore(path) as traces:
        return traces.verify()


def _cli(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["traces", "verify", "--db", str(path), *extra])
    return code, capsys.readouterr().out


def _assert_first_bad(path, capsys, seq: int, trace_id: str, words: str) -> None:
    report = _verify(path)
    assert not report.ok
    assert report.first_bad is not None
    assert (report.first_bad.seq, report.first_bad.trace_id) == (seq, trace_id)
    assert words in report.first_bad.problem
    code, out = _cli(path, capsys)
    assert code == EXIT_TAMPERED
    assert f"first bad: trace {trace_id} (seq {seq})" in out


def test_intact_chain_verifies_and_cli_exits_zero(db, capsys) -> None:
    path, _ = db
    code, out = _cli(path, capsys)
    assert code == 0
    assert f"OK: {N} traces" in out


def test_append_only_triggers_refuse_updates_and_deletes(db) -> None:
    path, _ = db
    conn = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE traces SET final = 'x' WHERE seq = 2")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM traces WHERE seq = 2")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM trace_steps")
    finally:
        conn.close()


def test_edited_content_is_named(db, capsys) -> None:
    path, ids = db
    _tamper(
        path,
        "UPDATE traces SET content_json = replace(content_json, '\"b\"', '\"c\"') WHERE seq = 3",
    )
    _assert_first_bad(path, capsys, 3, ids[2], "hash does not match")


def test_edited_copied_column_is_named(db, capsys) -> None:
    path, ids = db
    _tamper(path, "UPDATE traces SET backend = 'c' WHERE seq = 2")
    _assert_first_bad(path, capsys, 2, ids[1], "column backend")


def test_edited_final_column_is_named(db, capsys) -> None:
    path, ids = db
    _tamper(path, 'UPDATE traces SET final = \'{"backend":"c"}\' WHERE seq = 5')
    _assert_first_bad(path, capsys, 5, ids[4], "column final")


def test_edited_step_row_is_named(db, capsys) -> None:
    path, ids = db
    _tamper(
        path,
        "UPDATE trace_steps SET input_tokens = 1 WHERE trace_id = ? AND idx = 2",
        params=(ids[3],),
    )
    _assert_first_bad(path, capsys, 4, ids[3], "trace_steps row 2")


def test_deleted_step_row_is_named(db, capsys) -> None:
    path, ids = db
    _tamper(path, "DELETE FROM trace_steps WHERE trace_id = ? AND idx = 1", params=(ids[1],))
    _assert_first_bad(path, capsys, 2, ids[1], "trace_steps holds 2 rows")


def test_edit_then_rehash_names_the_edited_trace(db, capsys) -> None:
    """A tamperer who edits a trace and recomputes its own hash is caught by the next link."""
    path, ids = db
    conn = sqlite3.connect(path)
    seq, prev, text = conn.execute(
        "SELECT seq, prev_hash, content_json FROM traces WHERE seq = 3"
    ).fetchone()
    conn.close()
    content = json.loads(text)
    content["final"] = {"backend": "c", "i": 2}
    from context_api.trace_records import canonical_json, chain_hash
    from context_api.trace_rows import trace_columns

    new_text = canonical_json(content)
    new_hash = chain_hash(prev, seq, new_text)
    _tamper(
        path,
        "UPDATE traces SET content_json = ?, final = ?, hash = ? WHERE seq = 3",
        params=(new_text, trace_columns(content)["final"], new_hash),
    )
    _assert_first_bad(path, capsys, 3, ids[2], "hash was rewritten")


def test_deleted_middle_trace_is_named(db, capsys) -> None:
    path, ids = db
    _tamper(
        path,
        "DELETE FROM trace_steps WHERE trace_id = ?",
        "DELETE FROM traces WHERE trace_id = ?",
        params=(ids[2],),
    )
    report = _verify(path)
    assert report.first_bad is not None
    # The deleted trace cannot be named (it is gone): the first bad one is the trace after the
    # gap, and the problem says which seq is missing.
    assert (report.first_bad.seq, report.first_bad.trace_id) == (4, ids[3])
    assert "seq 3 missing" in report.first_bad.problem
    code, out = _cli(path, capsys)
    assert code == EXIT_TAMPERED
    assert f"trace {ids[3]} (seq 4): seq 3 missing" in out


def test_deleted_trace_row_leaving_its_steps_is_found(db) -> None:
    path, ids = db
    _tamper(path, "DELETE FROM traces WHERE trace_id = ?", params=(ids[0],))
    report = _verify(path)
    assert report.first_bad is not None and report.first_bad.seq == 2
    assert "seq 1 missing" in report.first_bad.problem
    assert any("steps but no trace row" in p.problem for p in report.problems)


def test_reordered_traces_are_named(db, capsys) -> None:
    path, ids = db
    _tamper(
        path,
        "UPDATE traces SET seq = -2 WHERE seq = 2",
        "UPDATE traces SET seq = 2 WHERE seq = 3",
        "UPDATE traces SET seq = 3 WHERE seq = -2",
    )
    # Seq 2 now holds what was the third trace: it does not link to seq 1 and its hash
    # covers seq 3.
    _assert_first_bad(path, capsys, 2, ids[2], "")


def test_reinserted_in_another_order_is_named(db, capsys) -> None:
    """Copy two rows out, delete them and insert them back swapped (new seqs from SQLite)."""
    path, ids = db
    conn = sqlite3.connect(path)
    cols = [r[1] for r in conn.execute("PRAGMA table_info(traces)")]
    rows = conn.execute("SELECT * FROM traces WHERE seq IN (5, 6) ORDER BY seq").fetchall()
    conn.close()
    other = [c for c in cols if c != "seq"]
    placeholders = ", ".join("?" * len(other))
    statements = ["DELETE FROM traces WHERE seq IN (5, 6)"]
    _tamper(path, *statements)
    conn = sqlite3.connect(path)
    for row in reversed(rows):
        values = [v for c, v in zip(cols, row, strict=True) if c != "seq"]
        conn.execute(f"INSERT INTO traces ({', '.join(other)}) VALUES ({placeholders})", values)
    conn.commit()
    conn.close()
    report = _verify(path)
    assert report.first_bad is not None
    assert (report.first_bad.seq, report.first_bad.trace_id) == (7, ids[5])
    code, _ = _cli(path, capsys)
    assert code == EXIT_TAMPERED


def test_deleted_newest_trace_is_found(db, capsys) -> None:
    path, ids = db
    _tamper(
        path,
        "DELETE FROM trace_steps WHERE trace_id = ?",
        "DELETE FROM traces WHERE trace_id = ?",
        params=(ids[-1],),
    )
    report = _verify(path)
    assert not report.ok
    assert report.first_bad is not None
    assert f"after seq {N - 1} up to {N} are missing" in report.first_bad.problem
    code, out = _cli(path, capsys)
    assert code == EXIT_TAMPERED
    assert "newest traces were deleted" in out


def test_a_new_append_after_a_deleted_tail_leaves_a_visible_gap(db) -> None:
    path, ids = db
    _tamper(
        path,
        "DELETE FROM trace_steps WHERE trace_id = ?",
        "DELETE FROM traces WHERE trace_id = ?",
        params=(ids[-1],),
    )
    with TraceStore(path) as traces:
        new = traces.append(_record(99))
        report = traces.verify()
    assert new.seq == N + 1
    assert report.first_bad is not None and report.first_bad.trace_id == new.trace_id
    assert f"seq {N} missing" in report.first_bad.problem


def test_anchor_catches_a_tail_deleted_with_the_counter_reset(db, capsys) -> None:
    path, ids = db
    with TraceStore(path) as traces:
        seq, head = traces.head()  # published elsewhere at the time
    _tamper(
        path,
        "DELETE FROM trace_steps WHERE trace_id = ?",
        "DELETE FROM traces WHERE trace_id = ?",
        params=(ids[-1],),
    )
    _tamper(path, f"UPDATE sqlite_sequence SET seq = {N - 1} WHERE name = 'traces'")
    assert _verify(path).ok  # the file alone cannot tell
    code, out = _cli(path, capsys, "--anchor", f"{seq}:{head}")
    assert code == EXIT_TAMPERED
    assert "no longer in the chain" in out
    capsys.readouterr()


def test_anchor_still_in_the_chain_passes(db, capsys) -> None:
    path, _ = db
    with TraceStore(path) as traces:
        seq, head = traces.head()
        traces.append(_record(50))
    code, out = _cli(path, capsys, "--anchor", f"{seq}:{head}")
    assert code == 0, out
    code, _ = _cli(path, capsys, "--anchor", f"{seq + 1}:{head}")
    assert code == EXIT_TAMPERED


def test_forged_row_appended_without_the_api_is_named(db, capsys) -> None:
    path, ids = db
    conn = sqlite3.connect(path)
    cols = [r[1] for r in conn.execute("PRAGMA table_info(traces)")]
    row = dict(
        zip(cols, conn.execute("SELECT * FROM traces WHERE seq = 2").fetchone(), strict=True)
    )
    conn.close()
    row.update(seq=N + 1, trace_id="forged-trace-0001")
    row["content_json"] = row["content_json"].replace(ids[1], "forged-trace-0001")
    _tamper(
        path,
        f"INSERT INTO traces ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
        params=tuple(row[c] for c in cols),
    )
    _assert_first_bad(path, capsys, N + 1, "forged-trace-0001", "")


def test_dropped_triggers_alone_only_warn(db, capsys) -> None:
    path, _ = db
    _tamper(path)  # drops the triggers, changes no row
    report = _verify(path)
    assert report.ok and not report.append_only_triggers
    code = main(["traces", "verify", "--db", str(path)])
    captured = capsys.readouterr()
    assert code == 0
    assert "append-only triggers" in captured.err


def test_verify_json_report(db, capsys) -> None:
    path, ids = db
    _tamper(path, "UPDATE traces SET kind = 'chat' WHERE seq = 2")
    code = main(["traces", "verify", "--db", str(path), "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == EXIT_TAMPERED
    assert payload["ok"] is False
    assert payload["first_bad"]["trace_id"] == ids[1]
    assert payload["first_bad"]["seq"] == 2
