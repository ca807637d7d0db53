"""Agent cases: does the agent call the right tools and state the facts those tools returned?

A case (YAML in `evals/agent_cases/`) gives a question, the state to set up (a scenario file
replayed into a fresh store up to a time: "now" is the last tick), the tools that must be called
(`tools.must_call`: a subset match) and may be called (`tools.only`: a superset match), the facts
the answer must state and the claims it must not make:

    facts:
      - {text: offline reasoner}                        # a literal, case-insensitive
      - {pattern: "no (experiments?|.{0,30}experiments? (are|is) stored)"}   # a regex
      - {tool: fleet_state, path: "backends[status=failing].backend"}
      - {tool: fleet_state, path: "backends[backend=b2].p95_ms", tolerance_pct: 5}
    must_not_claim:
      - {pattern: "b0 (is|looks) (healthy|ok)", why: "b0 has failed"}

A fact with `tool` and `path` is read from that tool's own result in this run (so it checks the
answer against the evidence, not against a figure frozen in the case): a string must appear as
a word, a number must appear within the tolerance (`scale: 100` reads a fraction as a percent).
`match: all` needs every value the path gives. Path syntax: dotted keys, `[i]` for an index,
`[*]` for every item, `[key=value]` for the items whose key has that value, `@keys` for the keys
of a mapping. A number counts as stated within `tolerance_pct` (default 2%) or
`tolerance_abs`, or rounded to a whole number when it is 10 or more. Every backend id
the answer names must exist in the fleet (a cheap hallucination check).

The offline reasoner is always scored. Claude is scored when asked (and a key is set); its run
is recorded at the HTTP layer (each request body and response of the Messages API, no headers,
so no key) into `recordings/<case>.json`, and `--replay DIR` plays those responses back through
an httpx2 MockTransport to the real SDK: the same run, re-scored, with no API call.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from evals.agent_states import Setup, build_state
from evals.scenario_file import ForecasterSpec, PositiveSeconds, ScenarioFileError
from evals.scenario_loading import expand_paths

Progress = Callable[[str], None]
START_TS = 1_700_000_000.0
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
_NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?")
_BACKEND_ID = re.compile(r"\b(b\d+)\b")
SMALL_FORECASTER = ForecasterSpec(history_hours=3, n_estimators=10, max_depth=8)


class AgentCaseError(ValueError):
    pass


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StateSpec(_M):
    """What the store holds when the question is asked (`evals.agent_states`)."""

    scenario: str | None = Field(None, min_length=1)
    """A scenario file (relative to the case file), replayed through the predictive router with
    the fleet monitor into a fresh store."""
    until: PositiveSeconds | None = None
    """Stop the replay here: "now" for the agent is the last tick."""
    ingest: str | None = Field(None, min_length=1)
    """Or: a telemetry file (CSV or JSONL, relative to the case file) ingested into a fresh
    store, as `arcpoint ingest` would (no decisions, no forecaster)."""
    setup: list[Setup] = Field(default_factory=list)
    """Named additions after the replay or ingest (see `evals.agent_states`)."""
    forecaster: ForecasterSpec = SMALL_FORECASTER

    @model_validator(mode="after")
    def _one_source(self) -> StateSpec:
        if (self.scenario is None) == (self.ingest is None):
            raise ValueError("a state is a `scenario` (with `until`) or an `ingest` file")
        if self.scenario is not None and self.until is None:
            raise ValueError("a scenario state needs `until`")
        return self


class CallSpec(_M):
    tool: str
    args: dict[str, Any]


class ToolsSpec(_M):
    must_call: list[str] = Field(default_factory=list)
    """Every one of these must be called (the calls made are a superset of this list)."""
    only: list[str] | None = None
    """Nothing outside these may be called (the calls made are a subset of this list)."""
    must_not_call: list[str] = Field(default_factory=list)
    """None of these may be called (e.g. no tool at all for an out-of-scope question)."""
    called_with: list[CallSpec] = Field(default_factory=list)
    """A call of the tool with at least these arguments (the time window read from the
    question, the backend a follow-up kept)."""


class FactSpec(_M):
    text: str | None = None
    pattern: str | None = None
    """A regular expression the answer must match (case-insensitive)."""
    tool: str | None = None
    path: str | None = None
    match: Literal["any", "all"] = "any"
    tolerance_pct: float = Field(2.0, ge=0, le=100)
    tolerance_abs: float = Field(0.0, ge=0)
    scale: float = Field(1.0, gt=0)
    label: str | None = None
    models: list[str] | None = None
    """Score this fact only for these models (e.g. the offline reasoner's own wording)."""

    @model_validator(mode="after")
    def _one_source(self) -> FactSpec:
        if sum(x is not None for x in (self.text, self.pattern, self.tool)) != 1:
            raise ValueError("a fact is one of `text`, `pattern`, or `tool` with `path`")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as err:
                raise ValueError(f"pattern is not a valid regular expression: {err}") from None
        if self.tool is not None and not self.path:
            raise ValueError("a fact read from a tool needs a `path` into its result")
        return self

    def describe(self) -> str:
        if self.label:
            return self.label
        if self.text is not None:
            return repr(self.text)
        return f"/{self.pattern}/" if self.pattern is not None else f"{self.tool}: {self.path}"


class ClaimSpec(_M):
    pattern: str = Field(min_length=1)
    why: str = ""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as err:
            raise ValueError(f"not a valid regular expression: {err}") from None
        return v


class AgentCase(_M):
    name: str = Field(pattern=_NAME, max_length=80)
    description: str = ""
    question: str = Field(min_length=1, max_length=2000)
    thread: list[str] = Field(default_factory=list, max_length=10)
    """Earlier questions of the same chat thread, asked first (their answers are not scored)."""
    agent: str | None = None
    """Send the question to this agent; default: the operator graph's own dispatch."""
    state: StateSpec
    tools: ToolsSpec = Field(default_factory=ToolsSpec)
    facts: list[FactSpec] = Field(default_factory=list)
    must_not_claim: list[ClaimSpec] = Field(default_factory=list)
    known_backends_only: bool = True
    _source: Path | None = None

    @property
    def source(self) -> Path | None:
        return self._source

    def _relative(self, name: str) -> Path:
        p = Path(name)
        if not p.is_absolute() and self._source is not None:
            p = self._source.parent / p
        return p

    def scenario_path(self) -> Path:
        assert self.state.scenario is not None
        return self._relative(self.state.scenario)

    def data_path(self) -> Path:
        assert self.state.ingest is not None
        return self._relative(self.state.ingest)

    def state_key(self) -> str:
        """Cases with the same key share one built store."""
        source = self.scenario_path() if self.state.scenario else self.data_path()
        return f"{source.resolve()}|{self.state.model_dump_json(exclude={'scenario', 'ingest'})}"


def load_cases(paths: Iterable[str | Path]) -> list[AgentCase]:
    cases: list[AgentCase] = []
    problems: list[str] = []
    try:
        files = expand_paths(paths)
    except ScenarioFileError as err:
        raise AgentCaseError(str(err)) from None
    for f in files:
        try:
            data = yaml.safe_load(f.read_text(encoding="utf-8"))
            case = AgentCase.model_validate(data)
        except yaml.YAMLError as err:
            problems.append(f"{f}: not valid YAML: {err}")
            continue
        except ValidationError as err:
            lines = [
                f"{'.'.join(str(p) for p in e['loc']) or '(case)'}: "
                + e["msg"].removeprefix("Value error, ")
                for e in err.errors(include_url=False)
            ]
            problems.append(f"{f}: " + "; ".join(lines))
            continue
        case._source = f
        path = case.scenario_path() if case.state.scenario else case.data_path()
        if not path.is_file():
            problems.append(f"{f}: the state's file {path} is not a file")
            continue
        cases.append(case)
    names = [c.name for c in cases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"case names used twice: {dupes}")
    if problems:
        raise AgentCaseError("invalid agent cases:\n" + "\n".join(f"  - {p}" for p in problems))
    return cases


# --- reading tool results -------------------------------------------------------------------------

_STEP = re.compile(r"([^.\[\]]+)|\[([^\]]*)\]")


def resolve_path(value: Any, path: str) -> list[Any]:
    """Values at `path` in a JSON-like value (see the module docstring); [] when absent."""
    current = [value]
    for m in _STEP.finditer(path):
        key, sel = m.group(1), m.group(2)
        nxt: list[Any] = []
        for v in current:
            if key == "@keys":
                if isinstance(v, dict):
                    nxt.extend(v)
            elif key is not None:
                if isinstance(v, dict) and key in v:
                    nxt.append(v[key])
            elif isinstance(v, list):
                if sel == "*":
                    nxt.extend(v)
                elif "=" in sel:
                    k, want = (s.strip() for s in sel.split("=", 1))
                    nxt.extend(x for x in v if isinstance(x, dict) and str(x.get(k)) == want)
                else:
                    with contextlib.suppress(ValueError, IndexError):
                        nxt.append(v[int(sel)])
        current = nxt
    return current


def numbers_in(text: str) -> list[float]:
    out = []
    for m in _NUMBER.finditer(text):
        try:
            out.append(float(m.group(0).replace(",", "")))
        except ValueError:
            continue
    return out


def states_value(answer: str, value: Any, fact: FactSpec) -> bool:
    """Whether the answer states `value` (a word for text, a figure within tolerance)."""
    if isinstance(value, bool) or value is None:
        return str(value).lower() in answer.lower()
    if isinstance(value, int | float):
        v = float(value) * fact.scale
        if not math.isfinite(v):
            return False
        tol = max(fact.tolerance_abs, abs(v) * fact.tolerance_pct / 100.0)
        for n in numbers_in(answer):
            rounded = n == int(n) and abs(v) >= 10  # "13 rps" states 12.6 rps
            if abs(n - v) <= max(tol, 0.5 if rounded else 0.0):
                return True
        return False
    text = str(value)
    return re.search(rf"(?<![\w-]){re.escape(text)}(?![\w-])", answer, re.I) is not None


@dataclass(frozen=True)
class Check:
    kind: str
    name: str
    passed: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "passed": self.passed, "detail": self.detail}


