"""The one LLM interface the agents use, whichever model answers.

Both implementations (Claude over the network, the offline reasoner in-process) take the same
inputs and return the same `LLMRun` record, so the graph, the router and the traces never branch
on which model ran. API failures never raise through `run`: they come back as `LLMRun.error` so
the caller can fall back to the deterministic policy and record why.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ErrorKind = Literal[
    "timeout",
    "rate_limited",
    "overloaded",
    "api_error",
    "refusal",
    "max_tokens",
    "budget_exhausted",
    "malformed_tool_input",
    "max_turns",
]

_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


class ToolResult(BaseModel):
    """What a tool gives back. `content` must be JSON-able; it reaches the model as quoted JSON."""

    content: Any = None
    is_error: bool = False
    terminal: bool = False
    """End the loop after this turn's tool calls (e.g. a `submit_decision` tool): no round trip."""

    @classmethod
    def error(cls, message: str, **details: Any) -> ToolResult:
        return cls(content={"error": message, **details}, is_error=True)


ToolExecutor = Callable[[str, dict[str, Any]], ToolResult]
"""`(tool name, validated input) -> ToolResult`. May raise: the loop makes that an error result."""


class ToolSpec(BaseModel):
    """A tool the model may call. Give `input_model` to validate inputs with pydantic."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    name: str
    description: str
    input_schema: dict[str, Any]
    input_model: type[BaseModel] | None = Field(default=None, exclude=True, repr=False)

    @field_validator("name")
    @classmethod
    def _name_is_api_safe(cls, value: str) -> str:
        if not _TOOL_NAME.match(value):
            raise ValueError(f"tool name {value!r} must match {_TOOL_NAME.pattern}")
        return value

    @field_validator("input_schema")
    @classmethod
    def _schema_is_object(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "object":
            raise ValueError('a tool input_schema must have "type": "object"')
        return value

    @classmethod
    def from_model(cls, name: str, description: str, input_model: type[BaseModel]) -> ToolSpec:
        """The usual way: the JSON schema comes from the pydantic model that also validates."""
        return cls(
            name=name,
            description=description,
            input_schema=input_model.model_json_schema(),
            input_model=input_model,
        )

    def input_errors(self, value: Any) -> list[str]:
        """Why `value` is not a valid input for this tool (empty list: it is valid)."""
        if not isinstance(value, dict):
            return [f"input must be a JSON object, got {type(value).__name__}"]
        if self.input_model is not None:
            try:
                self.input_model.model_validate(value)
            except ValidationError as err:
                return [
                    f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
                    for e in err.errors(include_url=False, include_input=False)
                ]
            return []
        return schema_errors(self.input_schema, value)

    def to_api(self) -> dict[str, Any]:
        """The Messages API `tools[]` entry (without cache_control)."""
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
        }


class ChatMessage(BaseModel):
    """One message of the conversation the caller passes in (history plus the new question).

    `content` is text, or Messages API text blocks when parts of a message must stay apart
    (the router's trusted routing context and the caller's quoted metadata)."""

    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]

    @field_validator("content")
    @classmethod
    def _text_blocks_only(cls, value: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
        if isinstance(value, list):
            for block in value:
                if block.get("type") != "text" or not isinstance(block.get("text"), str):
                    raise ValueError("message content blocks must be text blocks")
        return value


class TokenUsage(BaseModel):
    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cache_read_tokens: int = Field(default=0, ge=0)
    cache_write_tokens: int = Field(default=0, ge=0)

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
        )

    @property
    def budgeted_tokens(self) -> int:
        """Tokens counted against the hourly budget. Cache reads are excluded: they cost a tenth
        of an input token and do not count towards Anthropic's input-token rate limits."""
        return self.input_tokens + self.output_tokens + self.cache_write_tokens


class LLMError(BaseModel):
    kind: ErrorKind
    message: str
    status_code: int | None = None


