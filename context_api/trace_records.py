"""What a trace is, and the exact text its hash covers.

A trace is a pydantic `TraceRecord`: its inputs, the steps in order (`TraceStep`: a graph node,
a tool call or an LLM turn), the final answer or decision, the fallback reason, the prompt hash
and the model versions in force. Stored, it is one link of a hash chain:

    hash(n) = sha256(hash(n-1) + "\\n" + str(seq(n)) + "\\n" + canonical_json(trace n))

`canonical_json` is sorted keys, compact separators, UTF-8, NaN and infinities as null, so anyone
can recompute the chain with any SQLite tool and a JSON library. Writing, reading and verifying
the chain: `context_api.traces`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

GENESIS_HASH = "0" * 64
"""The `prev_hash` of the first trace in a file."""

KNOWN_KINDS = ("escalation", "chat", "monitor", "eval", "experiment", "retrain")
"""The kinds Arcpoint writes. Others are allowed (lowercase words): the list is documentation."""

StepType = Literal["node", "tool_call", "llm_turn"]

_KIND = re.compile(r"^[a-z][a-z0-9_.\-]{0,63}$")


def finite_json(obj: Any) -> Any:
    """JSON-able copy with NaN/infinities as None and non-str keys as str."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_json(v) for v in obj]
    return obj


canonical_encode = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 text, NaN and infinities as null: the text we hash.

    Parsing the result and encoding it again gives the same text, which is what lets `verify`
    re-derive every copied column from `content_json`.
    """
    try:
        return canonical_encode(obj)
    except (ValueError, TypeError):
        return canonical_encode(finite_json(obj))


def chain_hash(prev_hash: str, seq: int, content_json: str) -> str:
    """The hash of trace number `seq`: it covers the previous hash, the position and the content."""
    return hashlib.sha256(f"{prev_hash}\n{seq}\n{content_json}".encode()).hexdigest()


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
