"""Reading an operator's question by rules: what it asks, about which backends, decisions,
model versions and tier, over which time window, and whether it follows up on the thread.

The offline reasoner is built on this; it never guesses beyond it. A question it cannot place
is out of scope (said so, with what can be asked), never answered with a fleet dump; a metric
Arcpoint does not record is named as such; a follow-up ("and b2?", "what about the last two
hours?") keeps the thread's subject, backend and window unless it names new ones.

Time windows become the context API's time arguments, read against "now" (the newest telemetry):
"last 30 minutes" -> since "-30m"; "today" -> since "today" (00:00 UTC); "yesterday" -> since
"yesterday", until "today"; "since 13:00"; "between 13:00 and 14:00"; "at 14:00" -> around.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

TIERS = ("premium", "standard", "batch", "review")

_WORDS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "ten": 10,
    "twelve": 12,
    "fifteen": 15,
    "twenty": 20,
    "thirty": 30,
    "forty-five": 45,
    "ninety": 90,
}
_NUM = r"(\d+(?:\.\d+)?|" + "|".join(sorted(_WORDS, key=len, reverse=True)) + ")"
_UNIT = r"(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h|days?|d)"
_LAST = re.compile(rf"\b(?:last|past|previous|recent)\s+(?:{_NUM}\s*)?{_UNIT}\b", re.I)
_NEXT = re.compile(rf"\b(?:next|coming)\s+(?:{_NUM}\s*)?{_UNIT}\b", re.I)
_CLOCK = r"(\d{1,2}:\d{2}(?::\d{2})?)\s*(?:utc|z)?"
_BETWEEN = re.compile(rf"\b(?:between|from)\s+{_CLOCK}\s+(?:and|to|until|-)\s+{_CLOCK}", re.I)
_SINCE = re.compile(rf"\bsince\s+{_CLOCK}", re.I)
_AT = re.compile(rf"\b(?:at|around|near|about)\s+{_CLOCK}", re.I)
_ISO = re.compile(r"\b(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2})?Z?)\b")
_DECISION = re.compile(
    r"\bdecision\s+(?:id\s+)?[`'\"]?([A-Za-z0-9][A-Za-z0-9:_.\-]*[A-Za-z0-9])[`'\"]?", re.I
)
_VERSION = re.compile(
    r"\b(?:version|model)\s+[`'\"]?([A-Za-z0-9][A-Za-z0-9_.\-]*\d[A-Za-z0-9_.\-]*)[`'\"]?", re.I
)
_RF = re.compile(r"\b(rf-[0-9a-z]{6,})\b", re.I)
_APPROVAL = re.compile(r"\b(apr-[0-9a-z]{4,})\b", re.I)
_BACKEND = re.compile(r"\b(b\d+)\b", re.I)
_NAMED_BACKEND = re.compile(
    r"\bbackends?\s+[`'\"]?([A-Za-z][A-Za-z0-9_.\-]*\d[A-Za-z0-9_.\-]*)", re.I
)
_FOLLOW_UP = re.compile(
    r"^\s*(?:and|what about|how about|same for|same question for|also|ok,? and|and for|"
    r"what of|then)\b",
    re.I,
)
_TASK = re.compile(
    r"^\s*(?:please\s+)?(?:write|compose|draft|translate|summari[sz]e this|tell me a (?:joke|story)"
    r"|sing|generate (?:code|a)|create (?:a|an) (?:poem|story|essay|function|script)|print your)\b"
    r"|\b(?:poem|haiku|limerick|essay|song|recipe)\b",
    re.I,
)
"""Requests for a piece of writing or code: outside what Arcpoint does, whatever their topic."""
_PRONOUN = re.compile(r"\b(it|its|it's|that backend|this backend|that one)\b", re.I)
_ACTION = re.compile(
    r"^\s*(?:(?:please|can you|could you|would you|will you|go ahead and|i want you to)\s+)*"
    r"(?:restart|reboot|redeploy|deploy|scale|kill|stop|start|shut\s*down|turn (?:off|on)|drain"
    r"|eject|remove|add|disable|enable|fail\s*over|reroute|move (?:the )?traffic|cordon"
    r"|take \S+ (?:out|offline|down)|bring \S+ (?:back|up|online)|set|change|increase|decrease)\b",
    re.I,
)
"""A request to change the fleet: the chat reads it and never changes it (whatever the verb)."""
_RANK = {
    "latency": (
        r"\b(?:slowest|fastest|quickest|(?:highest|lowest|worst|best|most|least) (?:latency|p95"
        r"|p50)|slower|faster)\b"
    ),
    "errors": (
        r"\b(?:(?:most|fewest|least|highest|lowest|more|less) (?:errors?|error rate|failures"
        r"|failed requests|timeouts)|error-free)\b"
    ),
    "load": (
        r"\b(?:busiest|idlest|least (?:loaded|busy|used)|most (?:loaded|busy|used|traffic"
        r"|requests|load)|(?:highest|lowest) (?:load|traffic|rps))\b"
    ),
    "cost": r"\b(?:cheapest|cheaper|priciest|(?:most|least|more|less) (?:expensive|costly))\b",
}
"""A question that ranks the backends on one measure ("which is the slowest?")."""
_LOW = (
    r"\b(?:fastest|quickest|faster|lowest|least|fewest|less|idlest|best|error-free|cheapest"
    r"|cheaper)\b"
)
_DOWN = re.compile(r"\b(?:down|offline|dead|ejected|failing|failed over|out of rotation)\b", re.I)
_TRAFFIC = re.compile(
    r"\b(?:how many (?:requests|calls|failures|errors|timeouts)|requests (?:failed|were|did"
    r"|have|errored|timed out)|failed requests|(?:fleet|overall|total) error rate|error rate"
    r"|throughput|how much traffic|request volume|meeting (?:our |the )?(?:sla|slo)s?"
    r"|(?:sla|slo) (?:compliance|attainment)|within (?:our |the )?(?:sla|slo)"
    r"|how many (?:were|went|got) (?:over|late|dropped))\b",
    re.I,
)
"""Fleet-wide requests, failures and SLA attainment, now or over a window."""

UNRECORDED = {
    "gpu": "GPU utilisation or memory",
    "vram": "GPU memory",
    "cpu": "CPU usage",
    "memory": "memory usage",
    "ram": "memory usage",
    "disk": "disk usage",
    "temperature": "temperature",
    "power": "power draw",
    "bandwidth": "network bandwidth",
    "packet": "network packets",
    "p99": "p99 latency per backend (its telemetry holds p50 and p95)",
    "p999": "p99.9 latency per backend (its telemetry holds p50 and p95)",
    "p90": "p90 latency per backend (its telemetry holds p50 and p95)",
}
"""Metrics Arcpoint does not record: a question about them is answered by saying so."""

RECORDED = (
    "per backend: p50/p95 latency, request rate, in-flight requests and error rate every tick; "
    "every routing decision with its forecasts, and the latency outcome that came back"
)


@dataclass
class Window:
    since: str | None = None
    until: str | None = None
    around: str | None = None
    label: str = ""

    def args(self) -> dict[str, str]:
        out = {k: v for k, v in (("since", self.since), ("until", self.until)) if v}
        if self.around:
            out = {"around": self.around}
        return out

    @property
    def empty(self) -> bool:
        return not (self.since or self.until or self.around)


@dataclass
class Intent:
    """What the question asks for, read by rules."""

    name: str
    tier: str | None = None
    minutes: float | None = None
    """A look-ahead ("in the next 10 minutes")."""
    window: Window = field(default_factory=Window)
    decision_id: str | None = None
    backends: list[str] = field(default_factory=list)
    version: str | None = None
    approval_id: str | None = None
    unrecorded: str | None = None
    measure: str | None = None
    """What a ranking question ranks the backends on (latency, errors, load)."""
    ascending: bool = False
    """A ranking asks for the lowest (fastest, fewest errors, least loaded)."""
    follow_up: bool = False
    refers_back: bool = False
    explicit: bool = False
    """The subject was named by a keyword (not inferred from a bare backend or window)."""

    @property
    def backend(self) -> str | None:
        return self.backends[0] if self.backends else None


def _amount(text: str | None) -> float:
    if not text:
        return 1.0
    t = text.lower()
    return float(_WORDS.get(t, t)) if t in _WORDS else float(t)


def _unit_suffix(unit: str) -> tuple[str, float]:
    u = unit.lower()
    if u.startswith("d"):
        return "d", 1440.0
    if u.startswith("h"):
        return "h", 60.0
    if u.startswith("s"):
        return "s", 1 / 60.0
    return "m", 1.0


def read_window(text: str) -> tuple[Window, float | None]:
    """The question's time window and look-ahead (minutes), as tool arguments."""
    low = text.lower()
    ahead = None
    m = _NEXT.search(text)
    if m:
        suffix, per = _unit_suffix(m.group(2))
        ahead = _amount(m.group(1)) * per
    m = _BETWEEN.search(text)
    if m:
        return Window(
            m.group(1), m.group(2), None, f"between {m.group(1)} and {m.group(2)} UTC"
        ), ahead
    m = _LAST.search(text)
    if m:
        n = _amount(m.group(1))
        suffix, _ = _unit_suffix(m.group(2))
        unit = {"d": "day", "h": "hour", "m": "minute", "s": "second"}[suffix]
        label = f"the last {n:g} {unit}{'s' if n != 1 else ''}" if n != 1 else f"the last {unit}"
        return Window(f"-{n:g}{suffix}", None, None, label), ahead
    m = _SINCE.search(text)
    if m:
        return Window(m.group(1), None, None, f"since {m.group(1)} UTC"), ahead
    if re.search(r"\byesterday\b", low):
        return Window("yesterday", "today", None, "yesterday"), ahead
    if re.search(r"\btoday\b|\bthis (?:morning|afternoon|evening)\b", low):
        return Window("today", None, None, "today"), ahead
    m = _AT.search(text) or _ISO.search(text)
    if m:
        return Window(None, None, m.group(1), f"around {m.group(1)}"), ahead
    return Window(), ahead


