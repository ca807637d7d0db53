"""Reasoning traces: why each escalated decision, chat answer and monitor run came out as it did.

An auditor must be able to read a trace and trust that nobody has edited it since. So a trace is
a pydantic `TraceRecord` (inputs, the steps in order, the final answer or decision, the fallback
reason, the prompt hash and the model versions in force), scrubbed of secrets by
`context_api.redact` and then appended to a hash chain in the store's SQLite file:

    hash(n) = sha256(hash(n-1) + "\\n" + str(seq(n)) + "\\n" + canonical_json(trace n))

`canonical_json` is sorted keys, compact separators, UTF-8, NaN and infinities as null; the exact
text hashed is stored in `traces.content_json`, so anyone can recompute the chain with any SQLite
tool. `TraceStore.verify` walks the chain and names the first trace that was edited, deleted or
reordered. Tables and columns: docs/traces.md and `context_api/schema.py` (migration 5).

How the agents record a trace (the API other modules code against)::

    from context_api.traces import TraceBuilder, TraceStore, TraceWriter

    tb = TraceBuilder("escalation", parent_id=decision.decision_id, inputs={...},
                      llm="offline", model="offline-reasoner", prompt_hash=h,
                      model_versions={"forecaster": "v3"})
    with tb.node("route"):                      # a graph node; steps inside nest under it
        tb.tool_call("get_fleet_state", {"backend": "a"}, result, duration_s=0.002)
        tb.llm_turn(model="claude-...", input="3 messages", output=[...], input_tokens=812,
                    output_tokens=64, latency_s=0.9, stop_reason="tool_use")
        tb.add_llm_run(run)                     # or: every turn and tool call of an LLMRun
    record = tb.finish(final={"backend": "b"}, fallback_reason=None, backend="b")

    traces = TraceStore(store)                  # a context_api.store.Store, or a path
    traces.append(record)                       # synchronous; returns a TraceReceipt
    writer = TraceWriter(traces)                # or off the caller's thread:
    writer.submit(record); writer.flush(); writer.close()

Trace writes are off the routine routing path: the Router's fast path never builds or writes a
trace; only escalations, chat turns and monitor runs do, and those can hand the record to a
`TraceWriter` (a bounded queue drained by one background thread).

Concurrency: `append` reads the chain head inside a `BEGIN IMMEDIATE` transaction, so appends from
several threads (one Store connection under its lock) or several processes (SQLite's write lock)
always extend the chain one at a time.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import queue
import re
import secrets
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from context_api.redact import redact, redact_text

if TYPE_CHECKING:
    from context_api.store import Store

__all__ = [
    "GENESIS_HASH",
    "KNOWN_KINDS",
    "StoredTrace",
    "TraceBuilder",
    "TraceProblem",
    "TraceReceipt",
    "TraceRecord",
    "TraceStep",
    "TraceStore",
    "TraceSummary",
    "TraceWriter",
    "TraceWriterStats",
    "VerifyReport",
    "canonical_json",
    "chain_hash",
    "new_trace_id",
]

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
"""The `prev_hash` of the first trace in a file."""

KNOWN_KINDS = ("escalation", "chat", "monitor", "eval", "experiment", "retrain")
"""The kinds Arcpoint writes. Others are allowed (lowercase words): the list is documentation."""

StepType = Literal["node", "tool_call", "llm_turn"]

_KIND = re.compile(r"^[a-z][a-z0-9_.\-]{0,63}$")
_FINAL_TEXT_CHARS = 4000


# --- canonical JSON and the chain hash -----------------------------------------------------------


def _finite(obj: Any) -> Any:
    """JSON-able copy with NaN/infinities as None and non-str keys as str."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


