"""Scenario files: what an eval replays and what it expects, as YAML validated by pydantic.

A file holds one entry. Its `kind` says what it is:

- `scenario` (the default): a seed, a fleet, a traffic source, chaos events with times, the
  policies to compare, the forecaster to train, and the properties the predictive run must show
  (`expect`). The traffic source is one of
    * `simulated`: synthetic requests (`tools.sim.workload.synthetic`: a Markov-modulated
      diurnal process, token lengths fitted to the Azure traces) at `utilisation` of the
      fleet's capacity (default 0.4) or `mean_rps`;
    * `arrival_trace`: a request trace with token counts (CSV or JSONL, e.g. the Azure LLM
      trace; `evals.workload_files.read_trace`), time-scaled to the fleet (`utilisation`,
      `mean_rps`, or a bare `scale` that multiplies its rate);
    * `telemetry`: real telemetry series (e.g. NAB), replayed observe-only through the monitor
      and the drift detector and scored against labelled windows. Nothing is routed: the series
      did not respond to any routing, so routing metrics would mean nothing there.
- `nab_benchmark`: the NAB benchmark (`arcpoint nab`) over a data folder and a labels file.
- `drift_benchmark`: `benchmarks/bench_drift.py` (Page-Hinkley against river on drift streams).

Times may be numbers of seconds or strings such as `90s`, `15m`, `1h30m`. Paths are relative to
the file's folder (`~` and `$VARS` expand). Errors name the file, the field and what is wrong;
an unknown field gets a "did you mean" when one is close.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from tools.sim.chaos import ChaosEvent, check_chaos
from tools.sim.scenario import Built, Scenario, SyntheticTraffic, TraceTraffic, build
from tools.sim.spec import DEFAULT_FLEET, GPU_CLASSES, EngineSpec, fleet_capacity_rps
from tools.sim.workload import Workload

PolicyName = Literal[
    "predictive",
    "static",
    "round_robin",
    "least_request",
    "peak_ewma",
    "outlier_ejection",
    "prequal",
    "c3",
    "llmd",
]
POLICY_NAMES: tuple[str, ...] = PolicyName.__args__  # type: ignore[attr-defined]
"""Every policy a scenario can compare (`evals.replay.POLICIES`; a test keeps them equal)."""
BASELINE_NAMES = POLICY_NAMES[1:]
RENAMED_POLICIES = {"least_loaded": "least_request"}
"""Names older scenario files used."""
ComparableMetric = Literal[
    "sla_violation_pct", "p95_latency_ms", "ttft_p99_ms", "e2e_p99_ms", "mean_cost", "flaps"
]
"""Metrics `beats_baselines` can compare: lower is better for each (`p95_latency_ms` is the
95th percentile of the time to first token)."""
DEFAULT_UTILISATION = 0.4

_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*([smhd]))+\s*$")
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"


class ScenarioFileError(ValueError):
    """A scenario file that cannot be used; the message names the file and each problem."""

    def __init__(self, path: str | Path, problems: Sequence[str]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{self.path}: invalid scenario file\n{lines}")


def parse_seconds(value: Any) -> Any:
    """`90`, `90.5`, `"90s"`, `"15m"`, `"1h30m"` -> seconds. Anything else is left to pydantic
    (which then says what it expected)."""
    if isinstance(value, bool):
        raise ValueError("a time must be a number of seconds or a string like '15m', not a boolean")
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            return float(text)
        except ValueError:
            pass
        if not _DURATION.match(text):
            raise ValueError(
                f"{value!r} is not a time: use seconds (900) or a string such as '90s', '15m', "
                "'1h30m'"
            )
        return sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text))
    return value


Seconds = Annotated[float, BeforeValidator(parse_seconds)]
PositiveSeconds = Annotated[float, BeforeValidator(parse_seconds), Field(gt=0, allow_inf_nan=False)]
NonNegativeSeconds = Annotated[
    float, BeforeValidator(parse_seconds), Field(ge=0, allow_inf_nan=False)
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- traffic sources -------------------------------------------------------------------------


class _Scaling(_Model):
    """How a recorded series becomes a request rate: give at most one of the three."""

    mean_rps: float | None = Field(None, gt=0, allow_inf_nan=False)
    """Scale so that the mean rate is this many requests/s."""
    utilisation: float | None = Field(None, gt=0, le=3, allow_inf_nan=False)
    """Scale so that the mean rate is this share of the fleet's total capacity."""
    scale: float | None = Field(None, gt=0, allow_inf_nan=False)
    """Multiply the recorded counts by this factor."""

    @model_validator(mode="after")
    def _one_scaling(self) -> _Scaling:
        given = [n for n in ("mean_rps", "utilisation", "scale") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give only one of mean_rps, utilisation, scale (got {given})")
        return self

    def target_rps(self, fleet_capacity_rps: float) -> float | None:
        if self.mean_rps is not None:
            return self.mean_rps
        if self.utilisation is not None:
            return self.utilisation * fleet_capacity_rps
        return None


class SimulatedTraffic(_Scaling):
    """Synthetic requests (`tools.sim.workload.synthetic`); `utilisation` or `mean_rps` set
    their mean rate (default: 40% of the fleet's capacity); `lengths` picks the Azure trace
    whose token lengths they are drawn from."""

    kind: Literal["simulated"] = "simulated"
    diurnal_amplitude: float = Field(0.3, ge=0, lt=1, allow_inf_nan=False)
    period_s: PositiveSeconds = 86_400.0
    phase_s: Seconds = 0.0
    burst_rate_per_hour: float = Field(3.0, ge=0, allow_inf_nan=False)
    burst_mean_duration_s: PositiveSeconds = 90.0
    burst_multiplier: float = Field(1.4, ge=1, allow_inf_nan=False)
    lengths: Literal["conv", "code"] = "conv"

    @model_validator(mode="after")
    def _no_bare_scale(self) -> SimulatedTraffic:
        if self.scale is not None:
            raise ValueError("simulated traffic takes mean_rps or utilisation, not scale")
        return self


class ArrivalTraceTraffic(_Scaling):
    """A request trace with token counts (CSV or JSONL, `evals.workload_files.read_trace`),
    time-scaled so its mean rate meets `utilisation` (default 40%) of the fleet's capacity for
    its own token mix, or `mean_rps`, or its own rate times `scale`. A trace shorter than the
    scenario is repeated end to end."""

    kind: Literal["arrival_trace"]
    path: str = Field(min_length=1)
    timestamp_column: str | None = None
    """Accepted for older files; the timestamp column is found by name (`TIMESTAMP` included)."""
    time_unit: Literal["auto", "s", "ms"] = "auto"
    block_tokens: int = Field(512, ge=1)
    skip_s: NonNegativeSeconds = 0.0
    """Leave out the trace's first seconds (e.g. a ramp-up before steady traffic)."""


class TelemetrySeries(_Model):
    path: str = Field(min_length=1)
    backend: str | None = Field(None, pattern=_NAME)
    """Name the series' backend takes (default: the file's stem)."""


class TelemetryTraffic(_Model):
    """Real telemetry replayed observe-only (see the module docstring)."""

    kind: Literal["telemetry"]
    series: list[TelemetrySeries] = Field(min_length=1)
    labels: str | None = None
    """A NAB windows file ({relative path: [[start, end], ...]}); keys match series paths by
    suffix. Without it there is no ground truth and precision/recall are not computed."""


Traffic = Annotated[
    SimulatedTraffic | ArrivalTraceTraffic | TelemetryTraffic, Field(discriminator="kind")
]


# --- the rest of a scenario ------------------------------------------------------------------


class ForecasterSpec(_Model):
    """The forecaster trained for the scenario (on simulated history, as `arcpoint demo` does).
    Scenarios with the same spec share one trained model within a run."""

    history_hours: float = Field(12.0, gt=0, le=24 * 14, allow_inf_nan=False)
    n_estimators: int = Field(100, ge=1, le=2000)
    max_depth: int | None = Field(12, ge=1, le=64)
    seed: int = 0
    history_seed: int = 1000


class DriftSpec(_Model):
    """The change detector of a telemetry entry: calibrated Page-Hinkley (both ways) on each
    series' log p95. Warm-up is in ticks (a detector is blind while warming up, and again after
    each alarm). Simulated scenarios are scored on the routing model's drift detector instead
    (`agents.monitors.routing_drift`, its settings the closed loop's `routing_drift`)."""

    warmup_ticks: int = Field(60, ge=10, le=5000)
    threshold_sigmas: float = Field(25.0, gt=0, allow_inf_nan=False)
    delta_sigmas: float = Field(0.3, ge=0, allow_inf_nan=False)


class LoopSpec(_Model):
    """Run the predictive replay through the closed loop (`agents.feedback_loop.FeedbackLoop`):
    sampled decisions and their late outcomes in the store, drift detection on the forecaster's
    errors, retraining, champion-challenger experiments, promotion and rollback. `config` holds
    `LoopConfig` fields (checked when the file is loaded). The loop is built for hours of
    traffic: its detector calibrates on its first 300 errors, so give it a long scenario."""

    config: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _valid_config(self) -> LoopSpec:
        from agents.feedback_loop import LoopConfig

        try:
            LoopConfig.model_validate(self.config)
        except ValidationError as err:
            problems = []
            for e in err.errors(include_url=False):
                where = ".".join(str(p) for p in e["loc"])
                msg = e["msg"]
                if e["type"] == "extra_forbidden":
                    close = difflib.get_close_matches(where, LoopConfig.model_fields, n=1)
                    msg = "unknown field" + (f" (did you mean {close[0]!r}?)" if close else "")
                problems.append(f"config.{where}: {msg}")
            raise ValueError("; ".join(problems)) from None
        return self


class TrafficLeaves(_Model):
    """`backend`'s traffic share falls to `max_share` or below within `within_s` of `after`."""

    backend: str
    within_s: PositiveSeconds
    after: Literal["chaos_start", "chaos_end"] | NonNegativeSeconds = "chaos_start"
    """A chaos event's start or end (see `event`), or seconds from the scenario start."""
    event: int | None = Field(None, ge=0)
    """Index into `chaos` (default: the first event on `backend`, else the first event)."""
    max_share: float = Field(0.05, ge=0, le=1, allow_inf_nan=False)


class BeatsBaselines(_Model):
    """The predictive run's `metric` is at least `by_pct` percent lower than each baseline's."""

    metric: ComparableMetric = "sla_violation_pct"
    by_pct: float = Field(0.0, ge=0, lt=100, allow_inf_nan=False)
    baselines: list[PolicyName] | None = None
    """Default: every baseline the scenario runs."""


class Expectations(_Model):
    """Properties of the predictive run (the full loop); each is reported as pass or fail."""

    traffic_leaves: list[TrafficLeaves] = Field(default_factory=list)
    drift_detected_within_s: PositiveSeconds | None = None
    max_drift_false_alarms: int | None = Field(None, ge=0)
    max_escalation_pct: float | None = Field(None, ge=0, le=100, allow_inf_nan=False)
    max_sla_violation_pct: float | None = Field(None, ge=0, le=100, allow_inf_nan=False)
    max_p95_latency_ms: float | None = Field(None, gt=0, allow_inf_nan=False)
    max_flaps: int | None = Field(None, ge=0)
    beats_baselines: list[BeatsBaselines] = Field(default_factory=list)
    min_anomaly_recall: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    min_anomaly_precision: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    loop_promotes: bool | None = None
    """With `loop`: whether a challenger must (true) or must not (false) be promoted."""

    @model_validator(mode="before")
    @classmethod
    def _lists(cls, data: Any) -> Any:
        """A single `traffic_leaves` / `beats_baselines` mapping is a one-item list."""
        if isinstance(data, dict):
            data = dict(data)
            for key in ("traffic_leaves", "beats_baselines"):
                if isinstance(data.get(key), dict):
                    data[key] = [data[key]]
        return data

    def routing_keys(self) -> list[str]:
        """The expectations that need routing (so cannot apply to observe-only telemetry)."""
        keys = []
        if self.traffic_leaves:
            keys.append("traffic_leaves")
        if self.beats_baselines:
            keys.append("beats_baselines")
        for k in ("max_escalation_pct", "max_sla_violation_pct", "max_p95_latency_ms", "max_flaps"):
            if getattr(self, k) is not None:
                keys.append(k)
        return keys


def _parse_fleet(value: Any) -> Any:
    """`default`, or a list of default-fleet names and engine specs: a mapping of
    `tools.sim.spec.EngineSpec`'s fields, or `{name, gpu}` (a GPU class: h100, a100, l40s) with
    any fields to override, each checked with a message that names it."""
    if value is None or value == "default":
        return None
    if not isinstance(value, list | tuple):
        raise ValueError("fleet must be 'default' or a list of backend names and specs")
    if not value:
        raise ValueError("fleet is empty")
    out: list[EngineSpec | str] = []
    known = {b.name for b in DEFAULT_FLEET}
    fields = set(EngineSpec.model_fields)
    for i, entry in enumerate(value):
        if isinstance(entry, EngineSpec):
            out.append(entry)
        elif isinstance(entry, str):
            if entry not in known:
                raise ValueError(
                    f"entry {i}: {entry!r} is not in the default fleet "
                    f"({', '.join(sorted(known))}); give a full backend spec instead"
                )
            out.append(entry)
        elif isinstance(entry, dict):
            unknown = sorted(set(entry) - fields)
            if unknown:
                close = difflib.get_close_matches(unknown[0], fields, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(
                    f"entry {i}: unknown field {unknown[0]!r}{hint}; a backend is an LLM engine "
                    f"spec ({', '.join(sorted(fields))})"
                )
            try:
                gpu = GPU_CLASSES.get(str(entry.get("gpu")))
                if gpu is not None and "iter_base_ms" not in entry:
                    rest = {k: v for k, v in entry.items() if k not in ("name", "gpu")}
                    out.append(gpu.derive(entry.get("name", ""), **rest))
                else:
                    out.append(EngineSpec.model_validate(entry))
            except (TypeError, ValueError) as err:
                raise ValueError(f"entry {i}: {err}") from None
        else:
            raise ValueError(f"entry {i} must be a backend name or a mapping of its spec")
    return tuple(out)


FleetEntry = EngineSpec | str


class ScenarioFile(_Model):
    """One replayable scenario (see the module docstring)."""

    kind: Literal["scenario"] = "scenario"
    name: str = Field(pattern=_NAME, max_length=80)
    description: str = ""
    seed: int = 0
    duration_s: PositiveSeconds = 3600.0
    fleet: Annotated[tuple[FleetEntry, ...] | None, BeforeValidator(_parse_fleet)] = None
    """None (or `default` in the file): the default fleet."""
    traffic: Traffic = Field(default_factory=SimulatedTraffic)
    chaos: list[ChaosEvent] = Field(default_factory=list)
    policies: list[PolicyName] = Field(default_factory=lambda: list(POLICY_NAMES))
    """Older files' `least_loaded` is `least_request` (Envoy's least-request balancer)."""
    forecaster: ForecasterSpec = Field(default_factory=ForecasterSpec)
    drift: DriftSpec = Field(default_factory=DriftSpec)
    loop: LoopSpec | None = None
    expect: Expectations = Field(default_factory=Expectations)
    _source: Path | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _prepare(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        traffic = data.get("traffic")
        if isinstance(traffic, dict) and "kind" not in traffic:
            data["traffic"] = {"kind": "simulated", **traffic}
        policies = data.get("policies")
        if isinstance(policies, list):
            data["policies"] = [RENAMED_POLICIES.get(p, p) if isinstance(p, str) else p
                                for p in policies]  # fmt: skip
        chaos = data.get("chaos")
        if isinstance(chaos, list):
            prepared = []
            for ev in chaos:
                if isinstance(ev, dict):
                    ev = dict(ev)
                    if "at" in ev and "start_s" not in ev:
                        ev["start_s"] = ev.pop("at")
                    for key in ("start_s", "duration_s"):
                        if key in ev:
                            ev[key] = parse_seconds(ev[key])
                prepared.append(ev)
            data["chaos"] = prepared
        return data

    @model_validator(mode="after")
    def _check(self) -> ScenarioFile:
        names = self.backend_names()
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate backend names in fleet: {names}")
        observe_only = isinstance(self.traffic, TelemetryTraffic)
        if observe_only:
            if self.chaos:
                raise ValueError(
                    "telemetry scenarios replay recorded series: chaos cannot be injected into "
                    "them (their labelled windows are the ground truth)"
                )
            bad = self.expect.routing_keys()
            if self.loop is not None:
                bad.append("loop")
            if bad:
                raise ValueError(
                    f"expect: {', '.join(bad)} need routing, which a telemetry (observe-only) "
                    "scenario does not do"
                )
            return self
        check_chaos(self.chaos, names, self.duration_s)
        if "predictive" not in self.policies:
            raise ValueError("policies must include 'predictive' (the run the scenario scores)")
        if len(set(self.policies)) != len(self.policies):
            raise ValueError(f"policies are listed twice: {self.policies}")
        for j, leave in enumerate(self.expect.traffic_leaves):
            where = f"expect.traffic_leaves[{j}]"
            if leave.backend not in names:
                raise ValueError(
                    f"{where}: unknown backend {leave.backend!r}; fleet: {', '.join(names)}"
                )
            if isinstance(leave.after, str):
                if not self.chaos:
                    raise ValueError(f"{where}: after={leave.after} but the scenario has no chaos")
                if leave.event is not None and leave.event >= len(self.chaos):
                    raise ValueError(
                        f"{where}: event {leave.event} does not exist ({len(self.chaos)} events)"
                    )
        for j, beat in enumerate(self.expect.beats_baselines):
            missing = [b for b in beat.baselines or [] if b not in self.policies]
            if "predictive" in (beat.baselines or []):
                raise ValueError(f"expect.beats_baselines[{j}]: predictive is not a baseline")
            if missing:
                raise ValueError(
                    f"expect.beats_baselines[{j}]: {missing} are not among the scenario's "
                    f"policies {self.policies}"
                )
        if self.expect.loop_promotes is not None and self.loop is None:
            raise ValueError("expect.loop_promotes needs `loop:` (the closed loop) to run")
        if self.expect.drift_detected_within_s is not None and not any(
            ev.kind == "gradual_drift" for ev in self.chaos
        ):
            raise ValueError("expect.drift_detected_within_s needs a gradual_drift chaos event")
        return self

    # -- derived ---------------------------------------------------------------------------

    @property
    def source(self) -> Path | None:
        """The file this entry was read from (None when built in code)."""
        return self._source

    @property
    def observe_only(self) -> bool:
        return isinstance(self.traffic, TelemetryTraffic)

    def backends(self) -> tuple[EngineSpec, ...]:
        if self.fleet is None:
            return DEFAULT_FLEET
        known = {b.name: b for b in DEFAULT_FLEET}
        return tuple(known[e] if isinstance(e, str) else e for e in self.fleet)

    def backend_names(self) -> list[str]:
        if isinstance(self.traffic, TelemetryTraffic):
            return [s.backend or Path(s.path).stem for s in self.traffic.series]
        return [b.name for b in self.backends()]

    def resolve(self, path: str) -> Path:
        """A path from the file, relative to the file's folder (or the working directory)."""
        p = Path(os.path.expandvars(os.path.expanduser(path)))
        if not p.is_absolute() and self._source is not None:
            p = self._source.parent / p
        return p

    def to_scenario(self) -> Scenario:
        """The `tools.sim.scenario.Scenario` to simulate (a trace's scaling is settled in
        `build`, once the trace is read)."""
        if isinstance(self.traffic, TelemetryTraffic):
            raise ValueError(f"{self.name}: a telemetry scenario is replayed, not simulated")
        t = self.traffic
        if isinstance(t, SimulatedTraffic):
            traffic: SyntheticTraffic | TraceTraffic = SyntheticTraffic(
                load=t.utilisation if t.utilisation is not None else DEFAULT_UTILISATION,
                mean_rps=t.mean_rps,
                lengths=t.lengths,
                diurnal_amplitude=t.diurnal_amplitude,
                period_s=t.period_s,
                phase_s=t.phase_s,
                burst_rate_per_hour=t.burst_rate_per_hour,
                burst_mean_duration_s=t.burst_mean_duration_s,
                burst_multiplier=t.burst_multiplier,
            )
        else:
            traffic = TraceTraffic(source=str(self.resolve(t.path)))
        return Scenario(
            name=self.name,
            seed=self.seed,
            duration_s=self.duration_s,
            fleet=None if self.fleet is None else self.backends(),
            traffic=traffic,
            chaos=tuple(self.chaos),
        )

    def trace(self) -> Workload | None:
        """The recorded requests of an `arrival_trace` scenario, skipped and scaled as the file
        says (at their own rate times `scale`, or None to scale to a load in `build`)."""
        t = self.traffic
        if not isinstance(t, ArrivalTraceTraffic):
            return None
        from evals.workload_files import TraceError, find_shared, read_trace

        path = find_shared(self.resolve(t.path))
        try:
            w, report = read_trace(path, time_unit=t.time_unit, block_tokens=t.block_tokens)
        except TraceError as err:
            raise ScenarioFileError(path, [f"cannot open the arrival trace: {err}"]) from None
        if report.rejected:
            why = f"the trace has bad records (a replay must not lose load): {report.summary()}"
            raise ScenarioFileError(path, [why, *report.examples])
        if t.skip_s:
            keep = w.arrival_s >= t.skip_s
            if not keep.any():
                raise ScenarioFileError(path, [f"skip_s={t.skip_s:g} leaves no requests"])
            w = w.select(keep)
            w = replace(w, arrival_s=w.arrival_s - t.skip_s, duration_s=w.duration_s - t.skip_s)
        return w

    def build(self, seed: int | None = None) -> Built:
        """One seed of the scenario, ready to simulate (reads the trace, if any)."""
        scenario = self.to_scenario()
        trace = self.trace()
        t = self.traffic
        if isinstance(t, ArrivalTraceTraffic) and trace is not None:
            fleet = self.backends()
            if t.scale is not None:
                target = trace.rate_rps * t.scale
            elif t.mean_rps is not None:
                target = t.mean_rps
            else:
                load = t.utilisation if t.utilisation is not None else DEFAULT_UTILISATION
                target = load * fleet_capacity_rps(fleet, trace.token_stats())
            load = target / fleet_capacity_rps(fleet, trace.token_stats())
            scenario = scenario.model_copy(
                update={"traffic": TraceTraffic(source=scenario.traffic.source, load=load)}
            )
        return build(scenario, seed, trace)


# --- real benchmarks -------------------------------------------------------------------------


class NabExpect(_Model):
    min_standard: float | None = Field(None, allow_inf_nan=False)
    min_reward_low_fp: float | None = Field(None, allow_inf_nan=False)
    min_reward_low_fn: float | None = Field(None, allow_inf_nan=False)


class NabBenchmarkFile(_Model):
    """The NAB benchmark (`arcpoint nab`) as an eval entry."""

    kind: Literal["nab_benchmark"]
    name: str = Field(pattern=_NAME, max_length=80)
    description: str = ""
    data: str = Field(min_length=1)
    labels: str = Field(min_length=1)
    detector: str | None = None
    expect: NabExpect = Field(default_factory=NabExpect)
    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        return self._source

    resolve = ScenarioFile.resolve


class DriftBenchExpect(_Model):
    max_stationary_false_alarms: int | None = Field(None, ge=0)
    """Calibrated Page-Hinkley's false alarms on 100,000 samples of N(0, 1)."""
    min_detected_pct: float | None = Field(None, ge=0, le=100, allow_inf_nan=False)
    """Share of the drift streams' drifts the calibrated detector finds."""
    max_delay_vs_river_best: float | None = Field(None, gt=0, allow_inf_nan=False)
    """Calibrated Page-Hinkley's mean penalised delay over river's best detector's."""
    max_false_alarms_vs_river_best: float | None = Field(None, ge=0, allow_inf_nan=False)
    """Its false alarms on the drift streams over those of river's best-delay detector."""


class DriftBenchmarkFile(_Model):
    """`benchmarks/bench_drift.py` as an eval entry."""

    kind: Literal["drift_benchmark"]
    name: str = Field(pattern=_NAME, max_length=80)
    description: str = ""
    seeds: int = Field(5, ge=1, le=50)
    expect: DriftBenchExpect = Field(default_factory=DriftBenchExpect)
    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        return self._source


EvalEntry = ScenarioFile | NabBenchmarkFile | DriftBenchmarkFile


def describe(entry: EvalEntry) -> str:
    """One line saying what an entry is, for progress output."""
    if isinstance(entry, ScenarioFile) and isinstance(entry.traffic, TelemetryTraffic):
        return f"{entry.name} (telemetry, observe-only: {len(entry.traffic.series)} series)"
    if isinstance(entry, ScenarioFile):
        kinds = ", ".join(f"{e.kind}@{e.start_s:g}s" for e in entry.chaos) or "no chaos"
        return f"{entry.name} ({entry.traffic.kind} traffic, {entry.duration_s:g} s, {kinds})"
    return f"{entry.name} ({entry.kind})"
