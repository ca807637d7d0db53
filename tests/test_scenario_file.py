"""Scenario files: every shipped file loads; bad files fail with messages that say where and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.scenario_file import (
    POLICY_NAMES,
    ArrivalTraceTraffic,
    DriftBenchmarkFile,
    NabBenchmarkFile,
    ScenarioFile,
    ScenarioFileError,
    parse_seconds,
)
from evals.scenario_loading import expand_paths, load_file, load_paths, parse_entry
from evals.telemetry_series import load_telemetry
from tools.sim.spec import DEFAULT_FLEET, TokenStats, capacity_rps, fleet_capacity_rps

SCENARIOS = Path(__file__).resolve().parents[1] / "evals" / "scenarios"


def problems(data: dict) -> str:
    with pytest.raises(ScenarioFileError) as err:
        parse_entry(data)
    return str(err.value)


# --- the shipped files -------------------------------------------------------------------------


@pytest.mark.parametrize("folder", ["", "ci", "real"])
def test_every_shipped_file_loads(folder: str) -> None:
    entries = load_paths([SCENARIOS / folder])
    assert entries
    for e in entries:
        assert e.source is not None and e.source.suffix == ".yaml"
        if isinstance(e, ScenarioFile) and not e.observe_only:
            assert "predictive" in e.policies


def test_top_level_suite_covers_every_chaos_kind_and_real_data() -> None:
    entries = [e for e in load_paths([SCENARIOS]) if isinstance(e, ScenarioFile)]
    kinds = {ev.kind for e in entries for ev in e.chaos}
    assert kinds == {
        "latency_spike",
        "backend_failure",
        "cascading_failure",
        "traffic_surge",
        "gradual_drift",
        "anomaly_burst",
        "slow_replica",
        "kv_pressure",
    }
    traffic = {e.traffic.kind for e in entries}
    assert {"simulated", "arrival_trace", "telemetry"} <= traffic


def test_ci_suite_is_small() -> None:
    entries = load_paths([SCENARIOS / "ci"])
    for e in entries:
        assert isinstance(e, ScenarioFile)
        assert e.duration_s <= 1800
        assert e.forecaster.n_estimators <= 20 and e.forecaster.history_hours <= 4


def test_real_suite_has_the_benchmarks() -> None:
    kinds = {type(e) for e in load_paths([SCENARIOS / "real"])}
    assert {NabBenchmarkFile, DriftBenchmarkFile} <= kinds


def test_policy_names_match_the_replay() -> None:
    from evals.replay import POLICIES

    assert tuple(POLICIES) == POLICY_NAMES


# --- values ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [(90, 90), (1.5, 1.5), ("90", 90), ("90s", 90), ("15m", 900), ("1h30m", 5400), ("2d", 172800)],
)
def test_times(raw: object, seconds: float) -> None:
    assert parse_seconds(raw) == seconds


@pytest.mark.parametrize("raw", ["1 min", "15 minutes", "m15", "", "-5m"])
def test_bad_times_say_what_a_time_is(raw: str) -> None:
    msg = problems({"name": "x", "duration_s": raw})
    assert "duration_s" in msg and "15m" in msg


def test_a_boolean_is_not_a_time() -> None:
    assert "boolean" in problems({"name": "x", "duration_s": True})


def test_defaults_and_shorthands() -> None:
    e = parse_entry(
        {
            "name": "s",
            "duration_s": "1h",
            "chaos": [{"kind": "gradual_drift", "at": "20m", "duration_s": "40m"}],
            "expect": {
                "drift_detected_within_s": "15m",
                "traffic_leaves": {"backend": "b0", "within_s": 60},
                "beats_baselines": {"by_pct": 30, "baselines": ["static", "peak_ewma"]},
            },
        }
    )
    assert isinstance(e, ScenarioFile)
    assert e.kind == "scenario" and e.traffic.kind == "simulated"
    assert e.chaos[0].start_s == 1200 and e.chaos[0].duration_s == 2400
    assert e.chaos[0].magnitude == 1.6  # the kind's default
    assert e.expect.drift_detected_within_s == 900
    assert len(e.expect.traffic_leaves) == 1 and len(e.expect.beats_baselines) == 1
    assert e.policies == list(POLICY_NAMES)
    s = e.to_scenario()
    assert s.duration_s == 3600 and s.traffic.load == 0.4 and s.traffic.mean_rps is None


def test_utilisation_scales_simulated_traffic_to_the_fleet() -> None:
    e = parse_entry(
        {"name": "s", "duration_s": 600, "fleet": ["b0", "b2"], "traffic": {"utilisation": 0.5}}
    )
    built = e.build()
    assert built.workload.offered_load(built.fleet) == pytest.approx(0.5, rel=0.1)
    assert [b.name for b in built.fleet] == ["b0", "b2"]


def test_a_custom_backend_spec() -> None:
    by_gpu = {"name": "gpu9", "gpu": "a100", "max_num_seqs": 64}
    full = DEFAULT_FLEET[1].model_dump() | {"name": "gpu10"}
    e = parse_entry({"name": "s", "fleet": ["b0", by_gpu, full]})
    specs = e.backends()
    assert [b.name for b in specs] == ["b0", "gpu9", "gpu10"]
    assert specs[1].gpu == "a100" and specs[1].max_num_seqs == 64
    assert capacity_rps(specs[2]) == pytest.approx(capacity_rps(DEFAULT_FLEET[1]))


def test_older_files_policy_names_still_load() -> None:
    e = parse_entry({"name": "s", "policies": ["predictive", "least_loaded"]})
    assert e.policies == ["predictive", "least_request"]


# --- errors ------------------------------------------------------------------------------------


def test_unknown_fields_get_a_did_you_mean() -> None:
    assert "durtion_s: unknown field (did you mean 'duration_s'?)" in problems(
        {"name": "x", "durtion_s": 5}
    )
    msg = problems(
        {"name": "x", "chaos": [{"kind": "latency_spike", "at": 5, "backend": "b0", "magnitud": 3}]}
    )
    assert "chaos[0].magnitud: unknown field (did you mean 'magnitude'?)" in msg
    assert "traffic.men_rps" in problems({"name": "x", "traffic": {"men_rps": 3}})
    msg = problems({"name": "x", "expect": {"traffic_leaves": {"backend": "b0", "aftr": 3}}})
    assert "expect.traffic_leaves[0].aftr: unknown field (did you mean 'after'?)" in msg


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"name": "x", "chaos": [{"kind": "latency_spike", "at": 5}]}, "needs a target backend"),
        (
            {"name": "x", "chaos": [{"kind": "latency_spike", "at": 5, "backend": "b9"}]},
            "unknown backend 'b9'; fleet: b0, b1, b2, b3",
        ),
        (
            {"name": "x", "duration_s": 600, "chaos": [{"kind": "traffic_surge", "at": "10m"}]},
            "after the end of the scenario",
        ),
        ({"name": "x", "chaos": [{"kind": "latency_spik", "at": 5}]}, "chaos[0].kind"),
        ({"name": "x", "policies": ["static"]}, "must include 'predictive'"),
        ({"name": "x", "policies": ["predictive", "random"]}, "policies[1]"),
        (
            {
                "name": "x",
                "expect": {"beats_baselines": {"baselines": ["peak_ewma"]}},
                "policies": ["predictive", "static"],
            },
            "['peak_ewma'] are not among the scenario's policies",
        ),
        ({"name": "x", "expect": {"drift_detected_within_s": 60}}, "needs a gradual_drift"),
        (
            {"name": "x", "expect": {"traffic_leaves": {"backend": "b0", "within_s": 60}}},
            "the scenario has no chaos",
        ),
        ({"name": "x", "fleet": ["b0", "b7"]}, "'b7' is not in the default fleet"),
        (
            {
                "name": "x",
                "fleet": [
                    {"name": "g", "capacity_rps": 1, "base_latency_ms": 3, "cost_per_request": 1}
                ],
            },
            "unknown field 'base_latency_ms'",
        ),
        (
            {"name": "x", "fleet": [{"name": "g", "gpu": "h100", "max_num_seqs": 0}]},
            "max_num_seqs",
        ),
        ({"name": "x", "fleet": []}, "fleet is empty"),
        ({"name": "bad name!"}, "name"),
        ({"name": "x", "traffic": {"kind": "arrival", "path": "a"}}, "unknown kind 'arrival'"),
        ({"name": "x", "traffic": {"kind": "arrival_trace"}}, "traffic.path"),
        (
            {
                "name": "x",
                "traffic": {"kind": "arrival_trace", "path": "a", "scale": 2, "mean_rps": 3},
            },
            "give only one of mean_rps, utilisation, scale",
        ),
        ({"name": "x", "traffic": {"mean_rps": -1}}, "traffic.mean_rps"),
        (
            {
                "name": "x",
                "traffic": {"kind": "telemetry", "series": [{"path": "a.csv"}]},
                "chaos": [{"kind": "traffic_surge", "at": 5}],
            },
            "chaos cannot be injected",
        ),
        (
            {
                "name": "x",
                "traffic": {"kind": "telemetry", "series": [{"path": "a.csv"}]},
                "expect": {"max_sla_violation_pct": 5},
            },
            "need routing",
        ),
        ({"kind": "nope", "name": "x"}, "unknown kind 'nope'"),
        ({"kind": "nab_benchmark", "name": "n", "data": "d"}, "labels: Field required"),
    ],
)
def test_bad_entries_are_refused_with_a_reason(data: dict, needle: str) -> None:
    assert needle in problems(data)


def test_file_errors_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nchaos: [\n  {kind: latency_spike\n")
    with pytest.raises(ScenarioFileError) as err:
        load_file(bad)
    assert str(bad) in str(err.value) and "line" in str(err.value)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ScenarioFileError, match="empty"):
        load_file(empty)
    seq = tmp_path / "seq.yaml"
    seq.write_text("- a\n- b\n")
    with pytest.raises(ScenarioFileError, match="mapping"):
        load_file(seq)
    with pytest.raises(ScenarioFileError, match="no such file"):
        load_file(tmp_path / "missing.yaml")


def test_folders_are_read_one_level_and_names_must_be_unique(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: one\n")
    (tmp_path / "b.yml").write_text("name: two\n")
    (tmp_path / "notes.txt").write_text("not a scenario")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yaml").write_text("name: three\n")
    assert [p.name for p in expand_paths([tmp_path])] == ["a.yaml", "b.yml"]
    assert [e.name for e in load_paths([tmp_path])] == ["one", "two"]
    (tmp_path / "sub" / "d.yaml").write_text("name: one\n")
    with pytest.raises(ScenarioFileError, match="already used"):
        load_paths([tmp_path, tmp_path / "sub"])
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ScenarioFileError, match=r"no \.yaml"):
        load_paths([tmp_path / "empty_dir"])
    with pytest.raises(ScenarioFileError, match="no such file or folder"):
        load_paths([tmp_path / "missing"])


def test_every_bad_file_is_listed_at_once(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: a\ndurtion_s: 5\n")
    (tmp_path / "b.yaml").write_text("name: b\npolicies: [static]\n")
    with pytest.raises(ScenarioFileError) as err:
        load_paths([tmp_path])
    assert "a.yaml" in str(err.value) and "b.yaml" in str(err.value)


# --- recorded series ---------------------------------------------------------------------------


def _trace(path: Path, stamps: list[str]) -> Path:
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{s},100,20\n" for s in stamps)
    )
    return path


def test_an_arrival_trace_is_read_with_its_tokens_and_scaled(tmp_path: Path) -> None:
    stamps = [
        "2023-11-16 18:15:00.1000000",
        "2023-11-16 18:15:03.5000000",
        "2023-11-16 18:15:12.0",
        "2023-11-16 18:15:11.0",  # out of order: kept
        "2023-11-16 18:15:35.0",
    ]
    _trace(tmp_path / "t.csv", stamps)
    (tmp_path / "s.yaml").write_text(
        "name: s\nduration_s: 10m\ntraffic: {kind: arrival_trace, path: t.csv, mean_rps: 3}\n"
    )
    e = load_file(tmp_path / "s.yaml")
    assert isinstance(e.traffic, ArrivalTraceTraffic)
    trace = e.trace()
    assert trace is not None and len(trace) == 5 and trace.input_tokens.tolist() == [100] * 5
    built = e.build()
    assert built.workload.duration_s == 600  # the trace repeats to fill the scenario
    assert built.workload.rate_rps == pytest.approx(3.0, rel=0.05)
    utilised = parse_entry(
        {"name": "u", "traffic": {"kind": "arrival_trace", "path": str(tmp_path / "t.csv")}}
    ).build()
    cap = fleet_capacity_rps(DEFAULT_FLEET, TokenStats.fixed(100, 20))
    assert utilised.workload.rate_rps == pytest.approx(0.4 * cap, rel=0.05)


def test_arrival_trace_errors(tmp_path: Path) -> None:
    def build(path: Path) -> None:
        parse_entry({"name": "x", "traffic": {"kind": "arrival_trace", "path": str(path)}}).build()

    with pytest.raises(ScenarioFileError, match="line 3: bad timestamp"):
        build(_trace(tmp_path / "t.csv", ["2023-11-16 18:15:00", "yesterday"]))
    with pytest.raises(ScenarioFileError, match=r"cannot open the arrival trace.*no such file"):
        build(tmp_path / "none.csv")
    with pytest.raises(ScenarioFileError, match="no usable request records"):
        build(_trace(tmp_path / "e.csv", []))
    (tmp_path / "bare.csv").write_text("TIMESTAMP\n2023-11-16 18:15:00\n")
    with pytest.raises(ScenarioFileError, match="no column for input, output"):
        build(tmp_path / "bare.csv")


def test_telemetry_series_get_their_labelled_windows(tmp_path: Path) -> None:
    data = tmp_path / "data" / "realX"
    data.mkdir(parents=True)
    rows = "".join(f"2014-02-14 14:{m:02d}:00,{50 + m}\n" for m in range(0, 60, 5))
    (data / "cpu.csv").write_text("timestamp,value\n" + rows)
    labels = {"realX/cpu.csv": [["2014-02-14 14:20:00.000000", "2014-02-14 14:30:00.000000"]]}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    (tmp_path / "t.yaml").write_text(
        "name: t\ntraffic:\n  kind: telemetry\n  labels: labels.json\n"
        "  series: [{path: data/realX/cpu.csv}]\n"
    )
    e = load_file(tmp_path / "t.yaml")
    assert isinstance(e, ScenarioFile) and e.observe_only
    (series,) = load_telemetry(e)
    assert series.backend == "cpu" and len(series.points) == 12
    (w,) = series.windows or []
    assert w[1] - w[0] == 600
    (tmp_path / "labels.json").write_text(json.dumps({"other/x.csv": []}))
    with pytest.raises(ScenarioFileError, match="no entry for this series"):
        load_telemetry(e)


def test_the_closed_loop_option() -> None:
    e = parse_entry({"name": "x", "loop": {"config": {"ph_warmup": 100}}})
    assert isinstance(e, ScenarioFile) and e.loop is not None
    assert e.loop.config == {"ph_warmup": 100}
    assert "did you mean 'ph_warmup'" in problems(
        {"name": "x", "loop": {"config": {"ph_warmp": 1}}}
    )
    assert "needs `loop:`" in problems({"name": "x", "expect": {"loop_promotes": True}})
    telemetry = {"kind": "telemetry", "series": [{"path": "a.csv"}]}
    assert "loop" in problems({"name": "x", "traffic": telemetry, "loop": {}})
