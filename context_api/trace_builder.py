"""Recording a trace as the work happens: `TraceBuilder` collects the steps of one escalation,
chat turn or monitor run (graph nodes, tool calls, LLM turns) and `finish` makes the record.

Whatever agents and tools hand over (pydantic models, dataclasses, numpy values) is turned into
plain JSON here, so a trace is never refused for an unusual type. Usage::

    tb = TraceBuilder("escalation", parent_id=decision.decision_id, inputs={...},
                      llm="offline", model="offline-reasoner", prompt_hash=h,
                      model_versions={"forecaster": "v3"})
    with tb.node("route"):                      # a graph node; steps inside nest under it
        tb.tool_call("get_fleet_state", {"backend": "a"}, result, duration_s=0.002)
        tb.llm_turn(model="claude-...", input="3 messages", output=[...], input_tokens=812,
                    output_tokens=64, latency_s=0.9, stop_reason="tool_use")
        tb.add_llm_run(run)                     # or: every turn and tool call of an LLMRun
    record = tb.finish(final={"backend": "b"}, fallback_reason=None, backend="b")
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel

from context_api.trace_records import TraceRecord, TraceStep, new_trace_id


def _now() -> float:
    return time.time()


class TraceBuilder:
    """Collects the steps of one trace as the work happens, then `finish` makes the record.

    Steps added inside `with builder.node(name):` get that node as their `parent`, so `traces
    show` can draw a tree and the OpenTelemetry export can nest spans. Not thread-safe: one
    builder per escalation / chat turn / monitor run.
    """

    def __init__(
        self,
        kind: str,
        *,
        parent_id: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        llm: str | None = None,
        model: str | None = None,
        prompt_hash: str | None = None,
        model_versions: Mapping[str, str] | None = None,
        trace_id: str | None = None,
        started_at: float | None = None,
        clock: Any = None,
    ) -> None:
        self._clock = clock or _now
        self.trace_id = trace_id or new_trace_id()
        self.kind = kind
        self.parent_id = parent_id
        self.inputs: dict[str, Any] = dict(inputs or {})
        self.llm = llm
        self.model = model
        self.prompt_hash = prompt_hash
        self.model_versions: dict[str, str] = dict(model_versions or {})
        self.started_at = self._clock() if started_at is None else started_at
        self.steps: list[TraceStep] = []
        self._stack: list[int] = []

    @property
    def _parent(self) -> int | None:
        return self._stack[-1] if self._stack else None

    def add(self, step: TraceStep) -> int:
        """Append a ready-made step (its parent defaults to the open node); returns its index."""
        if step.parent is None and self._stack:
            step = step.model_copy(update={"parent": self._parent})
        self.steps.append(step)
        return len(self.steps) - 1

    @contextlib.contextmanager
    def node(self, name: str, *, input: Any = None, **detail: Any) -> Iterator[TraceStep]:
        """A graph node around the steps added inside the block; timed, and marked as an error
        (with the exception's type and message) if the block raises."""
        start = self._clock()
        index = self.add(
            TraceStep(
                type="node",
                name=name,
                started_at=start,
                input=_jsonable(input),
                detail=_jsonable(detail),
            )
        )
        self._stack.append(index)
        try:
            yield self.steps[index]
        except BaseException as exc:
            self.steps[index] = self.steps[index].model_copy(
                update={"is_error": True, "error": f"{type(exc).__name__}: {exc}"}
            )
            raise
        finally:
            self._stack.pop()
            self.steps[index] = self.steps[index].model_copy(
                update={"duration_s": max(0.0, self._clock() - start)}
            )

    def set_node_output(self, output: Any) -> None:
        """Record the open node's output (e.g. its state update)."""
        if not self._stack:
            raise RuntimeError("no open node")
        i = self._stack[-1]
        self.steps[i] = self.steps[i].model_copy(update={"output": _jsonable(output)})

    def tool_call(
        self,
        name: str,
        arguments: Mapping[str, Any] | None,
        result: Any,
        *,
        duration_s: float | None = None,
        is_error: bool = False,
        started_at: float | None = None,
        tool_call_id: str | None = None,
        **detail: Any,
    ) -> int:
        return self.add(
            TraceStep(
                type="tool_call",
                name=name,
                arguments=_jsonable(dict(arguments or {})),
                result=_jsonable(result),
                duration_s=duration_s,
                is_error=is_error,
                started_at=started_at,
                tool_call_id=tool_call_id,
                detail=_jsonable(detail),
            )
        )

    def llm_turn(
        self,
        *,
        model: str,
        input: Any,
        output: Any,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        latency_s: float | None = None,
        stop_reason: str | None = None,
        cost_usd: float | None = None,
        started_at: float | None = None,
        error: str | None = None,
        **detail: Any,
    ) -> int:
        return self.add(
            TraceStep(
                type="llm_turn",
                name=model,
                model=model,
                input=_jsonable(input),
                output=_jsonable(output),
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cache_read_tokens=cache_read_tokens,
                cache_write_tokens=cache_write_tokens,
                latency_s=latency_s,
                duration_s=latency_s,
                stop_reason=stop_reason,
                cost_usd=cost_usd,
                started_at=started_at,
                is_error=error is not None,
                error=error,
                detail=_jsonable(detail),
            )
        )

    def add_llm_run(self, run: Any) -> None:
        """Every turn of an `agents.llm.base.LLMRun` (duck-typed: context_api does not import
        agents), each followed by the tool calls it asked for, in order."""
        for turn in getattr(run, "turns", None) or []:
            usage = getattr(turn, "usage", None)
            err = getattr(turn, "error", None)
            self.llm_turn(
                model=str(getattr(turn, "model_id", None) or getattr(run, "model_id", "?")),
                input=getattr(turn, "input_summary", None),
                output=_jsonable(getattr(turn, "output", None)),
                input_tokens=int(getattr(usage, "input_tokens", 0) or 0),
                output_tokens=int(getattr(usage, "output_tokens", 0) or 0),
                cache_read_tokens=int(getattr(usage, "cache_read_tokens", 0) or 0),
                cache_write_tokens=int(getattr(usage, "cache_write_tokens", 0) or 0),
                latency_s=_nonneg(getattr(turn, "latency_s", None)),
                stop_reason=getattr(turn, "stop_reason", None),
                cost_usd=_nonneg(getattr(turn, "cost_usd", None)),
                error=(f"{getattr(err, 'kind', 'error')}: {getattr(err, 'message', '')}")
                if err is not None
                else None,
                attempts=getattr(turn, "attempts", None),
                message_id=getattr(turn, "message_id", None),
            )
            for call in getattr(turn, "tool_calls", None) or []:
                result = getattr(call, "result", None)
                self.tool_call(
                    str(getattr(call, "name", "?")),
                    _jsonable(getattr(call, "input", None)) or {},
                    _jsonable(getattr(result, "content", result)),
                    duration_s=_nonneg(getattr(call, "duration_s", None)),
                    is_error=bool(getattr(result, "is_error", False)),
                    tool_call_id=getattr(call, "id", None),
                    input_valid=getattr(call, "input_valid", None),
                )

    def finish(
        self,
        *,
        final: Any = None,
        fallback_reason: str | None = None,
        backend: str | None = None,
        ended_at: float | None = None,
        llm: str | None = None,
        model: str | None = None,
    ) -> TraceRecord:
        """The finished record (the builder can be discarded)."""
        end = self._clock() if ended_at is None else ended_at
        return TraceRecord(
            trace_id=self.trace_id,
            kind=self.kind,
            parent_id=self.parent_id,
            started_at=self.started_at,
            ended_at=max(end, self.started_at),
            inputs=_jsonable(self.inputs),
            steps=self.steps,
            final=_jsonable(final),
            fallback_reason=fallback_reason,
            prompt_hash=self.prompt_hash,
            model_versions=self.model_versions,
            llm=llm or self.llm,
            model=model or self.model,
            backend=backend,
        )


def _nonneg(value: Any) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v >= 0 else None


def _jsonable(value: Any) -> Any:
    """Plain JSON-able data from what agents and tools hand over: pydantic models, dataclasses,
    numpy scalars and arrays, enums, dates, sets; anything else becomes its `str`, so a trace
    is never refused because a tool returned an unusual type."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, Enum):
        return _jsonable(value.value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "__dataclass_fields__") and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _jsonable(value.tolist())
    return str(value)