class ToolCallRecord(BaseModel):
    """One tool call the model made, what it was given back, and how long the tool took."""

    id: str
    name: str
    input: dict[str, Any]
    input_valid: bool
    result: ToolResult
    duration_s: float = Field(ge=0)


class ModelReply(BaseModel):
    """One model turn, as a "next turn" function returns it to the tool loop.

    `content` holds the assistant's content blocks in Messages API shape (`text`, `tool_use`, ...);
    that shape is also the transcript format the loop keeps, for both models.
    """

    model_id: str
    content: list[dict[str, Any]] = Field(default_factory=list)
    stop_reason: str | None = None
    stop_details: str | None = None
    """Extra words about the stop, e.g. a refusal's category and explanation."""
    usage: TokenUsage = Field(default_factory=TokenUsage)
    cost_usd: float = Field(default=0.0, ge=0)
    latency_s: float = Field(default=0.0, ge=0)
    attempts: int = Field(default=1, ge=0)
    message_id: str | None = None
    error: LLMError | None = None

    @property
    def text(self) -> str:
        return "".join(b.get("text", "") for b in self.content if b.get("type") == "text")

    @property
    def tool_uses(self) -> list[dict[str, Any]]:
        return [b for b in self.content if b.get("type") == "tool_use"]


class TurnRequest(BaseModel):
    """Everything a "next turn" function needs to produce the model's next reply."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    system: str
    messages: list[dict[str, Any]]
    tools: list[ToolSpec]
    turn_index: int
    deadline: float | None = None
    """Absolute time on the loop's clock by which the reply must be back (None: no deadline)."""
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    """All tool calls made so far in this run (convenient for the offline reasoner)."""
    tool_choice: dict[str, Any] | None = None
    """Messages API `tool_choice` for this turn, e.g. {"type": "tool", "name": "submit_decision"}
    forces that tool (None: the model decides)."""


class LLMTurn(BaseModel):
    """The trace of one model turn: what went in, what came out, the tools it called, the cost."""

    index: int
    model_id: str
    input_messages: int
    input_summary: str
    output: list[dict[str, Any]]
    stop_reason: str | None
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    usage: TokenUsage
    cost_usd: float
    latency_s: float
    attempts: int
    """HTTP attempts behind this turn (retries included); 0 if it was declined before any call."""
    message_id: str | None = None
    error: LLMError | None = None


class LLMRun(BaseModel):
    """The outcome of one `LLMModel.run`: the answer (if any), the full trace, usage and cost."""

    model_name: str
    model_id: str
    final_text: str
    """The model's last text. It is an answer only when `error` is None."""
    stop_reason: str
    """The last model stop reason, `terminal_tool`, or `error` when no turn produced one."""
    turns: list[LLMTurn]
    usage: TokenUsage
    cost_usd: float
    cost_basis: str = ""
    """Which price row the cost was computed from (`default:<family>` flags an estimate)."""
    duration_s: float
    error: LLMError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def tool_calls(self) -> list[ToolCallRecord]:
        return [call for turn in self.turns for call in turn.tool_calls]


@runtime_checkable
class LLMModel(Protocol):
    """What the agents call. Implementations: `ClaudeModel` and the offline reasoner.

    `next_turn` is one model call (the `model` node of every agent graph); `run` drives a whole
    model/tool cycle through a one-off `agents.tool_loop.AgentLoop`."""

    name: str
    model_id: str
    cost_basis: str

    def next_turn(self, request: TurnRequest) -> ModelReply: ...

    def run(
        self,
        system: str,
        messages: Sequence[ChatMessage | dict[str, Any]],
        tools: Sequence[ToolSpec],
        execute: ToolExecutor,
        *,
        max_turns: int = 6,
        deadline_s: float | None = None,
    ) -> LLMRun: ...


# --- a small JSON-schema checker for tools given as a bare schema ------------------------------
# Tools built with `ToolSpec.from_model` are validated by pydantic; this covers hand-written
# schemas: type, properties, required, additionalProperties, enum, const, items, numeric and length
# bounds, anyOf/oneOf/allOf and local `$ref`s. Unknown keywords are ignored (accepted).

