"""The bounded model/tool cycle every agent runs, as a LangGraph graph (`AgentLoop`).

A model plugs in a "next turn" function (`TurnRequest -> ModelReply`); the graph owns everything
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
import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
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


class LoopState(TypedDict, total=False):
    """The loop's checkpointable state: plain JSON values only."""

    messages: Annotated[list[dict[str, Any]], operator.add]
    """The transcript in Messages API shape, for both models."""
    turns: Annotated[list[dict[str, Any]], operator.add]
    """One `LLMTurn` (as JSON) per model turn, its tool calls attached by the tools node."""
    calls: Annotated[list[dict[str, Any]], operator.add]
    """Every `ToolCallRecord` (as JSON) so far, with the turn it belongs to."""
    pending: list[dict[str, Any]]
    """The tool_use blocks of the last reply, for the tools node."""
    invalid_inputs: int
    stop: str | None
    text: str
    terminal: bool
    error: dict[str, Any] | None
    deadline: float | None
    """Absolute time on the loop's clock by which the run must end (None: no deadline)."""


@dataclass
class LoopContext:
    """What a run needs that is not state: the tool executor and the clock (never stored)."""

    execute: ToolExecutor
    clock: Callable[[], float] = time.monotonic


class AgentLoop:
    r"""One agent's model and tools as a compiled LangGraph graph::

        START -> model -> (tool_use?) -> tools -> (terminal, malformed or out of turns?) -> END
                   ^   \-> END                     |
                   '----------------------------------'

    The `model` node asks `next_turn` for one reply; the `tools` node validates each tool input
    against its spec, runs it through the run's executor and hands the results back as quoted
    JSON `tool_result` blocks; the conditions loop until the model answers, fails, calls a
    terminal tool, or a bound (turns, invalid inputs, deadline) is hit. `tool_choice` forces a
    tool on the first turn (the router's one-call escalation). Pass a `checkpointer` to keep the
    state between steps (a chat thread, a monitor run).
    """

    def __init__(
        self,
        *,
        name: str,
        model_name: str,
        model_id: str,
        system: str,
        tools: Sequence[ToolSpec],
        next_turn: NextTurn,
        max_turns: int = 6,
        cost_basis: str = "",
        tool_choice: dict[str, Any] | None = None,
        max_invalid_tool_inputs: int = MAX_INVALID_TOOL_INPUTS,
        max_tool_result_chars: int = MAX_TOOL_RESULT_CHARS,
        checkpointer: Any = None,
    ) -> None:
        if isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 1:
            raise ValueError(f"max_turns must be a positive integer, got {max_turns!r}")
        names = [tool.name for tool in tools]
        if len(set(names)) != len(names):
            raise ValueError(f"tool names must be unique, got {names}")
        self.name = name
        self.model_name = model_name
        self.model_id = model_id
        self.system = system
        self.tools = list(tools)
        self.by_name = {tool.name: tool for tool in tools}
        self.next_turn = next_turn
        self.max_turns = max_turns
        self.cost_basis = cost_basis
        self.tool_choice = tool_choice
        self.max_invalid = max_invalid_tool_inputs
        self.max_chars = max_tool_result_chars
        graph = StateGraph(LoopState, context_schema=LoopContext)
        graph.add_node("model", self._model)
        graph.add_node("tools", self._tools)
        graph.add_edge(START, "model")
        graph.add_conditional_edges("model", _after_model, ["model", "tools", END])
        graph.add_conditional_edges("tools", self._after_tools, ["model", END])
        self.graph = graph.compile(checkpointer=checkpointer, name=name)

    # -- nodes ------------------------------------------------------------------------------

    def _model(self, state: LoopState, runtime: Runtime[LoopContext]) -> dict[str, Any]:
        clock = runtime.context.clock
        index = len(state.get("turns") or [])
        deadline = state.get("deadline")
        if deadline is not None and clock() >= deadline:
            return _fail("timeout", f"deadline passed before turn {index + 1}", state)
        request = TurnRequest(
            system=self.system,
            messages=[dict(m) for m in state.get("messages") or []],
            tools=self.tools,
            turn_index=index,
            deadline=deadline,
            tool_calls=[
                ToolCallRecord.model_validate(c["record"]) for c in state.get("calls") or []
            ],
            tool_choice=self.tool_choice if index == 0 else None,
        )
        reply = _safe_next_turn(self.next_turn, request, self.model_id)
        turn = _turn_record(index, request, reply, []).model_dump(mode="json")
        out: dict[str, Any] = {
            "turns": [turn],
            "stop": reply.stop_reason,
            "text": reply.text,
            "pending": [],
        }
        if reply.error is not None:
            out["error"] = reply.error.model_dump(mode="json")
            return out
        stop = reply.stop_reason
        if stop == "tool_use":
            if not reply.tool_uses:
                out["error"] = _error("api_error", "stop_reason tool_use without tool_use blocks")
                return out
            out["pending"] = reply.tool_uses
            out["messages"] = [{"role": "assistant", "content": reply.content}]
        elif stop == "pause_turn":
            # The API paused a long turn; sending its content back lets it continue.
            out["messages"] = [{"role": "assistant", "content": reply.content}]
            if index + 1 >= self.max_turns:
                out["error"] = _max_turns(self.max_turns)
        elif stop not in ("end_turn", "stop_sequence"):
            out["error"] = _stop_reason_error(stop, reply).model_dump(mode="json")
        return out

    def _tools(self, state: LoopState, runtime: Runtime[LoopContext]) -> dict[str, Any]:
        ctx = runtime.context
        index = len(state.get("turns") or []) - 1
        records: list[ToolCallRecord] = []
        invalid = int(state.get("invalid_inputs") or 0)
        terminal = False
        for use in state.get("pending") or []:
            record = _run_tool(use, self.by_name, ctx.execute, ctx.clock, self.max_chars)
            records.append(record)
            invalid += 0 if record.input_valid else 1
            terminal = terminal or (record.result.terminal and not record.result.is_error)
        blocks = [_tool_result_block(r, self.max_chars) for r in records]
        out: dict[str, Any] = {
            "messages": [{"role": "user", "content": blocks}],
            "calls": [{"turn": index, "record": r.model_dump(mode="json")} for r in records],
            "invalid_inputs": invalid,
            "terminal": terminal,
            "pending": [],
        }
        if invalid >= self.max_invalid:
            out["error"] = _error(
                "malformed_tool_input", f"{invalid} tool inputs failed validation in this run"
            )
        elif not terminal and index + 1 >= self.max_turns:
            bad = [r.name for r in records if not r.input_valid]
            out["error"] = (
                _error("malformed_tool_input", f"invalid input to {bad} on the last turn")
                if bad
                else _max_turns(self.max_turns)
            )
        return out

    def _after_tools(self, state: LoopState) -> str:
        if state.get("error") is not None or state.get("terminal"):
            return END
        return "model"

    # -- running ----------------------------------------------------------------------------

    def start(
        self,
        messages: Sequence[ChatMessage | dict[str, Any]],
        *,
        deadline_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> LoopState:
        """The input state of a run (validates the arguments; raises ValueError on a bad one)."""
        transcript = _check_arguments(messages, deadline_s)
        return {
            "messages": transcript,
            "invalid_inputs": 0,
            "terminal": False,
            "error": None,
            "deadline": None if deadline_s is None else clock() + deadline_s,
        }

    def run(
        self,
        messages: Sequence[ChatMessage | dict[str, Any]],
        execute: ToolExecutor,
        *,
        deadline_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        config: dict[str, Any] | None = None,
    ) -> LLMRun:
        """Run the graph to the end and return the run's record."""
        started = clock()
        state = self.start(messages, deadline_s=deadline_s, clock=clock)
        final = self.graph.invoke(
            state, config=config, context=LoopContext(execute=execute, clock=clock)
        )
        return self.record(final, max(0.0, clock() - started))

    def record(self, state: dict[str, Any], duration_s: float) -> LLMRun:
        """The `LLMRun` of a finished state: turns with their tool calls, usage, cost, error."""
        turns = [LLMTurn.model_validate(t) for t in state.get("turns") or []]
        for call in state.get("calls") or []:
            turns[call["turn"]].tool_calls.append(ToolCallRecord.model_validate(call["record"]))
        err = state.get("error")
        error = LLMError.model_validate(err) if err else None
        stop = state.get("stop")
        if error is None and state.get("terminal"):
            stop = "terminal_tool"
        usage = sum((t.usage for t in turns), TokenUsage())
        run = LLMRun(
            model_name=self.model_name,
            model_id=self.model_id,
            final_text=state.get("text") or "",
            stop_reason=stop or "error",
            turns=turns,
            usage=usage,
            cost_usd=sum(t.cost_usd for t in turns),
            cost_basis=self.cost_basis,
            duration_s=duration_s,
            error=error,
        )
        log.info(
            "llm run agent=%s model=%s turns=%d stop=%s error=%s tokens_in=%d tokens_out=%d"
            " cost_usd=%.6f",
            self.name,
            self.model_id,
            len(turns),
            run.stop_reason,
            error.kind if error else None,
            usage.input_tokens,
            usage.output_tokens,
            run.cost_usd,
        )
        return run


def _after_model(state: LoopState) -> str:
    if state.get("error") is not None:
        return END
    stop = state.get("stop")
    if stop == "tool_use":
        return "tools"
    if stop == "pause_turn":
        return "model"
    return END


def _error(kind: str, message: str) -> dict[str, Any]:
    return LLMError(kind=kind, message=message).model_dump(mode="json")  # type: ignore[arg-type]


def _max_turns(n: int) -> dict[str, Any]:
    return _error("max_turns", f"no final answer within {n} turns")


def _fail(kind: str, message: str, state: LoopState) -> dict[str, Any]:
    return {"error": _error(kind, message), "pending": []}


class RunsAgentLoop:
    """`LLMModel.run` for a model that provides `next_turn`: its turns through a one-off
    `AgentLoop` (the agents build their own loops; `run` serves one-shot callers and tests)."""

    name: str
    model_id: str
    cost_basis: str
    next_turn: NextTurn

    def loop_clock(self) -> Callable[[], float]:
        return time.monotonic

    def run(
        self,
        system: str,
        messages: Sequence[ChatMessage | dict[str, Any]],
        tools: Sequence[ToolSpec],
        execute: ToolExecutor,
        *,
        max_turns: int = 6,
        deadline_s: float | None = None,
    ) -> LLMRun:
        return run_tool_loop(
            model_name=self.name,
            model_id=self.model_id,
            system=system,
            messages=messages,
            tools=tools,
            execute=execute,
            next_turn=self.next_turn,
            max_turns=max_turns,
            deadline_s=deadline_s,
            clock=self.loop_clock(),
            cost_basis=self.cost_basis,
        )


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
    tool_choice: dict[str, Any] | None = None,
    max_invalid_tool_inputs: int = MAX_INVALID_TOOL_INPUTS,
    max_tool_result_chars: int = MAX_TOOL_RESULT_CHARS,
) -> LLMRun:
    """Run `next_turn` over `tools` through a one-off `AgentLoop` until it answers or fails.

    Raises `ValueError` only for caller bugs (bad arguments), before any model call.
    """
    loop = AgentLoop(
        name=f"{model_name}_loop",
        model_name=model_name,
        model_id=model_id,
        system=system,
        tools=tools,
        next_turn=next_turn,
        max_turns=max_turns,
        cost_basis=cost_basis,
        tool_choice=tool_choice,
        max_invalid_tool_inputs=max_invalid_tool_inputs,
        max_tool_result_chars=max_tool_result_chars,
    )
    return loop.run(messages, execute, deadline_s=deadline_s, clock=clock)


def tool_result_json(content: Any, limit: int = MAX_TOOL_RESULT_CHARS) -> str:
    """A tool's content as the JSON text the model sees: finite numbers, capped in length."""
    text = json.dumps(
        _jsonable(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")
    )
    if len(text) > limit:
        return json.dumps({"truncated": True, "original_chars": len(text), "prefix": text[:limit]})
    return text


def _check_arguments(
    messages: Sequence[ChatMessage | dict[str, Any]], deadline_s: float | None
) -> list[dict[str, Any]]:
    if deadline_s is not None and (
        isinstance(deadline_s, bool)
        or not isinstance(deadline_s, int | float)
        or not math.isfinite(deadline_s)
        or deadline_s <= 0
    ):
        raise ValueError(
            f"deadline_s must be a positive finite number of seconds or None, got {deadline_s!r}"
        )
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
