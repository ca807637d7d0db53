"""Reasoning traces as OpenTelemetry spans, for tracing backends an operator already runs.

The shape is OTLP/JSON (resourceSpans -> scopeSpans -> spans) with the GenAI semantic-convention
attribute names where they fit. A trace becomes one root span (`invoke_agent`), each node a child
span, each LLM turn a `chat` span and each tool call an `execute_tool` span under its node. Ids
are derived from the trace id (sha256), so exporting twice gives the same ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from context_api.trace_records import StoredTrace, TraceRecord, canonical_json
from context_api.trace_rows import final_text

__all__ = ["otel_document", "otel_spans"]

_SPAN_KIND_INTERNAL = 1
_SPAN_KIND_CLIENT = 3
_STATUS_OK = 1
_STATUS_ERROR = 2


def _otel_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [_otel_value(v) for v in value]}}
    if isinstance(value, str):
        return {"stringValue": value}
    return {"stringValue": canonical_json(value)}


def _attrs(pairs: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _otel_value(v)} for k, v in pairs.items() if v is not None]


def _nanos(t: float) -> str:
    return str(round(t * 1e9))


def _hex_id(*parts: object, length: int) -> str:
    return hashlib.sha256("/".join(str(p) for p in parts).encode()).hexdigest()[:length]


def _provider(llm: str | None, model: str | None) -> str:
    if llm == "claude" or (model or "").startswith("claude"):
        return "anthropic"
    return f"arcpoint.{llm}" if llm else "arcpoint"


def otel_spans(trace: TraceRecord) -> list[dict[str, Any]]:
    """One trace as OTLP-JSON spans (root first, then the steps in order)."""
    trace_hex = _hex_id("trace", trace.trace_id, length=32)
    root_id = _hex_id("span", trace.trace_id, "root", length=16)
    span_ids = [_hex_id("span", trace.trace_id, i, length=16) for i in range(len(trace.steps))]
    provider = _provider(trace.llm, trace.model)
    root_attrs: dict[str, Any] = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": f"arcpoint.{trace.kind}",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": trace.model,
        "gen_ai.conversation.id": trace.parent_id if trace.kind == "chat" else None,
        "gen_ai.usage.input_tokens": sum(
            s.input_tokens + s.cache_read_tokens + s.cache_write_tokens for s in trace.steps
        ),
        "gen_ai.usage.output_tokens": trace.output_tokens,
        "arcpoint.trace.id": trace.trace_id,
        "arcpoint.trace.kind": trace.kind,
        "arcpoint.trace.parent_id": trace.parent_id,
        "arcpoint.llm": trace.llm,
        "arcpoint.backend": trace.backend,
        "arcpoint.prompt_hash": trace.prompt_hash,
        "arcpoint.fallback_reason": trace.fallback_reason,
        "arcpoint.final": None if trace.final is None else final_text(trace.final),
        **{f"arcpoint.model_version.{k}": v for k, v in sorted(trace.model_versions.items())},
    }
    if isinstance(trace, StoredTrace):
        root_attrs["arcpoint.trace.seq"] = trace.seq
        root_attrs["arcpoint.trace.hash"] = trace.hash
    spans = [
        {
            "traceId": trace_hex,
            "spanId": root_id,
            "name": f"invoke_agent arcpoint.{trace.kind}",
            "kind": _SPAN_KIND_INTERNAL,
            "startTimeUnixNano": _nanos(trace.started_at),
            "endTimeUnixNano": _nanos(trace.ended_at),
            "attributes": _attrs(root_attrs),
            "status": {"code": _STATUS_ERROR, "message": trace.fallback_reason}
            if trace.fallback_reason
            else {"code": _STATUS_OK},
        }
    ]
    cursor = trace.started_at  # steps without a start time are laid out one after another
    for i, step in enumerate(trace.steps):
        start = step.started_at if step.started_at is not None else cursor
        end = start + (step.duration_s or 0.0)
        if step.parent is None:
            cursor = max(cursor, end)
        attrs: dict[str, Any]
        if step.type == "llm_turn":
            name = f"chat {step.model or step.name}"
            kind = _SPAN_KIND_CLIENT
            attrs = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": _provider(trace.llm, step.model),
                "gen_ai.request.model": step.model or step.name,
                "gen_ai.response.model": step.model or step.name,
                "gen_ai.response.finish_reasons": [step.stop_reason] if step.stop_reason else None,
                "gen_ai.response.id": step.detail.get("message_id"),
                "gen_ai.usage.input_tokens": step.input_tokens
                + step.cache_read_tokens
                + step.cache_write_tokens,
                "gen_ai.usage.output_tokens": step.output_tokens,
                "gen_ai.usage.cache_read.input_tokens": step.cache_read_tokens,
                "gen_ai.usage.cache_creation.input_tokens": step.cache_write_tokens,
                "gen_ai.conversation.id": trace.parent_id if trace.kind == "chat" else None,
                "arcpoint.llm.latency_s": step.latency_s,
                "arcpoint.llm.cost_usd": step.cost_usd,
                "arcpoint.llm.input": step.input,
                "arcpoint.llm.output": step.output,
            }
        elif step.type == "tool_call":
            name = f"execute_tool {step.name}"
            kind = _SPAN_KIND_INTERNAL
            attrs = {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": step.name,
                "gen_ai.tool.type": "function",
                "gen_ai.tool.call.id": step.tool_call_id,
                "gen_ai.tool.call.arguments": step.arguments,
                "gen_ai.tool.call.result": step.result,
            }
        else:
            name = step.name
            kind = _SPAN_KIND_INTERNAL
            attrs = {"arcpoint.node.name": step.name}
        attrs["arcpoint.step.index"] = i
        if step.is_error:
            attrs["error.type"] = (step.error or "error").split(":", 1)[0][:100]
        parent = root_id if step.parent is None else span_ids[step.parent]
        spans.append(
            {
                "traceId": trace_hex,
                "spanId": span_ids[i],
                "parentSpanId": parent,
                "name": name,
                "kind": kind,
                "startTimeUnixNano": _nanos(start),
                "endTimeUnixNano": _nanos(end),
                "attributes": _attrs(attrs),
                "status": {"code": _STATUS_ERROR, "message": step.error or ""}
                if step.is_error
                else {"code": _STATUS_OK},
            }
        )
    return spans


def otel_document(traces: Iterable[TraceRecord], *, service_name: str = "arcpoint") -> dict:
    """An OTLP/JSON `ExportTraceServiceRequest`-shaped document holding every trace's spans."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        scope_version = version("arcpoint")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        scope_version = "0"
    spans = [span for trace in traces for span in otel_spans(trace)]
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": _attrs({"service.name": service_name})},
                "scopeSpans": [
                    {
                        "scope": {"name": "arcpoint.traces", "version": scope_version},
                        "spans": spans,
                    }
                ],
            }
        ]
    }
