"""Reading eval entries from YAML files: one entry a file, folders expanded to their files.

Every file is checked before any runs, and a bad one is refused with a message that names the
file, the field and what is wrong (an unknown field gets a "did you mean"), never a traceback.
Two entries with one name are refused, since reports and plots are named after entries.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, TypeAdapter, ValidationError

from evals.scenario_file import (
    DriftBenchmarkFile,
    EvalEntry,
    NabBenchmarkFile,
    ScenarioFile,
    ScenarioFileError,
)
from tools.sim.chaos import ChaosEvent

_ENTRY = TypeAdapter(
    Annotated[ScenarioFile | NabBenchmarkFile | DriftBenchmarkFile, Field(discriminator="kind")]
)


def _format_errors(err: ValidationError, data: Any) -> list[str]:
    problems = []
    for e in err.errors(include_url=False):
        loc = e["loc"]
        # Drop pydantic's union tags (`scenario`, `simulated`, ...) from the location.
        parts = [str(p) for p in loc if not (isinstance(p, str) and p in _TAGS)]
        where = ""
        for p in parts:
            where += f"[{p}]" if p.isdigit() else (f".{p}" if where else p)
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if e["type"] == "extra_forbidden":
            field = parts[-1] if parts else "?"
            known = _siblings(data, parts[:-1])
            close = difflib.get_close_matches(field, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            msg = f"unknown field{hint}"
        elif e["type"] == "union_tag_invalid":
            ctx = e.get("ctx") or {}
            msg = f"unknown kind {ctx.get('tag')!r}; known: {ctx.get('expected_tags')}"
        problems.append(f"{where or '(entry)'}: {msg}")
    return problems


_TAGS = {
    "scenario",
    "nab_benchmark",
    "drift_benchmark",
    "simulated",
    "arrival_trace",
    "telemetry",
    "EngineSpec",
    "str",
    "function-after[_check(), ScenarioFile]",
}


def _siblings(data: Any, parts: list[str]) -> list[str]:
    """Field names valid next to the unknown one (for the "did you mean" hint)."""
    model: Any = {"scenario": ScenarioFile, "nab_benchmark": NabBenchmarkFile}.get(
        data.get("kind", "scenario") if isinstance(data, dict) else "scenario", DriftBenchmarkFile
    )
    node = data
    for p in parts:
        if isinstance(node, dict):
            node = node.get(p)
        elif isinstance(node, list) and p.isdigit() and int(p) < len(node):
            node = node[int(p)]
        sub = None
        if model is not None and hasattr(model, "model_fields") and p in model.model_fields:
            sub = _model_of(model.model_fields[p].annotation, node)
        model = sub if sub is not None else (model if p.isdigit() else None)
    if model is None or not hasattr(model, "model_fields"):
        return []
    return sorted(model.model_fields)


def _model_of(annotation: Any, node: Any) -> Any:
    args = getattr(annotation, "__args__", ())
    candidates = [a for a in (annotation, *args) if hasattr(a, "model_fields")]
    for a in args:
        candidates += [b for b in getattr(a, "__args__", ()) if hasattr(b, "model_fields")]
    if isinstance(node, dict) and "kind" in node:
        for c in candidates:
            kind = c.model_fields.get("kind")
            if kind is not None and node["kind"] in getattr(kind.annotation, "__args__", ()):
                return c
    if annotation is ChaosEvent or ChaosEvent in args:
        return ChaosEvent
    return candidates[0] if candidates else None


def parse_entry(data: Any, source: str | Path = "<memory>") -> EvalEntry:
    """Validate one entry (a mapping, as read from YAML)."""
    if not isinstance(data, dict):
        raise ScenarioFileError(
            source, [f"the file must hold a mapping of fields, got {type(data).__name__}"]
        )
    if "kind" not in data:
        data = {"kind": "scenario", **data}
    try:
        entry = _ENTRY.validate_python(data)
    except ValidationError as err:
        raise ScenarioFileError(source, _format_errors(err, data)) from None
    if source != "<memory>":
        entry._source = Path(source)
    return entry


def load_file(path: str | Path) -> EvalEntry:
    """Read and validate one YAML entry."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioFileError(p, ["no such file"]) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ScenarioFileError(p, [f"cannot read: {err}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ScenarioFileError(p, [f"{where}not valid YAML: {problem}"]) from None
    if data is None:
        raise ScenarioFileError(p, ["the file is empty"])
    return parse_entry(data, p)


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders give their `*.yaml` / `*.yml` files (not recursively), sorted."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml") and f.is_file())
            if not found:
                raise ScenarioFileError(p, ["the folder holds no .yaml scenario files"])
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise ScenarioFileError(p, ["no such file or folder"])
    return out


def load_paths(paths: Iterable[str | Path]) -> list[EvalEntry]:
    """Every entry under `paths`. All files are checked; the error lists every bad one. Two
    entries with one name are refused (reports and plots are named after entries)."""
    entries: list[EvalEntry] = []
    problems: list[str] = []
    for f in expand_paths(paths):
        try:
            entries.append(load_file(f))
        except ScenarioFileError as err:
            problems.append(str(err))
    if problems:
        raise ScenarioFileError("scenario files", problems)
    seen: dict[str, Path | None] = {}
    for e in entries:
        if e.name in seen:
            raise ScenarioFileError(
                e.source or e.name,
                [f"the name {e.name!r} is already used by {seen[e.name]}"],
            )
        seen[e.name] = e.source
    return entries