def read_backends(text: str) -> list[str]:
    found: list[str] = []
    for m in [*_BACKEND.finditer(text), *_NAMED_BACKEND.finditer(text)]:
        name = m.group(1)
        name = name.lower() if _BACKEND.fullmatch(name) else name
        if name not in found:
            found.append(name)
    return found


def _ids(text: str) -> dict[str, str | None]:
    decision = next(
        (m.group(1) for m in _DECISION.finditer(text) if any(ch.isdigit() for ch in m.group(1))),
        None,
    )
    version = None
    for m in [*_RF.finditer(text), *_VERSION.finditer(text)]:
        if m.group(1).lower() != (decision or "").lower():
            version = m.group(1)
            break
    approval = _APPROVAL.search(text)
    return {
        "decision_id": decision,
        "version": version,
        "approval_id": approval.group(1).lower() if approval else None,
    }


_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "model_history",
        ("who approved", "who promoted", "current model", "approved the current", "serving now"),
    ),
    ("approvals", ("approval", "approve", "awaiting sign", "pending change", "sign-off")),
    (
        "what_if",
        (
            "what if",
            "what would happen",
            "what happens if",
            "what happens when",
            "what will happen",
            "what would it do",
            "if we drain",
            "if we take",
            "if we lose",
            "if we fail",
            "simulate",
            "safe to take",
            "safe to drain",
            "safe to remove",
            "safe to lose",
            "can we take",
            "can we drain",
            "could we drain",
            "can we lose",
            "afford to lose",
        ),
    ),
    (
        "compare",
        ("compare", " vs ", " vs. ", "versus", "difference between", "better than", "worse than"),
    ),
    (
        "cost",
        ("cost", "spend", "spent", "expensive", "cheap", "how much did", "bill", "dollars", "$"),
    ),
    (
        "model_history",
        (
            "which model version",
            "what model version",
            "which version",
            "what version",
            "model version",
            "serving model",
            "model is serving",
            "model serves",
            "version is serving",
            "version serves",
            "when was it promoted",
            "was promoted",
            "model history",
            "version history",
            "promoted by",
            "since when",
        ),
    ),
    ("drift", ("drift",)),
    (
        "experiments",
        ("experiment", "challenger", "champion", "a/b", "shadow test", "split test", "promot"),
    ),
    ("capacity", ("capacity", "risk", "headroom", "overload", "run out")),
    (
        "recommend",
        (
            "which backend should",
            "which backend for",
            "which backend to",
            "which backend would",
            "what backend should",
            "what backend for",
            "what backend to",
            "should i use",
            "should we use",
            "recommend",
            "route a",
            "route my",
            "where should",
            "best backend",
            "send a",
            "where would you put",
            "where do i send",
        ),
    ),
    (
        "quality",
        (
            "why",
            "drop",
            "degrad",
            "worse",
            "violation",
            "incident",
            "what happened",
            "happen",
            "what changed",
            "quality",
            "went wrong",
            "outage",
            "spike",
            " slo ",
            " slo?",
            " slos",
            "sla miss",
        ),
    ),
    ("alerts", ("alert", "paged", "page me")),
    ("anomalies", ("anomal", "unusual", "weird")),
    (
        "performance",
        ("retrain", "accuracy", "mae", "forecast error", "performance", "how accurate", "accurate"),
    ),
    ("models", ("rollback", "roll back", "which model", "forecaster version")),
)
_BACKEND_WORDS = (
    "trend",
    "forecast",
    "sla",
    "slo",
    "meet",
    "healthy",
    "health",
    "how is",
    "how's",
    "status",
    "doing",
    " ok",
    "okay",
    "detail",
    "tell me about",
    "state of",
    "latency",
    "error rate",
    "errors",
    "load",
    "up?",
    "down",
    "alive",
    "working",
)
_FLEET_WORDS = (
    "forecast",
    "backends",
    "slowest",
    "fastest",
    "latency",
    "sla",
    "on fire",
    "down",
    "serving",
    "traffic",
    "load",
    "rps",
    "requests per second",
    "state",
    "status",
    "fleet",
    "health",
    "overview",
    "how are",
    "summary",
    "everything ok",
    "going on",
    "how are things",
    "all good",
    "any problems",
    "any issues",
)


