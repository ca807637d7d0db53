"""Agent cases: loading, reading tool results, scoring answers, and a Claude run recorded at the
HTTP layer then replayed (no API) to the same answer and the same score."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.agent_eval import (
    AgentCase,
    AgentCaseError,
    FactSpec,
    RecordingTransport,
    ReplayTransport,
    _claude,
    ask,
    load_cases,
    resolve_path,
    run_cases,
    score_answer,
    states_value,
)
from tests.agent_fixtures import ScriptedAPI, agent_db, claude_message, claude_tool_use

CASES = Path(__file__).resolve().parents[1] / "evals" / "agent_cases"
RESULT = {
    "backends": [
        {"backend": "b0", "status": "ejected", "p95_ms": 30000.0},
        {"backend": "b2", "status": "degraded", "p95_ms": 1165.9},
    ],
    "total_rps": 30.27,
    "excluded": {"b0": "ejected", "b3": "stale"},
}
EVIDENCE = [{"tool": "fleet_state", "input": {}, "ok": True, "result": RESULT}]


def case(**kw: object) -> AgentCase:
    base = {"name": "c", "question": "q?", "state": {"scenario": "s.yaml", "until": "5m"}}
    return AgentCase.model_validate({**base, **kw})


def test_the_shipped_cases_load() -> None:
    cases = load_cases([CASES])
    assert len(cases) >= 7
    called = {t for c in cases for t in c.tools.must_call}
    for tool in ("fleet_state", "recommend_backend", "quality_timeline", "capacity_risk",
                 "drift_status", "experiments", "explain_decision"):  # fmt: skip
        assert tool in called
    assert all(c.facts or c.must_not_claim for c in cases)


def test_paths_into_tool_results() -> None:
    assert resolve_path(RESULT, "backends[status=ejected].backend") == ["b0"]
    assert resolve_path(RESULT, "backends[*].backend") == ["b0", "b2"]
    assert resolve_path(RESULT, "backends[1].p95_ms") == [1165.9]
    assert resolve_path(RESULT, "excluded.@keys") == ["b0", "b3"]
    assert resolve_path(RESULT, "backends[7].backend") == []
    assert resolve_path(RESULT, "nothing.here") == []


def test_what_counts_as_stating_a_value() -> None:
    f = FactSpec(tool="t", path="p")
    assert states_value("p95 1,166 ms on b2", 1165.9, f)  # rounded, thousands separator
    assert states_value("load 30.3 rps", 30.27, f)
    assert not states_value("load 33 rps", 30.27, f)
    assert states_value("about 13 rps", 12.6, f)  # a whole number states a figure >= 10
    assert not states_value("p=0.7", 0.766, f)  # small figures get no rounding slack
    assert states_value("p=0.77", 0.766, f)
    assert states_value("5.0% errors", 0.05, FactSpec(tool="t", path="p", scale=100))
    assert states_value("route to B2.", "b2", f)
    assert not states_value("b21 is fine", "b2", f)  # a word, not a prefix
    assert not states_value("rf-b2-x", "b2", f)


def test_scoring_an_answer() -> None:
    c = case(
        tools={"must_call": ["fleet_state"], "only": ["fleet_state", "recent_alerts"]},
        facts=[
            {"tool": "fleet_state", "path": "backends[status=ejected].backend"},
            {"tool": "fleet_state", "path": "backends[*].backend", "match": "all"},
            {"tool": "fleet_state", "path": "total_rps"},
            {"tool": "recent_alerts", "path": "alerts[0].subject"},
            {"text": "offline reasoner", "models": ["offline"]},
            {"pattern": r"\bejected\b"},
        ],
        must_not_claim=[{"pattern": "all backends are healthy"}],
    )
    good = "[offline reasoner] b0 is ejected; b2 is degraded at 1,166 ms. Load 30.3 rps."
    checks = score_answer(c, good, ["fleet_state"], EVIDENCE, ["b0", "b1", "b2", "b3"])
    failed = [(ch.name, ch.detail) for ch in checks if not ch.passed]
    assert failed == [("recent_alerts: alerts[0].subject", "recent_alerts was not called")]

    bad = "All backends are healthy: b0 and b9 are fine, 12 rps."
    checks = score_answer(
        c, bad, ["fleet_state", "find_decisions"], EVIDENCE, ["b0", "b1", "b2", "b3"], "claude"
    )
    by_name = {ch.name: ch for ch in checks}
    assert not by_name["calls nothing else"].passed
    assert "b2" in by_name["fleet_state: backends[*].backend"].detail
    assert not by_name["fleet_state: total_rps"].passed
    assert not by_name["does not claim /all backends are healthy/"].passed
    assert not by_name["names only real backends"].passed
    assert "'offline reasoner'" not in by_name  # an offline-only fact is not scored for Claude


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"facts": [{"tool": "fleet_state"}]}, "needs a `path`"),
        ({"facts": [{"text": "a", "tool": "t", "path": "p"}]}, "one of `text`, `pattern`"),
        ({"facts": [{"pattern": "(unclosed"}]}, "not a valid regular expression"),
        ({"must_not_claim": [{"pattern": "[bad"}]}, "not a valid regular expression"),
        ({"questoin": "typo"}, "questoin"),
    ],
)
def test_bad_cases_are_refused(tmp_path: Path, extra: dict, needle: str) -> None:
    (tmp_path / "s.yaml").write_text("name: s\n")
    data = {"name": "c", "question": "q?", "state": {"scenario": "s.yaml", "until": 60}, **extra}
    (tmp_path / "c.yaml").write_text(json.dumps(data))
    with pytest.raises(AgentCaseError, match=r"c\.yaml") as err:
        load_cases([tmp_path / "c.yaml"])
    assert needle in str(err.value)


def test_a_case_whose_scenario_is_missing_is_refused(tmp_path: Path) -> None:
    data = {"name": "c", "question": "q?", "state": {"scenario": "none.yaml", "until": 60}}
    (tmp_path / "c.yaml").write_text(json.dumps(data))
    with pytest.raises(AgentCaseError, match="is not a file"):
        load_cases([tmp_path])


# --- Claude recorded and replayed at the HTTP layer --------------------------------------------


def _scripted_claude() -> ScriptedAPI:
    return ScriptedAPI(
        claude_tool_use("toolu_01", "fleet_state", {}),
        lambda request: claude_message(
            [{"type": "text", "text": _answer_from(json.loads(request.content))}]
        ),
    )


def _answer_from(body: dict) -> str:
    """The scripted model writes its answer from the tool result it was sent (as a model would)."""
    for message in reversed(body["messages"]):
        for block in message.get("content") or []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                content = block["content"]
                text = content if isinstance(content, str) else content[0]["text"]
                start = text.index("{")
                state = json.loads(text[start : text.rindex("}") + 1])
                parts = [f"{b['backend']} is {b['status']}" for b in state["backends"]]
                return "Fleet: " + "; ".join(parts) + f". Load {state['total_rps']} rps."
    return "no tool result"


def test_a_claude_run_is_recorded_and_replays_to_the_same_answer(tmp_path: Path) -> None:
    import httpx2

    from agents.llm import Budget
    from agents.llm.claude import ClaudeConfig, ClaudeModel

    info = agent_db(tmp_path)
    c = case(
        question="What's the current state of our model fleet?",
        tools={"must_call": ["fleet_state"]},
        facts=[
            {"tool": "fleet_state", "path": "backends[*].backend", "match": "all"},
            {"tool": "fleet_state", "path": "total_rps"},
        ],
    )
    recorder = RecordingTransport(httpx2.MockTransport(_scripted_claude()))
    model = ClaudeModel(
        ClaudeConfig(max_retries=0),
        api_key="sk-ant-test-not-a-real-key",
        http_client=httpx2.Client(transport=recorder),
        budget=Budget(calls_per_minute=None, tokens_per_hour=None),
    )
    first = ask(c, info.path, model)
    assert first.llm == "claude" and first.tools_called == ["fleet_state"]
    assert len(recorder.exchanges) == 2
    recording = json.dumps(recorder.exchanges)
    assert "sk-ant-test" not in recording  # headers (the key) are never recorded
    assert recorder.exchanges[0]["request"]["body"]["messages"][0]["content"] == c.question

    replay = ReplayTransport(json.loads(recording))
    second = ask(c, info.path, _claude(None, replay, model.model_id))
    assert second.answer == first.answer
    assert replay.position == 2 and replay.mismatches == [] and not replay.exhausted
    fleet = ["b0", "b1", "b2", "b3"]
    s1 = score_answer(c, first.answer, first.tools_called, first.evidence, fleet, "claude")
    s2 = score_answer(c, second.answer, second.tools_called, second.evidence, fleet, "claude")
    assert [x.passed for x in s1] == [x.passed for x in s2]
    assert all(x.passed for x in s1)


def test_replay_counts_divergence_and_exhaustion() -> None:
    import httpx2

    ex = [{"request": {"body": {"a": 1}}, "response": {"status": 200, "body": {"ok": True}}}]
    replay = ReplayTransport(ex)
    r = replay(httpx2.Request("POST", "http://x/v1/messages", json={"a": 2}))
    assert r.status_code == 200 and replay.mismatches == [0]
    assert replay(httpx2.Request("POST", "http://x/v1/messages", json={})).status_code == 400
    assert replay.exhausted


# --- the whole path: state, offline, Claude recorded, Claude replayed ---------------------------

TINY = """\
name: tiny_failure
seed: 5
duration_s: 6m
forecaster: {history_hours: 1, n_estimators: 4, max_depth: 6}
chaos:
  - {kind: backend_failure, backend: b0, at: 3m}