_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def schema_errors(
    schema: dict[str, Any], value: Any, *, _root: dict | None = None, _path: str = ""
) -> list[str]:
    """Errors of `value` against `schema` (a practical subset of JSON Schema)."""
    root = _root if _root is not None else schema
    where = _path or "(root)"
    if "$ref" in schema:
        target = _resolve_ref(root, schema["$ref"])
        if target is None:
            return [f"{where}: unresolvable $ref {schema['$ref']!r}"]
        return schema_errors(target, value, _root=root, _path=_path)

    errors: list[str] = []
    expected = schema.get("type")
    if expected is not None:
        names = expected if isinstance(expected, list) else [expected]
        if not any(_JSON_TYPES.get(n, lambda _v: True)(value) for n in names):
            return [f"{where}: expected {'/'.join(names)}, got {_json_type_name(value)}"]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{where}: number must be finite"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: must be one of {schema['enum']!r}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{where}: must be {schema['const']!r}")

    for key in ("anyOf", "oneOf"):
        if key in schema and not any(
            not schema_errors(sub, value, _root=root, _path=_path) for sub in schema[key]
        ):
            errors.append(f"{where}: matches none of the allowed shapes ({key})")
    for sub in schema.get("allOf", []):
        errors.extend(schema_errors(sub, value, _root=root, _path=_path))

    if _JSON_TYPES["number"](value):
        errors.extend(_bound_errors(schema, value, where))
    if isinstance(value, str | list):
        kind = "Length" if isinstance(value, str) else "Items"
        low, high = schema.get(f"min{kind}"), schema.get(f"max{kind}")
        if low is not None and len(value) < low:
            errors.append(
                f"{where}: needs at least {low} {'characters' if kind == 'Length' else 'items'}"
            )
        if high is not None and len(value) > high:
            errors.append(
                f"{where}: allows at most {high} {'characters' if kind == 'Length' else 'items'}"
            )
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errors.extend(schema_errors(schema["items"], item, _root=root, _path=f"{_path}[{i}]"))
    if isinstance(value, dict):
        errors.extend(_object_errors(schema, value, root, _path))
    return errors


def _object_errors(schema: dict[str, Any], value: dict, root: dict, path: str) -> list[str]:
    errors: list[str] = []
    properties: dict[str, Any] = schema.get("properties") or {}
    prefix = f"{path}." if path else ""
    for name in schema.get("required") or []:
        if name not in value:
            errors.append(f"{prefix}{name}: required")
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            errors.extend(
                schema_errors(properties[name], item, _root=root, _path=f"{prefix}{name}")
            )
        elif extra is False:
            errors.append(f"{prefix}{name}: unexpected property")
        elif isinstance(extra, dict):
            errors.extend(schema_errors(extra, item, _root=root, _path=f"{prefix}{name}"))
    return errors


def _bound_errors(schema: dict[str, Any], value: float, where: str) -> list[str]:
    checks = (
        ("minimum", lambda b: value >= b, ">="),
        ("maximum", lambda b: value <= b, "<="),
        ("exclusiveMinimum", lambda b: value > b, ">"),
        ("exclusiveMaximum", lambda b: value < b, "<"),
    )
    return [
        f"{where}: must be {op} {schema[key]}"
        for key, ok, op in checks
        if isinstance(schema.get(key), int | float) and not ok(schema[key])
    ]


def _resolve_ref(root: dict[str, Any], ref: str) -> dict[str, Any] | None:
    if not ref.startswith("#"):
        return None
    node: Any = root
    for part in [p for p in ref[1:].split("/") if p]:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, dict) else None


def _json_type_name(value: Any) -> str:
    for name, check in _JSON_TYPES.items():
        if name != "number" and check(value):
            return name
    return "number" if _JSON_TYPES["number"](value) else type(value).__name__