SHORT_FOLLOW_UP_WORDS = 5
"""An unplaced question this short that names a backend or a window ("b2 now?", "last hour?")
follows up on the thread; a longer one is read on its own (and may be out of scope)."""


def read_intent(question: str, tools: set[str] | frozenset[str] = frozenset()) -> Intent:
    """Classify one question on its own (see `resolve` for follow-ups). Order matters: the most
    specific intents are tried first."""
    text = question.strip()
    low = f" {text.lower()} "
    window, ahead = read_window(text)
    ids = _ids(text)
    intent = Intent(
        name="unknown",
        tier=next((t for t in TIERS if re.search(rf"\b{t}\b", low)), None),
        minutes=ahead,
        window=window,
        backends=read_backends(text),
        decision_id=ids["decision_id"],
        version=ids["version"],
        approval_id=ids["approval_id"],
        follow_up=bool(_FOLLOW_UP.search(text)),
        refers_back=bool(_PRONOUN.search(text)),
    )

    def has(*words: str) -> bool:
        return any(w in low for w in words)

    if "routing_context" in tools or "submit_decision" in tools:
        intent.name = "route"
        return intent
    if _TASK.search(text):
        return intent
    unrecorded = next((w for w in UNRECORDED if re.search(rf"\b{w}s?\b", low)), None)
    if unrecorded:
        intent.name, intent.unrecorded = "unrecorded", UNRECORDED[unrecorded]
        return intent
    if intent.decision_id or (has("why was", "why did") and has("routed", "sent to", "go to")):
        intent.name = "explain"
        return intent
    if intent.approval_id:
        intent.name = "approvals"
        return intent
    if _ACTION.search(text):
        intent.name, intent.explicit = "action", True
        return intent
    if not has("what if", "what would", "what happens", "simulate", "compare", " vs"):
        measure = next((k for k, rx in _RANK.items() if re.search(rx, low)), None)
        if measure is not None:
            intent.name, intent.measure, intent.explicit = "rank", measure, True
            intent.ascending = bool(re.search(_LOW, low))
            return intent
        if _TRAFFIC.search(text) and not intent.backends:
            intent.name, intent.explicit = "traffic", True
            return intent
    for name, words in _RULES:
        if has(*words):
            intent.name, intent.explicit = name, True
            return intent
    if intent.version:
        intent.name = "model_history"
    elif not intent.backends and _DOWN.search(text):
        intent.name = "down"
    elif intent.backends and (has(*_BACKEND_WORDS) or len(low.split()) <= 4):
        intent.name = "backend"
    elif has(*_FLEET_WORDS):
        # the fleet state is about now; over a window, what happened is the quality timeline
        intent.name = "fleet" if intent.window.empty else "quality"
    elif has("decisions", "latest decision", "recent decision", "last decision"):
        intent.name = "explain"  # no id: the newest decisions are listed
    return intent