def score_answer(
    case: AgentCase,
    answer: str,
    tools_called: Sequence[str],
    evidence: Sequence[dict[str, Any]],
    fleet: Sequence[str] = (),
    model: str = "offline",
) -> list[Check]:
    """Every check of a case against one answer and the tool calls behind it."""
    checks: list[Check] = []
    called = set(tools_called)
    for t in case.tools.must_call:
        checks.append(
            Check("tools", f"calls {t}", t in called, f"called: {sorted(called) or 'nothing'}")
        )
    for want in case.tools.called_with:
        made = [e.get("input") or {} for e in evidence if e.get("tool") == want.tool]
        ok = any(all(m.get(k) == v for k, v in want.args.items()) for m in made)
        checks.append(
            Check(
                "tools",
                f"calls {want.tool} with {want.args}",
                ok,
                f"called with {made}" if made else f"{want.tool} was not called",
            )
        )
    for t in case.tools.must_not_call:
        checks.append(
            Check("tools", f"does not call {t}", t not in called, f"called: {sorted(called)}")
        )
    if case.tools.only is not None:
        extra = sorted(called - set(case.tools.only))
        checks.append(
            Check(
                "tools",
                "calls nothing else",
                not extra,
                f"also called {extra}" if extra else f"within {case.tools.only}",
            )
        )
    for fact in case.facts:
        if fact.models is not None and model not in fact.models:
            continue
        if fact.text is not None or fact.pattern is not None:
            if fact.text is not None:
                ok = fact.text.lower() in answer.lower()
            else:
                ok = re.search(fact.pattern or "", answer, re.I) is not None
            checks.append(Check("fact", fact.describe(), ok, "stated" if ok else "not stated"))
            continue
        results = [
            e.get("result") for e in evidence if e.get("tool") == fact.tool and e.get("ok", True)
        ]
        if not results:
            checks.append(Check("fact", fact.describe(), False, f"{fact.tool} was not called"))
            continue
        values = [v for r in results for v in resolve_path(r, fact.path or "")]
        values = [v for v in values if not isinstance(v, dict | list)]
        if not values:
            checks.append(
                Check("fact", fact.describe(), False, f"{fact.path} gave no value in the result")
            )
            continue
        stated = [v for v in values if states_value(answer, v, fact)]
        ok = bool(stated) if fact.match == "any" else len(stated) == len(values)
        missing = [v for v in values if v not in stated]
        detail = (
            f"stated {stated[:5]}"
            if ok
            else f"the tool said {values[:5]}; the answer states {stated if stated else 'none'}"
        )
        if ok and fact.match == "all" and missing:
            detail += f"; missing {missing[:5]}"
        checks.append(Check("fact", fact.describe(), ok, detail))
    for claim in case.must_not_claim:
        m = re.search(claim.pattern, answer, re.I)
        checks.append(
            Check(
                "claim",
                f"does not claim /{claim.pattern}/",
                m is None,
                f"claimed {m.group(0)!r}" + (f" ({claim.why})" if claim.why else "")
                if m
                else "not claimed",
            )
        )
    if case.known_backends_only and fleet:
        named = sorted(set(_BACKEND_ID.findall(answer)))
        unknown = [b for b in named if b not in fleet]
        checks.append(
            Check(
                "claim",
                "names only real backends",
                not unknown,
                f"unknown backends {unknown}" if unknown else f"named {named}",
            )
        )
    return checks


