"""A trace as SQLite rows: the `traces` columns copied out of the hashed content, the
`trace_steps` rows, the full-text index's body, and the way back to a `StoredTrace`.

The copied columns exist for listing and filtering; the hashed `content_json` stays the
authority, and `context_api.trace_verify` checks every copy against it with these same functions.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from context_api.redact import redact
from context_api.trace_records import (
    StoredTrace,
    TraceRecord,
    canonical_encode,
    canonical_json,
    finite_json,
)

FINAL_TEXT_CHARS = 4000
"""How much of the final answer the `traces.final` column (and the index) holds."""


def final_text(final: Any) -> str | None:
    """The final answer as the `traces.final` column holds it: text, or canonical JSON, cut."""
    if final is None:
        return None
    text = final if isinstance(final, str) else canonical_json(final)
    return text[:FINAL_TEXT_CHARS]


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


def search_body(content_json: str) -> str:
    """The text the full-text index holds for a trace: its values, without JSON syntax."""
    text = _RECORD_KEYS.sub(" ", content_json)
    if "\\" in text:  # JSON escapes: keep the words on either side of a newline apart
        text = text.replace("\\n", " ").replace("\\t", " ").replace("\\r", " ")
    return text.translate(_JSON_PUNCTUATION)


TRACE_COLUMNS = (
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
STEP_COLUMNS = (
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
DERIVED_TRACE_COLUMNS = TRACE_COLUMNS[1:16]


def trace_columns(content: Mapping[str, Any]) -> dict[str, Any]:
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
        "final": final_text(content.get("final")),
        "fallback_reason": content.get("fallback_reason"),
        "n_steps": len(steps),
        "input_tokens": sum(int(s.get("input_tokens") or 0) for s in steps),
        "output_tokens": sum(int(s.get("output_tokens") or 0) for s in steps),
    }


def step_rows(
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
_STEPS_SLOT_JSON = canonical_encode([_STEPS_SLOT])


def encode_content(content: Mapping[str, Any]) -> tuple[str, list[str]]:
    """(canonical JSON of the trace, canonical JSON of each step), encoding each step once.

    Canonical JSON is compositional (sorted keys, fixed separators), so the trace's text is the
    text of the trace with a placeholder for its steps, the placeholder replaced by the steps'
    own texts. The placeholder holds a per-process random token and NUL bytes (encoded as
    \\u0000), so no value can collide with it; a miss falls back to encoding the whole.
    """
    steps = content.get("steps") or []
    step_texts = [canonical_encode(step) for step in steps]
    shell = canonical_encode({**content, "steps": [_STEPS_SLOT]})
    if shell.count(_STEPS_SLOT_JSON) != 1:  # pragma: no cover - defensive
        return canonical_encode(content), step_texts
    return shell.replace(_STEPS_SLOT_JSON, "[" + ",".join(step_texts) + "]"), step_texts


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


INSERT_TRACE = (
    f"INSERT INTO traces ({', '.join(TRACE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(TRACE_COLUMNS))})"
)
INSERT_STEP = (
    f"INSERT INTO trace_steps ({', '.join(STEP_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(STEP_COLUMNS))})"
)
INSERT_FTS = "INSERT INTO traces_fts (trace_id, kind, final, body) VALUES (?, ?, ?, ?)"


@dataclass(frozen=True)
class PreparedTrace:
    """A trace made ready outside the write transaction: only its hash waits for the head."""

    text: str
    columns: dict[str, Any]
    steps: list[tuple[Any, ...]]
    body: str


def prepare_trace(record: TraceRecord, *, scrub: bool = True) -> PreparedTrace:
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
        text, step_texts = encode_content(content)
    except (ValueError, TypeError):  # NaN or infinity in free-form data: stored as null
        content = finite_json(content)
        record = TraceRecord.model_validate(content)
        text, step_texts = encode_content(content)
    return PreparedTrace(
        text=text,
        columns=trace_columns(content),
        steps=step_rows(content, step_texts),
        body=search_body(text),
    )


def fts_query(text: str) -> str:
    """User text to an FTS5 query: every word must appear (quoted, so no operator syntax)."""
    words = [w for w in re.split(r"\s+", text.strip()) if w]
    if not words:
        raise ValueError("empty search text")
    return " AND ".join('"' + w.replace('"', '""') + '"' for w in words)


def stored_trace(row: Sequence[Any]) -> StoredTrace:
    seq, text, prev, digest, recorded_at = row
    return StoredTrace(
        **json.loads(text), seq=int(seq), prev_hash=prev, hash=digest, recorded_at=recorded_at
    )
