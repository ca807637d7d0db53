"""Commands that read never create or change a foreign file (issue 14, point 7), and a busy
database delays a reasoning trace instead of losing it (point 6)."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest

from arcpoint.cli import main
from context_api.store import Store
from context_api.trace_records import TraceRecord
from context_api.traces import TraceStore
from tests.agent_fixtures import agent_db


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "ARCPOINT_ANTHROPIC_API_KEY", "ARCPOINT_DB"):
        monkeypatch.delenv(name, raising=False)


def _foreign(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE parts (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO parts (name) VALUES ('bolt')")
    conn.commit()
    conn.close()
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


READERS = [
    ["ask", "fleet state?"],
    ["ask", "fleet state?", "--json"],
    ["models"],
    ["alerts"],
    ["traces", "list"],
    ["approvals"],
    ["monitor", "--once"],
]


@pytest.mark.parametrize("argv", READERS, ids=lambda a: " ".join(a))
@pytest.mark.parametrize("kind", ["foreign", "empty"])
def test_read_only_commands_refuse_a_file_that_is_not_arcpoint_s(
    tmp_path, capsys, monkeypatch, argv, kind
):
    if kind == "foreign":
        path = _foreign(tmp_path)
    else:
        path = tmp_path / "empty.db"
        path.write_bytes(b"")
    before = _digest(path)
    code = main([*argv, "--db", str(path)])
    out, err = capsys.readouterr()
    assert code == 1, (out, err)
    assert "Traceback" not in err
    assert "not an Arcpoint database" in (err + out) or "empty file" in (err + out)
    assert _digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no -wal, no new files


def test_chat_refuses_a_foreign_file(tmp_path, capsys, monkeypatch):
    path = _foreign(tmp_path)
    before = _digest(path)
    monkeypatch.setattr(sys, "stdin", io.StringIO("fleet?\n"))
    assert main(["chat", "--db", str(path)]) == 1
    assert "not an Arcpoint database" in capsys.readouterr().err
    assert _digest(path) == before


def test_chat_does_not_answer_a_mistyped_command(tmp_path, capsys, monkeypatch):
    info = agent_db(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO("/bogus\n"))
    assert main(["chat", "--db", str(info.path)]) == 0
    out = capsys.readouterr().out
    assert "unknown command '/bogus'" in out
    assert "offline reasoner]" not in out.split("unknown command")[1]


def _record(i: int) -> TraceRecord:
    now = time.time()
    return TraceRecord(
        trace_id=f"busy-{i}", kind="chat", started_at=now, ended_at=now, inputs={"q": i}
    )


def test_a_trace_waits_for_a_writer_that_holds_the_file_past_the_busy_timeout(tmp_path):
    db = tmp_path / "busy.db"
    Store(db).close()
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # a long write (a big ingest, a migration)
    released = threading.Event()

    def release() -> None:
        time.sleep(1.5)
        holder.execute("COMMIT")
        released.set()

    threading.Thread(target=release, daemon=True).start()
    with Store(db, busy_timeout_s=0.2, write_wait_s=20) as store:
        receipt = TraceStore(store).append(_record(1))
        assert released.is_set()  # it waited past its busy timeout instead of failing
        assert TraceStore(store).get(receipt.trace_id) is not None
    holder.close()


def test_a_writer_gives_up_within_its_bound(tmp_path):
    db = tmp_path / "busy.db"
    Store(db).close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with (
            Store(db, busy_timeout_s=0.1, write_wait_s=0.5) as store,
            pytest.raises(sqlite3.OperationalError, match="locked"),
        ):
            store.record_event("x")
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_ask_withholds_an_answer_whose_trace_cannot_be_written(tmp_path, capsys, monkeypatch):
    info = agent_db(tmp_path)

    def broken(self, records):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(TraceStore, "append_many", broken)
    code = main(["ask", "fleet state?", "--db", str(info.path), "--json"])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""  # no answer without its trace
    assert "could not be recorded" in err and "Traceback" not in err
    json.dumps(err)  # plain text
