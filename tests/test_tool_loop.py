"""The shared tool loop, driven by a scripted "next turn" function (no model, no network)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, Field, ValidationError

from agents.llm.base import (
    LLMError,
    ModelReply,
    TokenUsage,
    ToolResult,
    ToolSpec,
    TurnRequest,
    schema_errors,
)
from agents.tool_loop import MAX_TOOL_RESULT_CHARS, run_tool_loop, tool_result_json


class ForecastQuery(BaseModel):
    backend_id: str
    horizon_minutes: int = Field(ge=1, le=60)


FORECAST = ToolSpec.from_model("forecast", "Forecast with intervals.", ForecastQuery)
ALERTS = ToolSpec(
    name="recent_alerts",
    description="Alerts since a time.",
    input_schema={
        "type": "object",
        "properties": {"since": {"type": "string"}, "limit": {"type": "integer", "minimum": 1}},
        "required": ["since"],
        "additionalProperties": False,
    },
)
TOOLS = [FORECAST, ALERTS]
QUESTION = [{"role": "user", "content": "What capacity risks do we take in the next 5 minutes?"}]


def reply(*blocks: dict[str, Any], stop: str = "end_turn", **extra: Any) -> ModelReply:
    return ModelReply(model_id="scripted-1", content=list(blocks), stop_reason=stop, **extra)


def say(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def use(call_id: str, name: str, tool_input: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": tool_input}


class Script:
    """A next-turn function that replays replies and keeps each request it was given."""

    def __init__(self, *replies: ModelReply | Callable[[TurnRequest], ModelReply]) -> None:
        self.replies = list(replies)
        self.requests: list[TurnRequest] = []

    def __call__(self, request: TurnRequest) -> ModelReply:
        self.requests.append(request)
        step = self.replies.pop(0)
        return step(request) if callable(step) else step


class Tools:
    def __init__(self, **results: ToolResult | Exception | Any) -> None:
        self.results = results
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, tool_input: dict[str, Any]) -> ToolResult:
        self.calls.append((name, tool_input))
        result = self.results.get(name, ToolResult(content={"ok": True}))
        if isinstance(result, Exception):
            raise result
        return result


def loop(script: Script, execute: Callable[..., Any] | None = None, **kwargs: Any):
    return run_tool_loop(
        model_name="scripted",
        model_id="scripted-1",
        system="system prompt",
        messages=kwargs.pop("messages", QUESTION),
        tools=kwargs.pop("tools", TOOLS),
        execute=execute or Tools(),
        next_turn=script,
        **kwargs,
    )


def test_plain_answer_takes_one_turn() -> None:
    script = Script(reply(say("No risks."), usage=TokenUsage(input_tokens=10, output_tokens=3)))
    run = loop(script)
    assert run.ok and run.final_text == "No risks." and run.stop_reason == "end_turn"
    assert len(run.turns) == 1 and run.usage.input_tokens == 10
    assert script.requests[0].messages == QUESTION
    assert script.requests[0].turn_index == 0 and script.requests[0].deadline is None
    assert "1 messages" in run.turns[0].input_summary


def test_tool_round_trip_feeds_results_back_as_json_tool_result_blocks() -> None:
    forecast = ToolResult(content={"backend": "b-us-2", "p95_ms": [180.0, 240.0], "at": "10:05"})
    script = Script(
        reply(
            use("t1", "forecast", {"backend_id": "b-us-2", "horizon_minutes": 5}), stop="tool_use"
        ),
        reply(say("b-us-2 may pass its SLA at 10:05.")),
    )
    tools = Tools(forecast=forecast)
    run = loop(script, tools)

    assert run.ok and run.final_text.startswith("b-us-2")
    assert tools.calls == [("forecast", {"backend_id": "b-us-2", "horizon_minutes": 5})]
    second = script.requests[1]
    assert second.messages[1]["role"] == "assistant"
    assert second.messages[2] == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "t1",
                "content": tool_result_json(forecast.content),
                "is_error": False,
            }
        ],
    }
    # the offline reasoner reads the same results without parsing JSON back
    assert [c.result.content for c in second.tool_calls] == [forecast.content]


def test_several_tool_calls_in_one_turn_all_run_in_order() -> None:
    script = Script(
        reply(
            use("t1", "recent_alerts", {"since": "09:00"}),
            use("t2", "forecast", {"backend_id": "b1", "horizon_minutes": 5}),
            stop="tool_use",
        ),
        reply(say("done")),
    )
    tools = Tools()
    run = loop(script, tools)
    assert [name for name, _ in tools.calls] == ["recent_alerts", "forecast"]
    ids = [b["tool_use_id"] for b in script.requests[1].messages[-1]["content"]]
    assert ids == ["t1", "t2"] and len(run.turns[0].tool_calls) == 2


def test_tool_exception_becomes_an_error_result_and_the_loop_goes_on() -> None:
    script = Script(
        reply(use("t1", "forecast", {"backend_id": "b9", "horizon_minutes": 5}), stop="tool_use"),
        reply(say("The forecast for b9 is unavailable.")),
    )
    run = loop(script, Tools(forecast=KeyError("unknown backend b9")))
    assert run.ok
    (call,) = run.tool_calls
    assert call.result.is_error and "KeyError" in call.result.content["error"]
    block = script.requests[1].messages[-1]["content"][0]
    assert block["is_error"] is True and "unknown backend b9" in block["content"]


def test_unknown_tool_is_answered_with_the_available_names() -> None:
    script = Script(reply(use("t1", "drop_tables", {}), stop="tool_use"), reply(say("ok")))
    tools = Tools()
    run = loop(script, tools)
    assert tools.calls == []
    (call,) = run.tool_calls
    assert not call.input_valid
    assert call.result.content["available"] == ["forecast", "recent_alerts"]


def test_invalid_input_is_rejected_before_the_tool_runs() -> None:
    script = Script(
        reply(use("t1", "recent_alerts", {"since": 9, "extra": True}), stop="tool_use"),
        reply(say("ok")),
    )
    tools = Tools()
    run = loop(script, tools)
    assert run.ok and tools.calls == []
    problems = run.tool_calls[0].result.content["problems"]
    assert any("since" in p for p in problems) and any("extra" in p for p in problems)


def test_repeated_malformed_tool_input_ends_the_run() -> None:
    bad = {"backend_id": "b1", "horizon_minutes": 0}
    script = Script(
        reply(use("t1", "forecast", bad), stop="tool_use"),
        reply(use("t2", "forecast", bad), stop="tool_use"),
    )
    run = loop(script)
    assert run.error.kind == "malformed_tool_input"
    assert len(run.turns) == 2 and not any(c.input_valid for c in run.tool_calls)


def test_non_object_tool_input_is_malformed() -> None:
    script = Script(reply(use("t1", "forecast", "b1 please"), stop="tool_use"), reply(say("ok")))
    run = loop(script)
    call = run.tool_calls[0]
    assert not call.input_valid and call.input == {"_raw": "b1 please"}


def test_max_turns_bounds_a_model_that_never_stops_calling_tools() -> None:
    calls = [
        reply(use(f"t{i}", "recent_alerts", {"since": "09:00"}), say(f"turn {i}"), stop="tool_use")
        for i in range(3)
    ]
    tools = Tools()
    run = loop(Script(*calls), tools, max_turns=3)
    assert run.error.kind == "max_turns" and len(run.turns) == 3 and len(tools.calls) == 3
    assert run.final_text == "turn 2"


def test_terminal_tool_ends_the_run_without_another_model_turn() -> None:
    script = Script(
        reply(use("t1", "recent_alerts", {"since": "09:00"}), stop="tool_use"),
    )
    run = loop(script, Tools(recent_alerts=ToolResult(content={"accepted": True}, terminal=True)))
    assert run.ok and run.stop_reason == "terminal_tool" and len(script.requests) == 1
    assert run.tool_calls[-1].result.content == {"accepted": True}


def test_model_errors_end_the_run_and_keep_the_trace() -> None:
    budget = LLMError(kind="budget_exhausted", message="call budget exhausted")
    run = loop(Script(ModelReply(model_id="scripted-1", attempts=0, error=budget)))
    assert run.error == budget and run.stop_reason == "error"
    assert len(run.turns) == 1 and run.turns[0].error == budget and run.turns[0].attempts == 0


@pytest.mark.parametrize(
    ("stop", "kind"),
    [
        ("refusal", "refusal"),
        ("max_tokens", "max_tokens"),
        ("model_context_window_exceeded", "max_tokens"),
        ("something_new", "api_error"),
    ],
)
def test_stop_reasons_that_are_not_answers(stop: str, kind: str) -> None:
    run = loop(Script(reply(say("partial"), stop=stop)))
    assert run.error.kind == kind and run.stop_reason == stop and run.final_text == "partial"


def test_tool_use_stop_without_tool_blocks_is_an_api_error() -> None:
    run = loop(Script(reply(say("hmm"), stop="tool_use")))
    assert run.error.kind == "api_error"


def test_pause_turn_continues_with_the_paused_content() -> None:
    script = Script(reply(say("thinking..."), stop="pause_turn"), reply(say("answer")))
    run = loop(script)
    assert run.ok and run.final_text == "answer"
    assert script.requests[1].messages[-1] == {"role": "assistant", "content": [say("thinking...")]}


def test_a_raising_next_turn_is_recorded_not_raised() -> None:
    def broken(request: TurnRequest) -> ModelReply:
        raise RuntimeError("adapter bug")

    run = loop(Script(broken))
    assert run.error.kind == "api_error" and "adapter bug" in run.error.message


def test_deadline_is_checked_before_every_turn() -> None:
    now = [0.0]
    script = Script(
        reply(use("t1", "recent_alerts", {"since": "09:00"}), stop="tool_use"),
        reply(say("never asked")),
    )

    def slow_tools(name: str, tool_input: dict[str, Any]) -> ToolResult:
        now[0] += 2.0
        return ToolResult(content=[])

    run = loop(script, slow_tools, deadline_s=1.5, clock=lambda: now[0])
    assert run.error.kind == "timeout" and len(script.requests) == 1
    assert script.requests[0].deadline == pytest.approx(1.5)
    assert run.tool_calls[0].duration_s == pytest.approx(2.0)
    assert run.duration_s == pytest.approx(2.0)


def test_usage_and_cost_are_summed_over_turns() -> None:
    script = Script(
        reply(
            use("t1", "recent_alerts", {"since": "09:00"}),
            stop="tool_use",
            usage=TokenUsage(input_tokens=10, output_tokens=5, cache_write_tokens=100),
            cost_usd=0.002,
        ),
        reply(say("ok"), usage=TokenUsage(input_tokens=12, cache_read_tokens=100), cost_usd=0.001),
    )
    run = loop(script, cost_basis="scripted")
    assert run.usage == TokenUsage(
        input_tokens=22, output_tokens=5, cache_write_tokens=100, cache_read_tokens=100
    )
    assert run.cost_usd == pytest.approx(0.003) and run.cost_basis == "scripted"


# --- tool results as JSON data ---


def test_tool_results_are_finite_json() -> None:
    class Point(BaseModel):
        value: float

    content = {
        "nan": math.nan,
        "inf": [math.inf, 1.5],
        "when": datetime(2025, 1, 1, tzinfo=UTC),
        "model": Point(value=2.0),
        "tuple": (1, 2),
    }
    assert json.loads(tool_result_json(content)) == {
        "nan": None,
        "inf": [None, 1.5],
        "when": "2025-01-01T00:00:00+00:00",
        "model": {"value": 2.0},
        "tuple": [1, 2],
    }


def test_oversized_tool_results_are_truncated_visibly() -> None:
    text = tool_result_json({"rows": ["x" * 100] * 1000})
    parsed = json.loads(text)
    assert parsed["truncated"] is True and parsed["original_chars"] > MAX_TOOL_RESULT_CHARS
    assert len(parsed["prefix"]) == MAX_TOOL_RESULT_CHARS


def test_unserializable_tool_result_becomes_a_tool_error() -> None:
    script = Script(
        reply(use("t1", "recent_alerts", {"since": "09:00"}), stop="tool_use"), reply(say("ok"))
    )
    run = loop(script, Tools(recent_alerts=ToolResult(content={"handle": object()})))
    assert run.ok and run.tool_calls[0].result.is_error
    assert "not JSON-serializable" in run.tool_calls[0].result.content["error"]


def test_executor_returning_the_wrong_type_is_a_tool_error() -> None:
    script = Script(
        reply(use("t1", "recent_alerts", {"since": "09:00"}), stop="tool_use"), reply(say("ok"))
    )
    run = loop(script, lambda name, tool_input: {"raw": "dict"})
    assert run.tool_calls[0].result.is_error


# --- caller bugs are ValueErrors, raised before any model call ---


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_turns": 0},
        {"deadline_s": 0},
        {"deadline_s": -1.0},
        {"deadline_s": math.nan},
        {"deadline_s": math.inf},
        {"messages": []},
        {"messages": [{"role": "assistant", "content": "hi"}]},
        {"messages": [{"role": "system", "content": "hi"}]},
        {"tools": [ALERTS, ALERTS]},
    ],
)
def test_bad_arguments_raise_before_calling_the_model(kwargs: dict[str, Any]) -> None:
    script = Script()
    with pytest.raises(ValueError):
        loop(script, **kwargs)
    assert script.requests == []


# --- ToolSpec and the schema checker ---


def test_tool_spec_validates_its_name_and_schema() -> None:
    with pytest.raises(ValidationError):
        ToolSpec(name="has space", description="", input_schema={"type": "object"})
    with pytest.raises(ValidationError):
        ToolSpec(name="ok", description="", input_schema={"type": "array"})
    assert "input_model" not in FORECAST.model_dump()
    assert FORECAST.to_api()["input_schema"]["required"] == ["backend_id", "horizon_minutes"]


def test_schema_checker_covers_the_common_keywords() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 0, "maximum": 10},
            "kind": {"enum": ["a", "b"]},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
            "opt": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "ref": {"$ref": "#/$defs/Window"},
        },
        "required": ["n"],
        "$defs": {"Window": {"type": "object", "properties": {"minutes": {"type": "number"}}}},
    }
    assert schema_errors(schema, {"n": 3, "kind": "a", "tags": ["x"], "opt": None}) == []
    assert schema_errors(schema, {"n": True}) == ["n: expected integer, got boolean"]
    assert schema_errors(schema, {"n": 11}) == ["n: must be <= 10"]
    assert schema_errors(schema, {}) == ["n: required"]
    assert schema_errors(schema, {"n": 1, "kind": "c"}) == ["kind: must be one of ['a', 'b']"]
    assert schema_errors(schema, {"n": 1, "tags": ["x", 2, "z"]}) == [
        "tags: allows at most 2 items",
        "tags[1]: expected string, got integer",
    ]
    assert schema_errors(schema, {"n": 1, "opt": 5}) == [
        "opt: matches none of the allowed shapes (anyOf)"
    ]
    assert schema_errors(schema, {"n": 1, "ref": {"minutes": "five"}}) == [
        "ref.minutes: expected number, got string"
    ]
    assert schema_errors({"type": "number"}, math.nan) == ["(root): number must be finite"]
