"""The bounded tool loop shared by every model: ask, run the tools it asks for, repeat.

A model plugs in a "next turn" function (`TurnRequest -> ModelReply`); the loop owns everything
else, so Claude and the offline reasoner behave the same way: at most `max_turns` model turns, an
overall deadline, tool inputs validated against the tool's schema before anything runs (an invalid
one goes back to the model as an error result it can correct), tool exceptions caught, and tool
results handed back as quoted JSON data inside `tool_result` blocks, never as instructions.
Nothing raises through for model or tool failures: the `LLMRun` carries the error instead.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from datetime import date, datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel

from agents.llm.base import (
    ChatMessage,
    LLMError,
    LLMRun,
    LLMTurn,
    ModelReply,
    TokenUsage,
    ToolCallRecord,
    ToolExecutor,
    ToolResult,
    ToolSpec,
    TurnRequest,
)

log = logging.getLogger(__name__)

NextTurn = Callable[[TurnRequest], ModelReply]

MAX_TOOL_RESULT_CHARS = 16_000
MAX_INVALID_TOOL_INPUTS = 2


def run_tool_loop(
    *,
    model_name: str,
    model_id: str,
    system: str,
    messages: Sequence[ChatMessage | dict[str, Any]],
    tools: Sequence[ToolSpec],
    execute: ToolExecutor,
    next_turn: NextTurn,
    max_turns: int = 6,
    deadline_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    cost_basis: str = "",
    max_invalid_tool_inputs: int = MAX_INVALID_TOOL_INPUTS,
    max_tool_result_chars: int = MAX_TOOL_RESULT_CHARS,
) -> LLMRun:
    """Drive `next_turn` until the model answers, fails, or a bound is hit.

    Raises `ValueError` only for caller bugs (bad arguments), before any model call.
    """
    transcript = _check_arguments(messages, tools, max_turns, deadline_s)
    by_name = {tool.name: tool for tool in tools}
    start = clock()
    deadline = None if deadline_s is None else start + deadline_s
    turns: list[LLMTurn] = []
    calls_so_far: list[ToolCallRecord] = []
    invalid_inputs = 0

    def finish(error: LLMError | None, stop_reason: str | None, text: str = "") -> LLMRun:
        usage = sum((t.usage for t in turns), TokenUsage())
        run = LLMRun(
            model_name=model_name,
            model_id=model_id,
            final_text=text,
            stop_reason=stop_reason or "error",
            turns=turns,
            usage=usage,
            cost_usd=sum(t.cost_usd for t in turns),
            cost_basis=cost_basis,
            duration_s=max(0.0, clock() - start),
            error=error,
        )
        log.info(
            "llm run model=%s turns=%d stop=%s error=%s tokens_in=%d tokens_out=%d cost_usd=%.6f",
            model_id,
            len(turns),
            run.stop_reason,
            error.kind if error else None,
            usage.input_tokens,
            usage.output_tokens,
            run.cost_usd,
        )
        return run

    for index in range(max_turns):
        if deadline is not None and clock() >= deadline:
            return finish(
                LLMError(
                    kind="timeout",
                    message=f"deadline of {deadline_s}s passed before turn {index + 1}",
                ),
                turns[-1].stop_reason if turns else None,
            )
        request = TurnRequest(
            system=system,
            messages=[dict(m) for m in transcript],
            tools=list(tools),
            turn_index=index,
            deadline=deadline,
            tool_calls=list(calls_so_far),
        )
        reply = _safe_next_turn(next_turn, request, model_id)
        stop = reply.stop_reason
        tool_records: list[ToolCallRecord] = []
        loop_error: LLMError | None = reply.error
        terminal = False

        if loop_error is None and stop == "tool_use":
            uses = reply.tool_uses
            if not uses:
                loop_error = LLMError(
                    kind="api_error", message="stop_reason tool_use without tool_use blocks"
                )
            else:
                results = []
                for use in uses:
                    record = _run_tool(use, by_name, execute, clock, max_tool_result_chars)
                    tool_records.append(record)
                    invalid_inputs += 0 if record.input_valid else 1
                    terminal = terminal or (record.result.terminal and not record.result.is_error)
                    results.append(_tool_result_block(record, max_tool_result_chars))
                transcript.append({"role": "assistant", "content": reply.content})
                transcript.append({"role": "user", "content": results})
                calls_so_far.extend(tool_records)
                if invalid_inputs >= max_invalid_tool_inputs:
                    loop_error = LLMError(
                        kind="malformed_tool_input",
                        message=f"{invalid_inputs} tool inputs failed validation in this run",
                    )

        turns.append(_turn_record(index, request, reply, tool_records))
        if loop_error is not None:
            return finish(loop_error, stop, reply.text)
        if stop == "tool_use":
            if terminal:
                return finish(None, "terminal_tool", reply.text)
            continue
        if stop == "pause_turn":
            # The API paused a long turn; sending its content back lets it continue.
            transcript.append({"role": "assistant", "content": reply.content})
            continue
        if stop in ("end_turn", "stop_sequence"):
            return finish(None, stop, reply.text)
        return finish(_stop_reason_error(stop, reply), stop, reply.text)

    return finish(
        LLMError(kind="max_turns", message=f"no final answer within {max_turns} turns"),
        turns[-1].stop_reason if turns else None,
        "".join(b.get("text", "") for b in turns[-1].output if b.get("type") == "text")
        if turns
        else "",
    )


def tool_result_json(content: Any, limit: int = MAX_TOOL_RESULT_CHARS) -> str:
    """A tool's content as the JSON text the model sees: finite numbers, capped in length."""
    text = json.dumps(
        _jsonable(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")
    )
    if len(text) > limit:
        return json.dumps({"truncated": True, "original_chars": len(text), "prefix": text[:limit]})
    return text


def _check_arguments(
    messages: Sequence[ChatMessage | dict[str, Any]],
    tools: Sequence[ToolSpec],
    max_turns: int,
    deadline_s: float | None,
) -> list[dict[str, Any]]:
    if isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 1:
        raise ValueError(f"max_turns must be a positive integer, got {max_turns!r}")
    if deadline_s is not None and (
        isinstance(deadline_s, bool)
        or not isinstance(deadline_s, int | float)
        or not math.isfinite(deadline_s)
        or deadline_s <= 0
    ):
        raise ValueError(
            f"deadline_s must be a positive finite number of seconds or None, got {deadline_s!r}"
        )
    names = [tool.name for tool in tools]
    if len(set(names)) != len(names):
        raise ValueError(f"tool names must be unique, got {names}")
    parsed = [m if isinstance(m, ChatMessage) else ChatMessage.model_validate(m) for m in messages]
    if not parsed:
        raise ValueError("messages must contain at least one user message")
    if parsed[-1].role != "user":
        raise ValueError("the last message must come from the user")
    return [{"role": m.role, "content": m.content} for m in parsed]


def _safe_next_turn(next_turn: NextTurn, request: TurnRequest, model_id: str) -> ModelReply:
    try:
        return next_turn(request)
    except Exception as err:  # a model adapter bug must not take the caller down
        log.exception("next_turn raised; recording it as an api_error")
        return ModelReply(
            model_id=model_id,
            attempts=0,
            error=LLMError(
                kind="api_error", message=f"model adapter failed: {type(err).__name__}: {err}"
            ),
        )


def _run_tool(
    use: dict[str, Any],
    by_name: dict[str, ToolSpec],
    execute: ToolExecutor,
    clock: Callable[[], float],
    limit: int,
) -> ToolCallRecord:
    call_id, name, raw_input = str(use.get("id", "")), str(use.get("name", "")), use.get("input")
    tool_input = raw_input if isinstance(raw_input, dict) else {"_raw": raw_input}
    spec = by_name.get(name)
    if spec is None:
        result = ToolResult.error(f"unknown tool {name!r}", available=sorted(by_name))
        return ToolCallRecord(
            id=call_id, name=name, input=tool_input, input_valid=False, result=result, duration_s=0
        )
    problems = spec.input_errors(raw_input)
    if problems:
        result = ToolResult.error(
            "invalid tool input; fix it and call again", problems=problems[:20]
        )
        return ToolCallRecord(
            id=call_id, name=name, input=tool_input, input_valid=False, result=result, duration_s=0
        )
    started = clock()
    try:
        result = execute(name, dict(tool_input))
        if not isinstance(result, ToolResult):
            result = ToolResult.error(
                f"tool {name!r} returned {type(result).__name__}, not a ToolResult"
            )
        else:
            tool_result_json(
                result.content, limit
            )  # fail here, as the tool's error, if not JSON-able
    except Exception as err:
        log.warning("tool %s failed: %s: %s", name, type(err).__name__, err)
        result = ToolResult.error(f"tool {name!r} failed: {type(err).__name__}: {err}")
    return ToolCallRecord(
        id=call_id,
        name=name,
        input=tool_input,
        input_valid=True,
        result=result,
        duration_s=max(0.0, clock() - started),
    )


def _tool_result_block(record: ToolCallRecord, limit: int) -> dict[str, Any]:
    return {
        "type": "tool_result",
        "tool_use_id": record.id,
        "content": tool_result_json(record.result.content, limit),
        "is_error": record.result.is_error,
    }


def _turn_record(
    index: int, request: TurnRequest, reply: ModelReply, tool_records: list[ToolCallRecord]
) -> LLMTurn:
    return LLMTurn(
        index=index,
        model_id=reply.model_id,
        input_messages=len(request.messages),
        input_summary=_summarize(request),
        output=reply.content,
        stop_reason=reply.stop_reason,
        tool_calls=tool_records,
        usage=reply.usage,
        cost_usd=reply.cost_usd,
        latency_s=reply.latency_s,
        attempts=reply.attempts,
        message_id=reply.message_id,
        error=reply.error,
    )


def _summarize(request: TurnRequest) -> str:
    last = request.messages[-1]
    content = last["content"]
    if isinstance(content, str):
        tail = f"{last['role']}: {content[:160]!r}"
    else:
        kinds = [block.get("type", "?") for block in content]
        tail = f"{last['role']}: {len(kinds)} blocks ({', '.join(sorted(set(kinds)))})"
    return (
        f"system {len(request.system)} chars; {len(request.tools)} tools; "
        f"{len(request.messages)} messages; last {tail}"
    )


def _stop_reason_error(stop: str | None, reply: ModelReply) -> LLMError:
    if stop == "refusal":
        detail = f": {reply.stop_details}" if reply.stop_details else ""
        return LLMError(kind="refusal", message=f"the model declined to answer{detail}")
    if stop == "max_tokens":
        return LLMError(kind="max_tokens", message="the reply hit max_tokens before finishing")
    if stop == "model_context_window_exceeded":
        return LLMError(
            kind="max_tokens", message="the conversation exceeded the model's context window"
        )
    return LLMError(kind="api_error", message=f"unexpected stop_reason {stop!r}")


def _jsonable(value: Any) -> Any:
    """Plain JSON types only; non-finite floats become null (JSON has no NaN)."""
    if isinstance(value, BaseModel):
        return _jsonable(value.model_dump(mode="json"))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return _jsonable(value.value)
    if value is None or isinstance(value, str | int | bool):
        return value
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _jsonable(value.tolist())
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")
