"""Formatting shared by the offline reasoner's answers, and the tag every answer carries.

Every figure in an answer is read from a tool result (nothing is computed that a tool did not
return, beyond formatting), and every answer starts with `OFFLINE_TAG` so a reader always knows
it came from the deterministic reasoner and not from a language model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from agents.llm.base import ToolCallRecord

OFFLINE_TAG = "[offline reasoner]"
FOOTER = (
    "(Answered by Arcpoint's offline reasoner: deterministic rules over the tools' results, "
    "no language model. Set ANTHROPIC_API_KEY to answer with Claude.)"
)


def fallback_footer(model: str, reason: str) -> str:
    """The footer when a configured model failed and the offline reasoner stood in: the key is
    set, so telling the user to set it would send them the wrong way."""
    return (
        f"(Answered by Arcpoint's offline reasoner because {model} could not answer ({reason}); "
        "check the model endpoint and key, then ask again.)"
    )


def last(done: Sequence[ToolCallRecord], name: str) -> dict[str, Any] | None:
    """The newest successful result of a tool."""
    for call in reversed(done):
        if call.name == name and not call.result.is_error and isinstance(call.result.content, dict):
            return call.result.content
    return None


def every(done: Sequence[ToolCallRecord], name: str) -> list[dict[str, Any]]:
    """Every successful result of a tool, in call order."""
    return [
        c.result.content
        for c in done
        if c.name == name and not c.result.is_error and isinstance(c.result.content, dict)
    ]


def errors(done: Sequence[ToolCallRecord]) -> list[tuple[str, str]]:
    """(tool, message) of each failed call."""
    out = []
    for call in done:
        if call.result.is_error:
            content = call.result.content
            msg = content.get("error") if isinstance(content, dict) else str(content)
            out.append((call.name, str(msg)))
    return out


def t(iso: str | None) -> str:
    """'2023-11-14T22:43:20Z' -> '22:43:20 UTC' (the date is given once, in the header)."""
    if not iso:
        return "unknown time"
    return f"{iso[11:19]} UTC" if len(iso) >= 19 else iso


def day(iso: str | None) -> str:
    return iso[:10] if iso else "unknown date"


def span(since: str | None, until: str | None) -> str:
    """'from 22:00:00 UTC to 22:58:20 UTC on 2023-11-14' (each date given when they differ)."""
    if day(since) == day(until):
        return f"from {t(since)} to {t(until)} on {day(until)}"
    return f"from {t(since)} on {day(since)} to {t(until)} on {day(until)}"


def ms(v: Any) -> str:
    return "n/a" if v is None else f"{v:,.0f} ms"


def pct(v: Any, digits: int = 0) -> str:
    return "n/a" if v is None else f"{100 * v:.{digits}f}%"


def cost(v: Any) -> str:
    """Dollars per request, to three significant figures, never in exponent notation."""
    if v is None:
        return "n/a"
    if v == 0 or abs(v) >= 0.01:
        return f"${v:.4g}/request"
    digits = max(0, 2 - math.floor(math.log10(abs(v))))
    return f"${v:.{digits}f}/request"