# --- Claude, recorded and replayed at the HTTP layer -------------------------------------------


class RecordingTransport:
    """An httpx2 transport that forwards to a real one and keeps each exchange (no headers)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.exchanges: list[dict[str, Any]] = []

    def handle_request(self, request: Any) -> Any:
        response = self.inner.handle_request(request)
        body = response.read()
        self.exchanges.append(
            {
                "request": {
                    "method": request.method,
                    "path": request.url.path,
                    "body": _json_or_text(request.content),
                },
                "response": {
                    "status": response.status_code,
                    "content_type": response.headers.get("content-type", "application/json"),
                    "request_id": response.headers.get("request-id"),
                    "retry_after": response.headers.get("retry-after"),
                    "body": _json_or_text(body),
                },
            }
        )
        return response

    def close(self) -> None:
        self.inner.close()


class ReplayTransport:
    """Plays recorded exchanges back in order; counts requests that differ from the recording."""

    def __init__(self, exchanges: Sequence[dict[str, Any]]) -> None:
        self.exchanges = list(exchanges)
        self.position = 0
        self.mismatches: list[int] = []
        self.exhausted = False

    def __call__(self, request: Any) -> Any:
        import httpx2

        if self.position >= len(self.exchanges):
            self.exhausted = True
            return httpx2.Response(
                400,
                json={
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": "replay exhausted"},
                },
            )
        ex = self.exchanges[self.position]
        if _json_or_text(request.content) != ex["request"]["body"]:
            self.mismatches.append(self.position)
        self.position += 1
        r = ex["response"]
        headers = {"content-type": r.get("content_type") or "application/json"}
        for key, name in (("request_id", "request-id"), ("retry_after", "retry-after")):
            if r.get(key):
                headers[name] = r[key]
        body = r["body"]
        content = json.dumps(body).encode() if not isinstance(body, str) else body.encode()
        return httpx2.Response(r["status"], headers=headers, content=content)


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw.decode("utf-8", "replace")


def _claude(
    recorder: RecordingTransport | None,
    replay: ReplayTransport | None,
    model_id: str | None = None,
) -> Any:
    import httpx2

    from agents.llm.claude import DEFAULT_MODEL_ID, ClaudeConfig, ClaudeModel

    model_id = model_id or DEFAULT_MODEL_ID
    if replay is not None:
        return ClaudeModel(
            ClaudeConfig(model_id=model_id, calls_per_minute=None, tokens_per_hour=None),
            api_key="replay-without-a-key",
            base_url="http://replay.invalid",
            http_client=httpx2.Client(transport=httpx2.MockTransport(replay)),
        )
    assert recorder is not None
    return ClaudeModel(
        ClaudeConfig(model_id=model_id), http_client=httpx2.Client(transport=recorder)
    )


# --- running the cases --------------------------------------------------------------------------


@dataclass
class CaseRun:
    case: str
    model: str
    answer: str
    tools_called: list[str]
    checks: list[Check]
    agent: str | None = None
    llm: str | None = None
    trace_id: str | None = None
    seconds: float = 0.0
    error: str | None = None
    replay: dict[str, Any] | None = None
    evidence: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.error is None and all(c.passed for c in self.checks)

    @property
    def score(self) -> float:
        return sum(c.passed for c in self.checks) / len(self.checks) if self.checks else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "model": self.model,
            "passed": self.passed,
            "score": round(self.score, 3),
            "agent": self.agent,
            "llm": self.llm,
            "trace_id": self.trace_id,
            "tools_called": self.tools_called,
            "answer": self.answer,
            "checks": [c.to_json() for c in self.checks],
            "seconds": round(self.seconds, 2),
            "error": self.error,
            "replay": self.replay,
            "evidence": self.evidence,
        }


@dataclass
class AgentEvalResult:
    runs: list[CaseRun] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.runs)

    def by_model(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for r in self.runs:
            m = out.setdefault(r.model, {"cases": 0, "passed": 0, "score_sum": 0.0})
            m["cases"] += 1
            m["passed"] += r.passed
            m["score_sum"] += r.score
        for m in out.values():
            m["mean_score"] = round(m.pop("score_sum") / m["cases"], 3) if m["cases"] else None
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "models": self.by_model(),
            "runs": [r.to_json() for r in self.runs],
        }

    def table(self) -> str:
        lines = [
            "| case | model | passed | score | tools called | failed checks |",
            "|---|---|---|---:|---|---|",
        ]
        for r in self.runs:
            failed = "; ".join(f"{c.name}: {c.detail}" for c in r.checks if not c.passed)
            if r.error:
                failed = f"error: {r.error}"
            lines.append(
                f"| {r.case} | {r.model} | {'yes' if r.passed else '**no**'} | {r.score:.2f} "
                f"| {', '.join(r.tools_called) or '-'} | {failed[:300] or '-'} |"
            )
        summary = ", ".join(
            f"{m}: {v['passed']}/{v['cases']} cases (mean score {v['mean_score']})"
            for m, v in self.by_model().items()
        )
        return "\n".join(lines) + f"\n\n{summary}\n"


def ask(case: AgentCase, db: Path, model: Any) -> Any:
    """The case's thread then its question on the state in `db`, through the operator graph (as
    `arcpoint chat` would); returns the scored turn."""
    from agents.graph import OperatorGraph
    from context_api.api import ContextAPI
    from context_api.store import Store
    from context_api.traces import TraceStore

    store = Store(db)
    try:
        api = ContextAPI(store)
        thread = f"case-{case.name}-{model.name}"
        checkpoint = db if case.thread else None
        with OperatorGraph(api, model, checkpoint_db=checkpoint, traces=TraceStore(store)) as g:
            for earlier in case.thread:
                g.ask(earlier, thread_id=thread, agent=case.agent)
            return g.ask(case.question, thread_id=thread, agent=case.agent)
    finally:
        store.close()


def run_cases(
    cases: Sequence[AgentCase],
    *,
    models: Sequence[str],
    out_dir: Path,
    replay_dir: Path | None = None,
    record_dir: Path | None = None,
    claude_model_id: str | None = None,
    claude_transport: Any = None,
    progress: Progress = lambda _m: None,
) -> AgentEvalResult:
    """Set up each case's state, ask each model, score the answers, write the results.

    `models`: "offline", "claude" (recorded into `out_dir/recordings/`) and "claude-replay"
    (played back from `replay_dir`). `claude_transport` replaces the real HTTP transport under
    the recorder (tests pass a MockTransport)."""
    from agents.offline import OfflineModel

    out_dir.mkdir(parents=True, exist_ok=True)
    result = AgentEvalResult()
    forecasters: dict[str, Any] = {}
    states: dict[str, tuple[Path, list[str]]] = {}
    for case in cases:
        key = case.state_key()
        if key not in states:
            base = out_dir / "states" / f"state{len(states)}.db"
            progress(f"setting up the state of {case.name}: {case.state.model_dump_json()}")
            fleet = build_state(case, base, forecasters)
            states[key] = (base, fleet)
        base, fleet = states[key]
        for model_name in models:
            db = base
            t0 = time.perf_counter()
            recorder = replay = None
            if model_name == "offline":
                model: Any = OfflineModel()
            elif model_name == "claude":
                import httpx2

                recorder = RecordingTransport(claude_transport or httpx2.HTTPTransport())
                model = _claude(recorder, None, claude_model_id)
            elif model_name == "claude-replay":
                rec_path = (replay_dir or out_dir / "recordings") / f"{case.name}.json"
                if not rec_path.is_file():
                    result.runs.append(
                        CaseRun(case.name, model_name, "", [], [], error=f"no recording {rec_path}")
                    )
                    continue
                recording = json.loads(rec_path.read_text())
                replay = ReplayTransport(recording["exchanges"])
                model = _claude(None, replay, recording.get("model"))
            else:
                raise ValueError(f"unknown model {model_name!r}")
            try:
                turn = ask(case, db, model)
            except Exception as err:  # a broken run is a failed case, not a crashed eval
                result.runs.append(
                    CaseRun(
                        case.name,
                        model_name,
                        "",
                        [],
                        [],
                        seconds=time.perf_counter() - t0,
                        error=f"{type(err).__name__}: {err}",
                    )
                )
                progress(f"{case.name} [{model_name}]: ERROR {err}")
                continue
            checks = score_answer(
                case,
                turn.answer,
                turn.tools_called,
                turn.evidence,
                fleet,
                model_name.removesuffix("-replay"),
            )
            run = CaseRun(
                case.name,
                model_name,
                turn.answer,
                list(turn.tools_called),
                checks,
                agent=turn.agent,
                llm=turn.llm,
                trace_id=turn.trace_id,
                seconds=time.perf_counter() - t0,
                evidence=list(turn.evidence),
            )
            if recorder is not None:
                rec_dir = record_dir or out_dir / "recordings"
                rec_dir.mkdir(parents=True, exist_ok=True)
                (rec_dir / f"{case.name}.json").write_text(
                    json.dumps(
                        {
                            "case": case.name,
                            "question": case.question,
                            "model": getattr(model, "model_id", None),
                            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "exchanges": recorder.exchanges,
                        },
                        indent=1,
                    )
                )
            if replay is not None:
                run.replay = {
                    "exchanges": len(replay.exchanges),
                    "used": replay.position,
                    "request_mismatches": replay.mismatches,
                    "exhausted": replay.exhausted,
                }
            result.runs.append(run)
            progress(
                f"{case.name} [{model_name}]: {'pass' if run.passed else 'FAIL'} "
                f"({sum(c.passed for c in checks)}/{len(checks)} checks, "
                f"tools {', '.join(run.tools_called) or 'none'})"
            )
    (out_dir / "agents.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    (out_dir / "agents.md").write_text("# Agent cases\n\n" + result.table())
    return result