"""


def test_run_cases_offline_then_claude_recorded_then_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tiny.yaml").write_text(TINY)
    spec = {
        "name": "fleet_now",
        "question": "What's the current state of our model fleet?",
        "state": {
            "scenario": "tiny.yaml",
            "until": "5m",
            "forecaster": {"history_hours": 1, "n_estimators": 4, "max_depth": 6},
        },
        "tools": {"must_call": ["fleet_state"]},
        "facts": [
            {"tool": "fleet_state", "path": "backends[*].backend", "match": "all"},
            {"text": "offline reasoner", "models": ["offline"]},
        ],
        "must_not_claim": [{"pattern": "all backends are healthy"}],
    }
    (tmp_path / "case.yaml").write_text(json.dumps(spec))
    cases = load_cases([tmp_path / "case.yaml"])
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-a-real-key")
    import httpx2

    out = tmp_path / "out"
    result = run_cases(
        cases,
        models=["offline", "claude"],
        out_dir=out,
        claude_transport=httpx2.MockTransport(_scripted_claude()),
    )
    offline, claude = result.runs
    assert offline.passed and offline.llm == "offline", offline.checks
    assert claude.passed and claude.llm == "claude", claude.checks
    saved = json.loads((out / "agents.json").read_text())
    assert saved["models"]["offline"]["passed"] == 1
    assert (out / "recordings" / "fleet_now.json").is_file()

    replayed = run_cases(
        cases, models=["claude-replay"], out_dir=tmp_path / "again", replay_dir=out / "recordings"
    )
    (run,) = replayed.runs
    assert run.passed and run.answer == claude.answer
    assert run.replay == {"exchanges": 2, "used": 2, "request_mismatches": [], "exhausted": False}


# --- the committed suite ---------------------------------------------------------------------


def test_the_suite_covers_real_use() -> None:
    cases = load_cases([CASES])
    assert len(cases) >= 40
    by = {
        "follow-ups": [c for c in cases if c.thread],
        "out of scope (no tool at all)": [c for c in cases if c.tools.only == []],
        "unknown entities": [c for c in cases if c.name.startswith("unknown_")],
        "time windows": [
            c for c in cases if any({"since", "around"} & set(w.args) for w in c.tools.called_with)
        ],
        "injection through the question": [
            c for c in cases if c.name.startswith("injection_question")
        ],
        "injection through data": [
            c for c in cases if {"injected_backend", "injected_metadata"} & set(c.state.setup)
        ],
        "approvals": [c for c in cases if "approvals" in c.tools.must_call],
        "ingested telemetry": [c for c in cases if c.state.ingest],
    }
    thin = {k: len(v) for k, v in by.items() if len(v) < 2}
    assert not thin, thin


RECORDINGS = CASES / "recordings"


@pytest.mark.parametrize(
    "recording",
    sorted(RECORDINGS.glob("*.json")) if RECORDINGS.is_dir() else [],
    ids=lambda p: p.stem,
)
def test_committed_recordings_replay(recording: Path, tmp_path: Path) -> None:
    """Every committed Claude recording replays through the real SDK to a passing case."""
    [case] = [c for c in load_cases([CASES]) if c.name == recording.stem]
    result = run_cases([case], models=["claude-replay"], out_dir=tmp_path, replay_dir=RECORDINGS)
    [run] = result.runs
    assert run.replay is not None and not run.replay["exhausted"], run.replay
    assert run.passed, [c.to_json() for c in run.checks if not c.passed]


def test_called_with_and_must_not_call() -> None:
    c = case(
        tools={
            "called_with": [{"tool": "fleet_state", "args": {"since": "-1h"}}],
            "must_not_call": ["recommend_backend"],
        }
    )
    made = [{"tool": "fleet_state", "input": {"since": "-1h", "x": 1}, "ok": True, "result": {}}]
    assert all(ch.passed for ch in score_answer(c, "", ["fleet_state"], made))
    wrong = [{"tool": "fleet_state", "input": {"since": "-2h"}, "ok": True, "result": {}}]
    checks = score_answer(c, "", ["fleet_state", "recommend_backend"], wrong)
    assert [ch.passed for ch in checks] == [False, False]