def resolve(
    question: str, history: Sequence[str], tools: set[str] | frozenset[str] = frozenset()
) -> Intent:
    """The question read in its thread: a follow-up ("and b2?", "what about the last two
    hours?", "is it healthy?") keeps the previous subject, backend and window unless it names
    new ones. `history` holds the thread's earlier questions, oldest first."""
    intent = read_intent(question, tools)
    if intent.name == "route" or not history:
        return intent
    focus: Intent | None = None
    for earlier in history:
        prev = read_intent(earlier)
        if focus is not None and _follows(prev, earlier):
            prev = _carry(prev, focus)
        if prev.name not in ("unknown", "unrecorded"):
            focus = prev
    if focus is None or focus.name in ("unknown", "unrecorded") or not _follows(intent, question):
        return intent
    return _carry(intent, focus)


def _follows(intent: Intent, question: str) -> bool:
    """Whether a question leans on its thread: a follow-up or a pronoun, or a short unplaced
    question naming only a backend or a window ("b2 now?", "last hour?")."""
    return (
        intent.follow_up
        or intent.refers_back
        or (
            intent.name == "unknown"
            and (bool(intent.backends) or not intent.window.empty)
            and len(question.split()) <= SHORT_FOLLOW_UP_WORDS
        )
    )


def _carry(intent: Intent, focus: Intent) -> Intent:
    """`intent` with what it does not say taken from `focus`."""
    inherit = intent.name == "unknown" or (
        (intent.follow_up or intent.refers_back) and not intent.explicit
    )
    return replace(
        intent,
        name=focus.name if inherit else intent.name,
        backends=intent.backends or list(focus.backends),
        window=focus.window if intent.window.empty else intent.window,
        tier=intent.tier or focus.tier,
        minutes=intent.minutes if intent.minutes is not None else focus.minutes,
        measure=intent.measure or focus.measure,
        ascending=intent.ascending if intent.measure else focus.ascending,
        decision_id=intent.decision_id or focus.decision_id,
        version=intent.version or focus.version,
    )
