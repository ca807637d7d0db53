"""The smaller things a new user hit (issue 14, point 10): a model endpoint that never answers,
a base URL with the wrong scheme, the offline footer after a failure, and command-line values
that must be refused up front."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from arcpoint.cli import main
from tests.agent_fixtures import agent_db


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "ARCPOINT_ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def silent_endpoint():
    """A local server that accepts connections and never answers (stops with the test)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(conn)  # held open, never read or answered

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    server.close()


def test_a_model_that_never_answers_costs_no_more_than_the_deadline(tmp_path, silent_endpoint):
    from agents.graph import OperatorGraph
    from agents.llm.claude import ClaudeConfig, ClaudeModel
    from context_api.api import ContextAPI
    from context_api.store import Store

    url, accepted = silent_endpoint
    info = agent_db(tmp_path)
    model = ClaudeModel(ClaudeConfig(), api_key="sk-test-not-a-key", base_url=url)
    deadline_s = 2.0
    with Store(info.path) as store:
        graph = OperatorGraph(ContextAPI(store), model, deadline_s=deadline_s)
        start = time.monotonic()
        result = graph.ask("What's the current state of the fleet?")
        elapsed = time.monotonic() - start
    assert accepted, "the model endpoint was never called"
    # The whole turn (the failed call, the offline answer, any handoff) within the deadline and
    # a little work after it; before the fix a silent endpoint held `ask` for a minute or more.
    assert elapsed < deadline_s + 8.0, elapsed
    assert result.llm == "offline"
    assert "could not answer" in result.answer
    # A key is set: the footer must not tell the user to set one.
    assert "Set ANTHROPIC_API_KEY" not in result.answer
    assert "check the model endpoint and key" in result.answer


def test_a_base_url_with_a_wrong_scheme_is_refused_up_front(tmp_path, capsys, monkeypatch):
    info = agent_db(tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-not-a-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "localhost:8080")
    code = main(["ask", "fleet state?", "--db", str(info.path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "must start with http:// or https://" in err and "Traceback" not in err


@pytest.mark.parametrize("width", ["0", "-3", "19", "wide"])
def test_traces_show_refuses_a_useless_width(capsys, width):
    with pytest.raises(SystemExit) as exit_:
        main(["traces", "show", "abcdef", "--width", width])
    assert exit_.value.code == 2
    assert "--width" in capsys.readouterr().err


def test_traces_export_into_a_missing_folder_is_a_clear_error(tmp_path, capsys):
    info = agent_db(tmp_path)
    out = tmp_path / "no" / "such" / "folder" / "traces.jsonl"
    code = main(["traces", "export", "--db", str(info.path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "does not exist" in err and "Traceback" not in err
    assert not out.parent.exists()


def test_traces_export_writes_where_asked(tmp_path, capsys):
    info = agent_db(tmp_path)
    out = Path(tmp_path) / "traces.jsonl"
    assert main(["traces", "export", "--db", str(info.path), "--out", str(out)]) == 0
    assert out.is_file()
    assert "exported" in capsys.readouterr().err
