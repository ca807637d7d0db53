"""LLM clients behind one interface (`LLMModel.run -> LLMRun`).

`ClaudeModel` is imported lazily: the `anthropic` SDK takes about a second to import, and the
offline path never needs it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from agents.llm.base import (
    ChatMessage,
    ErrorKind,
    LLMError,
    LLMModel,
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
from agents.llm.budget import Budget, BudgetCheck, BudgetUsage
from agents.llm.pricing import cost_usd, price_for

if TYPE_CHECKING:
    from agents.llm.claude import DEFAULT_MODEL_ID, ClaudeConfig, ClaudeModel

__all__ = [
    "DEFAULT_MODEL_ID",
    "Budget",
    "BudgetCheck",
    "BudgetUsage",
    "ChatMessage",
    "ClaudeConfig",
    "ClaudeModel",
    "ErrorKind",
    "LLMError",
    "LLMModel",
    "LLMRun",
    "LLMTurn",
    "ModelReply",
    "TokenUsage",
    "ToolCallRecord",
    "ToolExecutor",
    "ToolResult",
    "ToolSpec",
    "TurnRequest",
    "anthropic_key_configured",
    "cost_usd",
    "price_for",
]

_LAZY = {"ClaudeModel", "ClaudeConfig", "DEFAULT_MODEL_ID"}


def anthropic_key_configured() -> bool:
    """Whether Claude can be used (ANTHROPIC_API_KEY set and non-empty); else the offline model."""
    return bool(os.environ.get("ANTHROPIC_API_KEY", "").strip())


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from agents.llm import claude

        return getattr(claude, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
