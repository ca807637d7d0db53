"""The ContextAPI: the one typed gateway through which agents read (and, within policy, change)
Arcpoint's state.

The tools live in `context_api.agent_tools`, one module per concern (fleet, decisions, models,
drift, quality, experiments, alerts, ...); `ContextAPI` puts them together. Each public method is
also a tool: a name, a description and the JSON schema of its pydantic input
(`ContextAPI.tools()`); `ContextAPI.call(name, args)` validates, runs, and turns any failure into
an error result, so a tool problem reaches the model as data it can react to, never as an
exception through the graph.

`context_api` cannot import `agents`: the specs here are plain (`ToolDef`), and the agents wrap
them into their own `ToolSpec`s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from context_api.agent_tools.alerts import AlertTools
from context_api.agent_tools.base import (
    EMPTY_HINT,
    EmptyStoreError,
    ToolBase,
    ToolDef,
    ToolOutcome,
    p_over,
)
from context_api.agent_tools.decisions import DecisionTools
from context_api.agent_tools.drift import DriftTools
from context_api.agent_tools.experiments import ExperimentTools
from context_api.agent_tools.fleet import FleetTools
from context_api.agent_tools.learning import LearningTools
from context_api.agent_tools.models import ModelTools
from context_api.agent_tools.quality import QualityTools
from context_api.agent_tools.usage import UsageTools
from context_api.agent_tools.whatif import WhatIfTools
from context_api.timefmt import ToolError, iso, parse_time


class ContextAPI(
    FleetTools,
    UsageTools,
    WhatIfTools,
    DecisionTools,
    ModelTools,
    DriftTools,
    QualityTools,
    ExperimentTools,
    LearningTools,
    AlertTools,
):
    """Typed, read-mostly access to the store for agents and operators (see `ToolBase` for the
    constructor's arguments and where the numbers come from)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tools = self._registry()

    def _registry(self) -> dict[str, ToolDef]:
        out: dict[str, ToolDef] = {}
        for cls in reversed(type(self).__mro__):
            for info in vars(cls).get("TOOLS", ()):
                out[info.name] = ToolDef(
                    info.name,
                    info.description,
                    info.input_model,
                    info.output_model,
                    getattr(self, info.method),
                    info.writes,
                )
        return out

    def tools(self, names: Sequence[str] | None = None, *, writes: bool = False) -> list[ToolDef]:
        """Tool definitions, optionally a subset by name; write tools only when asked for."""
        if names is None:
            return [d for d in self._tools.values() if writes or not d.writes]
        unknown = [n for n in names if n not in self._tools]
        if unknown:
            raise ValueError(f"unknown tools {unknown}; known: {sorted(self._tools)}")
        return [self._tools[n] for n in names]

    def call(self, name: str, args: dict[str, Any] | None = None) -> ToolOutcome:
        """Run a tool by name. Never raises: a failure is an error outcome with a message."""
        tool = self._tools.get(name)
        if tool is None:
            return ToolOutcome(
                ok=False, error=f"unknown tool {name!r}; known: {sorted(self._tools)}"
            )
        try:
            params = tool.input_model.model_validate(args or {})
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
                for e in err.errors(include_url=False, include_input=False)
            )
            return ToolOutcome(ok=False, error=f"invalid input: {problems}")
        try:
            out = tool.method(params)
        except ToolError as err:
            return ToolOutcome(ok=False, error=str(err))
        except Exception as err:  # a bug or a storage problem: data for the model, not a crash
            return ToolOutcome(ok=False, error=f"{name} failed: {type(err).__name__}: {err}")
        return ToolOutcome(ok=True, content=out.model_dump(mode="json"))


__all__ = [
    "EMPTY_HINT",
    "ContextAPI",
    "EmptyStoreError",
    "ToolBase",
    "ToolDef",
    "ToolError",
    "ToolOutcome",
    "iso",
    "p_over",
    "parse_time",
]