_canonical_encode = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 text, NaN and infinities as null: the text we hash.

    Parsing the result and encoding it again gives the same text, which is what lets `verify`
    re-derive every copied column from `content_json`.
    """
    try:
        return _canonical_encode(obj)
    except (ValueError, TypeError):
        return _canonical_encode(_finite(obj))


def chain_hash(prev_hash: str, seq: int, content_json: str) -> str:
    """The hash of trace number `seq`: it covers the previous hash, the position and the content."""
    return hashlib.sha256(f"{prev_hash}\n{seq}\n{content_json}".encode()).hexdigest()


# --- the records ---------------------------------------------------------------------------------


def _now() -> float:
    return time.time()


def new_trace_id() -> str:
    """A time-ordered unique id (same form as the store's ids)."""
    from context_api.store import new_id

    return new_id()


class TraceStep(BaseModel):
    """One step of a trace, in order: a graph node, a tool call, or an LLM turn.

    Shared: `type`, `name` (node name, tool name, or model id for an LLM turn), `parent` (index of
    the enclosing step, usually a node, or None at the top), `started_at` (unix s, if known),
    `duration_s`, `is_error`, `error` and free-form `detail`.
    Tool calls: `arguments`, `result`, `tool_call_id`. LLM turns: `model`, `input` (a summary
    string or the messages), `output` (text or content blocks), the four token counts,
    `latency_s`, `stop_reason`, `cost_usd`. Nodes may set `input`/`output` to a state summary.
    """

    model_config = ConfigDict(extra="forbid")

    type: StepType
    name: str = Field(min_length=1, max_length=200)
    parent: int | None = Field(default=None, ge=0)
    started_at: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    duration_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    is_error: bool = False
    error: str | None = None
    # tool calls
    arguments: dict[str, Any] | None = None
    result: Any = None
    tool_call_id: str | None = None
    # LLM turns (nodes may use input/output too)
    model: str | None = None
    input: Any = None
    output: Any = None
    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cache_read_tokens: int = Field(default=0, ge=0)
    cache_write_tokens: int = Field(default=0, ge=0)
    latency_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    stop_reason: str | None = None
    cost_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    detail: dict[str, Any] = Field(default_factory=dict)


class TraceRecord(BaseModel):
    """One trace: an escalation, a chat turn, a monitor run (see module docstring).

    `parent_id` is the chat thread id for a chat turn, the decision id for an escalation, or the
    run id for a monitor run. `final` is the answer text or the decision (any JSON). `llm` says
    which reasoner ran (`offline` or `claude`), `model` its model id. `backend` is the backend the
    decision chose or the question was about (for `traces list --backend`).
    """

    model_config = ConfigDict(extra="forbid")

    trace_id: str = Field(default_factory=new_trace_id, min_length=1, max_length=128)
    kind: str
    parent_id: str | None = None
    started_at: float = Field(ge=0, allow_inf_nan=False)
    ended_at: float = Field(ge=0, allow_inf_nan=False)
    inputs: dict[str, Any] = Field(default_factory=dict)
    steps: list[TraceStep] = Field(default_factory=list)
    final: Any = None
    fallback_reason: str | None = None
    prompt_hash: str | None = None
    model_versions: dict[str, str] = Field(default_factory=dict)
    llm: str | None = None
    model: str | None = None
    backend: str | None = None

    @field_validator("kind")
    @classmethod
    def _kind_is_a_word(cls, value: str) -> str:
        if not _KIND.match(value):
            raise ValueError(
                f"kind {value!r} must be a lowercase word (e.g. {', '.join(KNOWN_KINDS)})"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TraceRecord:
        if self.ended_at < self.started_at:
            raise ValueError(f"ended_at ({self.ended_at}) is before started_at ({self.started_at})")
        for i, step in enumerate(self.steps):
            if step.parent is not None and step.parent >= i:
                raise ValueError(
                    f"step {i} ({step.name}): parent {step.parent} must be an earlier step"
                )
        return self

    # derived figures, handy for listings
    @property
    def duration_s(self) -> float:
        return self.ended_at - self.started_at

    @property
    def input_tokens(self) -> int:
        return sum(s.input_tokens for s in self.steps)

    @property
    def output_tokens(self) -> int:
        return sum(s.output_tokens for s in self.steps)

    def content(self) -> dict[str, Any]:
        """The JSON content that is hashed: every record field, defaults included (for a
        `StoredTrace`, without its place in the chain)."""
        return self.model_dump(mode="json", include=set(TraceRecord.model_fields))


class StoredTrace(TraceRecord):
    """A trace as read back: the record plus its place in the chain."""

    seq: int
    prev_hash: str
    hash: str
    recorded_at: float


@dataclass(frozen=True, slots=True)
class TraceReceipt:
    """What `append` gives back: where the trace landed in the chain (read the trace itself
    back with `TraceStore.get`)."""

    trace_id: str
    seq: int
    prev_hash: str
    hash: str
    recorded_at: float


class TraceSummary(BaseModel):
    """One row of `TraceStore.list`: the copied columns, without steps."""

    seq: int
    trace_id: str
    kind: str
    parent_id: str | None
    started_at: float
    ended_at: float
    duration_s: float
    llm: str | None
    model: str | None
    backend: str | None
    prompt_hash: str | None
    final: str | None
    fallback_reason: str | None
    n_steps: int
    input_tokens: int
    output_tokens: int
    hash: str


# --- building a trace ----------------------------------------------------------------------------


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


# --- rows ----------------------------------------------------------------------------------------


def _final_text(final: Any) -> str | None:
    if final is None:
        return None
    text = final if isinstance(final, str) else canonical_json(final)
    return text[:_FINAL_TEXT_CHARS]


# The record's own field names carry no meaning to search for ("error", "input", "fallback"
# would match every trace); they are blanked out of the indexed text, with JSON punctuation
# and escapes, leaving the values (and the keys of free-form data such as tool arguments).
_RECORD_FIELDS = [
    "trace_id",
    "kind",
    "parent_id",
    "started_at",
    "ended_at",
    "inputs",
    "steps",
    "final",
    "fallback_reason",
    "prompt_hash",
    "model_versions",
    "llm",
    "model",
    "backend",
    "type",
    "name",
    "parent",
    "duration_s",
    "is_error",
    "error",
    "arguments",
    "result",
    "tool_call_id",
    "input",
    "output",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "latency_s",
    "stop_reason",
    "cost_usd",
    "detail",
]
_RECORD_KEYS = re.compile(
    '"(?:' + "|".join(sorted(set(_RECORD_FIELDS), key=len, reverse=True)) + ')":'
)
_JSON_PUNCTUATION = str.maketrans(dict.fromkeys('{}[]":,', " "))


def _search_body(content_json: str) -> str:
    """The text the full-text index holds for a trace: its values, without JSON syntax."""
    text = _RECORD_KEYS.sub(" ", content_json)
    if "\\" in text:  # JSON escapes: keep the words on either side of a newline apart
        text = text.replace("\\n", " ").replace("\\t", " ").replace("\\r", " ")
    return text.translate(_JSON_PUNCTUATION)


_TRACE_COLUMNS = (
    "seq",
    "trace_id",
    "kind",
    "parent_id",
    "started_at",
    "ended_at",
    "duration_s",
    "llm",
    "model",
    "backend",
    "prompt_hash",
    "final",
    "fallback_reason",
    "n_steps",
    "input_tokens",
    "output_tokens",
    "content_json",
    "prev_hash",
    "hash",
    "recorded_at",
)
_STEP_COLUMNS = (
    "trace_id",
    "idx",
    "parent_idx",
    "type",
    "name",
    "started_at",
    "duration_s",
    "model",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "is_error",
    "detail_json",
)
# Copied columns that must equal what `content_json` says (seq, hashes, recorded_at excluded).
_DERIVED_TRACE_COLUMNS = _TRACE_COLUMNS[1:16]


def _trace_columns(content: Mapping[str, Any]) -> dict[str, Any]:
    steps = content.get("steps") or []
    return {
        "trace_id": content["trace_id"],
        "kind": content["kind"],
        "parent_id": content.get("parent_id"),
        "started_at": float(content["started_at"]),
        "ended_at": float(content["ended_at"]),
        "duration_s": float(content["ended_at"]) - float(content["started_at"]),
        "llm": content.get("llm"),
        "model": content.get("model"),
        "backend": content.get("backend"),
        "prompt_hash": content.get("prompt_hash"),
        "final": _final_text(content.get("final")),
        "fallback_reason": content.get("fallback_reason"),
        "n_steps": len(steps),
        "input_tokens": sum(int(s.get("input_tokens") or 0) for s in steps),
        "output_tokens": sum(int(s.get("output_tokens") or 0) for s in steps),
    }


def _step_rows(
    content: Mapping[str, Any], step_texts: Sequence[str] | None = None
) -> list[tuple[Any, ...]]:
    """The `trace_steps` rows of a trace; `step_texts` are the steps' canonical JSON if known."""
    trace_id = content["trace_id"]
    rows = []
    for idx, step in enumerate(content.get("steps") or []):
        llm = step.get("type") == "llm_turn"
        rows.append(
            (
                trace_id,
                idx,
                step.get("parent"),
                step.get("type"),
                step.get("name"),
                _float_or_none(step.get("started_at")),
                _float_or_none(step.get("duration_s")),
                step.get("model"),
                int(step.get("input_tokens") or 0) if llm else None,
                int(step.get("output_tokens") or 0) if llm else None,
                int(step.get("cache_read_tokens") or 0) if llm else None,
                int(step.get("cache_write_tokens") or 0) if llm else None,
                1 if step.get("is_error") else 0,
                step_texts[idx] if step_texts is not None else canonical_json(step),
            )
        )
    return rows


_STEPS_SLOT = f"\x00steps-{secrets.token_hex(8)}\x00"
_STEPS_SLOT_JSON = _canonical_encode([_STEPS_SLOT])


def _encode_content(content: Mapping[str, Any]) -> tuple[str, list[str]]:
    """(canonical JSON of the trace, canonical JSON of each step), encoding each step once.

    Canonical JSON is compositional (sorted keys, fixed separators), so the trace's text is the
    text of the trace with a placeholder for its steps, the placeholder replaced by the steps'
    own texts. The placeholder holds a per-process random token and NUL bytes (encoded as
    \\u0000), so no value can collide with it; a miss falls back to encoding the whole.
    """
    steps = content.get("steps") or []
    step_texts = [_canonical_encode(step) for step in steps]
    shell = _canonical_encode({**content, "steps": [_STEPS_SLOT]})
    if shell.count(_STEPS_SLOT_JSON) != 1:  # pragma: no cover - defensive
        return _canonical_encode(content), step_texts
    return shell.replace(_STEPS_SLOT_JSON, "[" + ",".join(step_texts) + "]"), step_texts


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


_INSERT_TRACE = (
    f"INSERT INTO traces ({', '.join(_TRACE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_TRACE_COLUMNS))})"
)
_INSERT_STEP = (
    f"INSERT INTO trace_steps ({', '.join(_STEP_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_STEP_COLUMNS))})"
)
_INSERT_FTS = "INSERT INTO traces_fts (trace_id, kind, final, body) VALUES (?, ?, ?, ?)"


@dataclass(frozen=True)
class _Prepared:
    """A trace made ready outside the write transaction: only its hash waits for the head."""

    text: str
    columns: dict[str, Any]
    steps: list[tuple[Any, ...]]
    body: str


def _prepare(record: TraceRecord, *, scrub: bool = True) -> _Prepared:
    """Redact, then canonicalise. Redaction happens before hashing, so the hash covers exactly
    the scrubbed text that is stored."""
    if not isinstance(record, TraceRecord):
        raise TypeError(f"expected a TraceRecord, got {type(record).__name__}")
    content = record.content()
    if scrub:
        scrubbed = redact(content)
        if scrubbed != content:  # re-validate what will be stored (redaction only shortens text)
            record = TraceRecord.model_validate(scrubbed)
            content = record.content()
    try:
        text, step_texts = _encode_content(content)
    except (ValueError, TypeError):  # NaN or infinity in free-form data: stored as null
        content = _finite(content)
        record = TraceRecord.model_validate(content)
        text, step_texts = _encode_content(content)
    return _Prepared(
        text=text,
        columns=_trace_columns(content),
        steps=_step_rows(content, step_texts),
        body=_search_body(text),
    )


def _fts_query(text: str) -> str:
    """User text to an FTS5 query: every word must appear (quoted, so no operator syntax)."""
    words = [w for w in re.split(r"\s+", text.strip()) if w]
    if not words:
        raise ValueError("empty search text")
    return " AND ".join('"' + w.replace('"', '""') + '"' for w in words)


# --- verification --------------------------------------------------------------------------------


class TraceProblem(BaseModel):
    seq: int | None
    trace_id: str | None
    problem: str


class VerifyReport(BaseModel):
    """What `verify` found. `ok` only when the whole chain and every copy check out."""

    ok: bool
    checked: int
    head_seq: int | None
    head_hash: str | None
    first_bad: TraceProblem | None
    problems: list[TraceProblem]
    problems_truncated: bool = False
    append_only_triggers: bool
    """Whether the append-only triggers are still in place (their absence alone is not a failure:
    the chain is the authority, but it shows someone altered the file)."""


# --- the store -----------------------------------------------------------------------------------


class TraceStore:
    """Append, read, search, export and verify traces in an Arcpoint SQLite file.

    `TraceStore(store)` uses an open `context_api.store.Store` (its connection and lock);
    `TraceStore(path)` opens (creating and migrating) its own Store and closes it on `close()`,
    as it does a Store handed over with `own_store=True`.
    `redact=False` skips secret scrubbing: only for tests and benchmarks measuring its cost.
    """

    def __init__(
        self, store: Store | str | Path, *, redact: bool = True, own_store: bool = False
    ) -> None:
        from context_api.store import Store

        if isinstance(store, str | Path):
            self.store = Store(store)
            self._owns = True
        else:
            self.store = store
            self._owns = own_store
        self._redact = redact

    def close(self) -> None:
        if self._owns:
            self.store.close()

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing --

    def append(self, record: TraceRecord) -> TraceReceipt:
        """Scrub, hash and append one trace; returns its place in the chain (seq and hashes).

        Raises `ValueError` if a trace with this id is already stored (a trace is written once).
        """
        return self.append_many([record])[0]

    def append_many(self, records: Iterable[TraceRecord]) -> list[TraceReceipt]:
        """Append several traces in one transaction (in the given order); all or none.

        Everything but the hash is computed before the write lock is taken, so concurrent
        writers hold it only for the inserts.
        """
        prepared = [_prepare(r, scrub=self._redact) for r in records]
        if not prepared:
            return []
        stored: list[TraceReceipt] = []
        now = time.time()
        try:
            with self.store.transaction() as conn:
                seq, prev = self._head_for_append(conn)
                for item in prepared:
                    seq += 1
                    digest = chain_hash(prev, seq, item.text)
                    cols = item.columns
                    conn.execute(_INSERT_TRACE, (seq, *cols.values(), item.text, prev, digest, now))
                    if item.steps:
                        conn.executemany(_INSERT_STEP, item.steps)
                    conn.execute(
                        _INSERT_FTS, (cols["trace_id"], cols["kind"], cols["final"], item.body)
                    )
                    stored.append(TraceReceipt(cols["trace_id"], seq, prev, digest, now))
                    prev = digest
        except sqlite3.IntegrityError as exc:
            if "trace_id" in str(exc) or "UNIQUE" in str(exc):
                raise ValueError(f"a trace with one of these ids is already stored: {exc}") from exc
            raise
        return stored

    @staticmethod
    def _head_for_append(conn: sqlite3.Connection) -> tuple[int, str]:
        """(last seq ever issued, hash of the newest stored trace) inside the write transaction.

        The next seq comes from AUTOINCREMENT's counter, not from MAX(seq): if the newest traces
        were deleted, the next append leaves a visible gap instead of silently reusing their seqs.
        """
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'traces'").fetchone()
        issued = int(row[0]) if row else 0
        head = conn.execute("SELECT seq, hash FROM traces ORDER BY seq DESC LIMIT 1").fetchone()
        if head is None:
            return issued, GENESIS_HASH
        return max(issued, int(head[0])), str(head[1])

    # -- reading --

    def count(self) -> int:
        with self.store._lock:
            return int(self.store.conn.execute("SELECT COUNT(*) FROM traces").fetchone()[0])

    def head(self) -> tuple[int, str] | None:
        """(seq, hash) of the newest trace: publish it elsewhere to anchor the chain."""
        with self.store._lock:
            row = self.store.conn.execute(
                "SELECT seq, hash FROM traces ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def seq_of_hash(self, digest: str) -> int | None:
        """The seq of the trace with this chain hash (to check a published anchor)."""
        with self.store._lock:
            row = self.store.conn.execute(
                "SELECT seq FROM traces WHERE hash = ? ORDER BY seq LIMIT 1", (digest,)
            ).fetchone()
        return None if row is None else int(row[0])

    def get(self, trace_id: str) -> StoredTrace | None:
        """The trace with this id, else the one whose id uniquely starts or ends with it (at least
        6 characters: ids start with the time, so their random *end* is the handy part to type).
        Raises `ValueError` when several ids match."""
        select = "SELECT seq, content_json, prev_hash, hash, recorded_at, trace_id FROM traces "
        with self.store._lock:
            conn = self.store.conn
            row = conn.execute(select + "WHERE trace_id = ?", (trace_id,)).fetchone()
            if row is None and len(trace_id) >= 6:
                escaped = trace_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                for pattern in (f"{escaped}%", f"%{escaped}"):
                    rows = conn.execute(
                        select + "WHERE trace_id LIKE ? ESCAPE '\\' LIMIT 3", (pattern,)
                    ).fetchall()
                    if len(rows) > 1:
                        shown = ", ".join(r[5] for r in rows[:2])
                        raise ValueError(
                            f"trace id {trace_id!r} is ambiguous ({shown}, ...): give more of it"
                        )
                    if rows:
                        row = rows[0]
                        break
        return None if row is None else _stored(row[:5])

    def list(
        self,
        *,
        kind: str | None = None,
        since: float | None = None,
        until: float | None = None,
        backend: str | None = None,
        parent_id: str | None = None,
        llm: str | None = None,
        search: str | None = None,
        limit: int | None = 50,
        newest_first: bool = True,
    ) -> list[TraceSummary]:
        """Trace summaries matching every given filter. `search` is full-text (FTS5) over the
        kind, final answer, inputs and step text; every word must appear."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("t.kind = ?", kind),
            ("t.started_at >= ?", since),
            ("t.started_at < ?", until),
            ("t.backend = ?", backend),
            ("t.parent_id = ?", parent_id),
            ("t.llm = ?", llm),
        ):
            if value is not None:
                clauses.append(column)
                params.append(value)
        if search is not None:
            clauses.append(
                "t.trace_id IN (SELECT trace_id FROM traces_fts WHERE traces_fts MATCH ?)"
            )
            params.append(_fts_query(search))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        order = "DESC" if newest_first else "ASC"
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        lim = f" LIMIT {int(limit)}" if limit is not None else ""
        cols = ", ".join(f"t.{c}" for c in TraceSummary.model_fields)
        sql = f"SELECT {cols} FROM traces t{where} ORDER BY t.seq {order}{lim}"
        with self.store._lock:
            cur = self.store.conn.execute(sql, params)
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
        return [TraceSummary(**dict(zip(names, r, strict=True))) for r in rows]

    def iter_traces(
        self, *, since: float | None = None, kind: str | None = None, batch: int = 500
    ) -> Iterator[StoredTrace]:
        """Every stored trace (optionally filtered) in chain order, read in batches."""
        last = 0
        while True:
            clauses = ["seq > ?"]
            params: list[Any] = [last]
            if since is not None:
                clauses.append("started_at >= ?")
                params.append(since)
            if kind is not None:
                clauses.append("kind = ?")
                params.append(kind)
            with self.store._lock:
                rows = self.store.conn.execute(
                    "SELECT seq, content_json, prev_hash, hash, recorded_at FROM traces "
                    f"WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT {int(batch)}",
                    params,
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield _stored(row)
            last = int(rows[-1][0])

    # -- verification --

    def verify(self, *, max_problems: int = 20) -> VerifyReport:
        """Walk the chain from the first trace: recompute each hash, check each link, the seq
        order, the copied columns and the `trace_steps` rows against the hashed content.

        Streams both tables in chain order inside one read transaction (one consistent snapshot;
        WAL lets other processes keep appending meanwhile). After a break the walk continues
        from the stored hash, so later problems are reported too; `first_bad` is the earliest.
        Deleting the *newest* traces and resetting AUTOINCREMENT's counter cannot be seen from
        the file alone: compare `head_hash` with a copy kept elsewhere (`--expect-head`).
        """
        with self.store._lock:
            conn = self.store.conn
            own_txn = not conn.in_transaction
            if own_txn:
                conn.execute("BEGIN")
            try:
                return self._verify(conn, max_problems)
            finally:
                if own_txn and conn.in_transaction:
                    conn.execute("COMMIT")

    def _verify(self, conn: sqlite3.Connection, max_problems: int) -> VerifyReport:
        check = _ChainCheck(max_problems)
        rows = conn.execute(f"SELECT {', '.join(_TRACE_COLUMNS)} FROM traces ORDER BY seq")
        step_cursor = conn.execute(
            f"SELECT {', '.join('s.' + c for c in _STEP_COLUMNS)}, t.seq FROM trace_steps s "
            "JOIN traces t ON t.trace_id = s.trace_id ORDER BY t.seq, s.idx"
        )
        steps = _StepStream(step_cursor)
        for row in rows:
            check.trace(row, steps.take(int(row[0])))
        issued_row = conn.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'traces'"
        ).fetchone()
        issued = int(issued_row[0]) if issued_row else 0
        if issued > (check.head_seq or 0):
            check.bad(
                None,
                None,
                f"traces after seq {check.head_seq or 0} up to {issued} are missing "
                "(the newest traces were deleted)",
            )
        orphan = conn.execute(
            "SELECT COUNT(DISTINCT trace_id), MIN(trace_id) FROM trace_steps "
            "WHERE trace_id NOT IN (SELECT trace_id FROM traces)"
        ).fetchone()
        if orphan and orphan[0]:
            check.bad(
                None, orphan[1], f"{orphan[0]} trace(s) have steps but no trace row (deleted)"
            )
        triggers = conn.execute(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' "
            "AND name IN ('traces_no_update', 'traces_no_delete', "
            "'trace_steps_no_update', 'trace_steps_no_delete')"
        ).fetchone()[0]
        return check.report(append_only_triggers=int(triggers) == 4)

    def rebuild_search_index(self) -> int:
        """Rebuild `traces_fts` from the hashed content (it is an index, not evidence)."""
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM traces_fts")
            n = 0
            for (text,) in conn.execute("SELECT content_json FROM traces ORDER BY seq").fetchall():
                content = json.loads(text)
                conn.execute(
                    _INSERT_FTS,
                    (
                        content["trace_id"],
                        content["kind"],
                        _final_text(content.get("final")),
                        _search_body(text),
                    ),
                )
                n += 1
        return n


class _StepStream:
    """The `trace_steps` rows of consecutive traces, from one cursor ordered by trace seq."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor
        self._pending: tuple[Any, ...] | None = None
        self._done = False

    def take(self, seq: int) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        while True:
            if self._pending is None and not self._done:
                row = self._cursor.fetchone()
                if row is None:
                    self._done = True
                else:
                    self._pending = tuple(row)
            if self._pending is None or int(self._pending[-1]) > seq:
                return out
            if int(self._pending[-1]) == seq:
                out.append(self._pending[:-1])
            self._pending = None


_COL = {c: i for i, c in enumerate(_TRACE_COLUMNS)}


class _ChainCheck:
    """The state of one walk along the chain: the previous hash, the expected seq, problems."""

    def __init__(self, max_problems: int) -> None:
        self.max_problems = max_problems
        self.problems: list[TraceProblem] = []
        self.truncated = False
        self.prev_hash = GENESIS_HASH
        self.expected_seq = 1
        self.checked = 0
        self.head_seq: int | None = None
        self.head_hash: str | None = None
        self.prev_id: str | None = None
        self.prev_clean = False

    def bad(self, seq: int | None, trace_id: str | None, text: str) -> None:
        if len(self.problems) < self.max_problems:
            self.problems.append(TraceProblem(seq=seq, trace_id=trace_id, problem=text))
        else:
            self.truncated = True

    def trace(self, row: Sequence[Any], got_steps: list[tuple[Any, ...]]) -> None:
        seq = int(row[_COL["seq"]])
        trace_id = str(row[_COL["trace_id"]])
        stored_prev = str(row[_COL["prev_hash"]])
        stored_hash = str(row[_COL["hash"]])
        text = str(row[_COL["content_json"]])
        self.checked += 1
        if seq != self.expected_seq:
            gap = (
                f"seq {self.expected_seq}"
                if seq == self.expected_seq + 1
                else f"seqs {self.expected_seq}..{seq - 1}"
            )
            self.bad(seq, trace_id, f"{gap} missing before this trace (deleted)")
        own_hash_ok = chain_hash(stored_prev, seq, text) == stored_hash
        if stored_prev != self.prev_hash:
            if seq == self.expected_seq and own_hash_ok and self.prev_clean and self.prev_id:
                # This trace is consistent and in place, so the one before it was re-hashed
                # after an edit: name that one.
                self.bad(
                    seq - 1,
                    self.prev_id,
                    "hash was rewritten (content edited and re-hashed): the next trace links "
                    f"to {stored_prev[:16]}…, not to this trace's hash",
                )
            else:
                self.bad(
                    seq,
                    trace_id,
                    "prev_hash is not the hash of the trace before it "
                    "(a trace before it was deleted, edited or moved)",
                )
        if not own_hash_ok:
            self.bad(seq, trace_id, "hash does not match its content (edited or moved)")
        before = len(self.problems)
        self._content(seq, trace_id, row, text, got_steps)
        self.prev_clean = own_hash_ok and len(self.problems) == before and seq == self.expected_seq
        self.prev_id = trace_id
        self.prev_hash = stored_hash
        self.expected_seq = seq + 1
        self.head_seq, self.head_hash = seq, stored_hash

    def _content(
        self,
        seq: int,
        trace_id: str,
        row: Sequence[Any],
        text: str,
        got_steps: list[tuple[Any, ...]],
    ) -> None:
        try:
            content = json.loads(text)
            if canonical_json(content) != text:
                self.bad(seq, trace_id, "content_json is not in canonical form (edited)")
            if content.get("trace_id") != trace_id:
                self.bad(seq, trace_id, "trace_id column differs from the hashed content")
                return
            expected = _trace_columns(content)
            for column in _DERIVED_TRACE_COLUMNS:
                if not _same(row[_COL[column]], expected[column]):
                    self.bad(seq, trace_id, f"column {column} differs from the hashed content")
            want_steps = _step_rows(content)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            self.bad(seq, trace_id, f"content_json is not a valid trace ({exc})")
            return
        if len(got_steps) != len(want_steps):
            self.bad(
                seq,
                trace_id,
                f"trace_steps holds {len(got_steps)} rows, the hashed content "
                f"{len(want_steps)} steps (steps deleted or added)",
            )
            return
        for got, want in zip(got_steps, want_steps, strict=True):
            if not all(_same(g, w) for g, w in zip(got, want, strict=True)):
                self.bad(
                    seq, trace_id, f"trace_steps row {want[1]} differs from the hashed content"
                )
                return

    def report(self, *, append_only_triggers: bool) -> VerifyReport:
        ranked = [p for p in self.problems if p.seq is not None]
        first = min(ranked, key=lambda p: p.seq or 0) if ranked else None
        if first is None and self.problems:
            first = self.problems[0]
        return VerifyReport(
            ok=not self.problems,
            checked=self.checked,
            head_seq=self.head_seq,
            head_hash=self.head_hash,
            first_bad=first,
            problems=self.problems,
            problems_truncated=self.truncated,
            append_only_triggers=append_only_triggers,
        )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return float(a) == float(b)
    return a == b


def _stored(row: Sequence[Any]) -> StoredTrace:
    seq, text, prev, digest, recorded_at = row
    return StoredTrace(
        **json.loads(text), seq=int(seq), prev_hash=prev, hash=digest, recorded_at=recorded_at
    )


# --- the background writer -----------------------------------------------------------------------


@dataclass
class TraceWriterStats:
    submitted: int = 0
    written: int = 0
    written_inline: int = 0
    """Traces written on the caller's thread because the queue was full (none are dropped)."""
    failed: int = 0
    """Traces whose append raised after retries; each is logged at ERROR with its id, and kept in
    `TraceWriter.failed_records` so the caller can retry or save them."""
    last_error: str | None = None
    errors: list[str] = field(default_factory=list)


class TraceWriter:
    """Appends traces on one background thread, so an escalation or chat turn does not wait on
    the disk. Bounded: `max_queue` traces at most wait in memory.

    When the queue is full, `submit` writes the trace synchronously on the caller's thread (and
    counts it in `stats.written_inline`) rather than drop it: losing an audit record silently is
    worse than one slow escalation, and a full queue means the disk is the bottleneck anyway.
    The Router's fast path never reaches here. `flush()` waits until everything submitted so far
    is written; `close()` flushes and stops the thread. Writers still open when the interpreter
    exits are closed (and so flushed) by an `atexit` hook; a close that times out logs how many
    traces were left unwritten.
    """

    _STOP = object()

    def __init__(
        self,
        traces: TraceStore,
        *,
        max_queue: int = 1000,
        retries: int = 2,
        retry_delay_s: float = 0.05,
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        self.traces = traces
        self.stats = TraceWriterStats()
        self.failed_records: list[TraceRecord] = []
        self._retries = retries
        self._retry_delay_s = retry_delay_s
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="arcpoint-trace-writer", daemon=True)
        self._thread.start()
        _OPEN_WRITERS.add(self)

    def submit(self, record: TraceRecord) -> None:
        """Queue a trace for writing; never drops it, never raises for storage errors."""
        if not isinstance(record, TraceRecord):
            raise TypeError(f"expected a TraceRecord, got {type(record).__name__}")
        with self._lock:
            if self._closed:
                raise RuntimeError("TraceWriter is closed")
            self.stats.submitted += 1
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            if self._write(record):
                with self._lock:
                    self.stats.written_inline += 1

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every trace submitted so far is written (or failed). False on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.001)
        return True

    def close(self, timeout_s: float | None = 10.0) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(self._STOP)
        self._thread.join(timeout_s)
        _OPEN_WRITERS.discard(self)
        left = max(0, self._queue.unfinished_tasks - 1)  # the stop marker is not a trace
        if self._thread.is_alive() and left:
            log.error("TraceWriter closed with %d trace(s) not yet written", left)

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is self._STOP:
                    return
                batch = [item]
                # Drain what is already waiting into one transaction (cheaper per trace).
                while len(batch) < 64:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is self._STOP:
                        self._queue.put(self._STOP)  # stop after this batch
                        self._queue.task_done()
                        break
                    batch.append(nxt)
                self._write_batch(batch)
                for _ in batch[1:]:
                    self._queue.task_done()
            finally:
                self._queue.task_done()

    def _write_batch(self, batch: list[TraceRecord]) -> None:
        if len(batch) > 1:
            try:
                self.traces.append_many(batch)
                with self._lock:
                    self.stats.written += len(batch)
                return
            except Exception:  # fall back to one by one: one bad trace must not sink the rest
                pass
        for record in batch:
            self._write(record)

    def _write(self, record: TraceRecord) -> bool:
        error: Exception | None = None
        for attempt in range(self._retries + 1):
            try:
                self.traces.append(record)
                with self._lock:
                    self.stats.written += 1
                return True
            except ValueError as exc:  # duplicate id or invalid record: retrying cannot help
                error = exc
                break
            except Exception as exc:
                error = exc
                if attempt < self._retries:
                    time.sleep(self._retry_delay_s * (2**attempt))
        message = f"trace {record.trace_id} ({record.kind}) not written: {type(error).__name__}"
        detail = redact_text(str(error))
        log.error("%s: %s", message, detail)
        with self._lock:
            self.stats.failed += 1
            self.stats.last_error = f"{message}: {detail}"
            self.stats.errors.append(self.stats.last_error)
            del self.stats.errors[:-20]
            self.failed_records.append(record)
        return False


_OPEN_WRITERS: weakref.WeakSet[TraceWriter] = weakref.WeakSet()


@atexit.register
def _close_open_writers() -> None:
    """Flush writers their owners forgot to close: their thread is a daemon."""
    for writer in list(_OPEN_WRITERS):
        with contextlib.suppress(Exception):
            writer.close()
