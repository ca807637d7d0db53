"""`arcpoint ask` and `arcpoint chat` on the fixture database: JSON shape, traces, resumable
threads, clean exit at end of input, and a clear hint when there is nothing to answer from."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from arcpoint.cli import main
from context_api.api import EMPTY_HINT
from context_api.store import Store
from context_api.traces import TraceStore
from tests.agent_fixtures import FixtureInfo, agent_db


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "ARCPOINT_ANTHROPIC_API_KEY", "ARCPOINT_DB"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def db(tmp_path: Path) -> FixtureInfo:
    return agent_db(tmp_path)


def test_ask_json_has_answer_trace_tools_llm_and_evidence(
    db: FixtureInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(
        [
            "ask",
            "What capacity risks are we taking in the next 5 minutes?",
            "--db",
            str(db.path),
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert {"answer", "trace_id", "tools_called", "llm", "evidence"} <= set(out)
    assert out["llm"] == "offline" and out["tools_called"] == ["capacity_risk"]
    assert out["answer"].startswith("[offline reasoner]")
    assert out["evidence"][0]["tool"] == "capacity_risk"
    assert out["evidence"][0]["result"]["minutes"] == 5.0
    with Store(db.path) as store:
        trace = TraceStore(store).get(out["trace_id"])
    assert trace is not None and trace.final == out["answer"]


def test_ask_plain_prints_the_answer_and_names_the_trace(
    db: FixtureInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "ask",
                "Which backend should I use for a premium request right now?",
                "--db",
                str(db.path),
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "For a premium request (SLA 250 ms)" in captured.out
    assert "arcpoint traces show" in captured.err


def test_ask_without_a_database_says_what_to_run_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.db"
    assert main(["ask", "fleet state?", "--db", str(missing)]) == 1
    assert "arcpoint demo" in capsys.readouterr().err
    assert not missing.exists()
    assert main(["ask", "fleet state?", "--db", str(missing), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["error"] == "no_data" and "arcpoint demo" in out["answer"]
    assert out["trace_id"] is None and out["tools_called"] == []


def test_ask_on_an_empty_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.db"
    Store(path).close()
    assert main(["ask", "fleet state?", "--db", str(path)]) == 1
    assert EMPTY_HINT in capsys.readouterr().err


def chat(monkeypatch: pytest.MonkeyPatch, lines: str, *args: str) -> int:
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))
    return main(["chat", *args])


def test_chat_answers_each_line_and_resumes_by_thread(
    db: FixtureInfo, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = chat(
        monkeypatch,
        "What's the current state of our model fleet?\n\n/thread\n/history\n",
        "--db",
        str(db.path),
        "--thread",
        "sre-1",
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count("arcpoint> [offline reasoner]") == 1
    assert "user> What's the current state of our model fleet?" in out
    assert "Resume with: arcpoint chat --thread sre-1" in out

    rc = chat(
        monkeypatch,
        "Why did quality drop in the last hour?\n/quit\nnot asked\n",
        "--db",
        str(db.path),
        "--thread",
        "sre-1",
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "Resuming thread sre-1: 2 earlier messages." in out
    assert "Quality dropped between" in out
    assert "not asked" not in out
    with Store(db.path) as store:
        chats = TraceStore(store).list(kind="chat", parent_id="sre-1")
    assert len(chats) == 2


def test_chat_ends_cleanly_at_end_of_input(
    db: FixtureInfo, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert chat(monkeypatch, "", "--db", str(db.path)) == 0
    out = capsys.readouterr().out
    assert "New thread chat-" in out and "Bye." in out


def test_chat_without_a_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert chat(monkeypatch, "hello\n", "--db", str(tmp_path / "none.db")) == 1
    assert "arcpoint demo" in capsys.readouterr().err


def test_chat_process_with_no_stdin_exits(db: FixtureInfo) -> None:
    """What CI does: no terminal, nothing on stdin. It must end, not wait."""
    done = subprocess.run(
        [sys.executable, "-m", "arcpoint", "chat", "--db", str(db.path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"},
    )
    assert done.returncode == 0, done.stderr
    assert "Bye." in done.stdout


def test_ask_can_run_a_monitor(db: FixtureInfo, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", "--monitor", "drift_monitor", "--db", str(db.path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    [report] = out["reports"]
    assert report["agent"] == "drift_monitor" and "drift_status" in report["tools_called"]
    with Store(db.path) as store:
        assert TraceStore(store).get(out["trace_id"]).kind == "monitor"
    assert main(["ask", "--db", str(db.path)]) == 2
