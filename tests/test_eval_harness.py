"""The eval harness: the scorers on hand-made series, expected properties, the gate, and one small
suite run end to end through `arcpoint eval run` (report files, exit codes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evals.expectations import check_expectations
from evals.gate import ThresholdsError, apply_thresholds, gate_failures, load_thresholds
from evals.harness import run_suite
from evals.results import START_TS, EntryResult, HarnessConfig, PolicyRun, PropertyResult
from evals.scenario_file import ScenarioFile, parse_entry
from evals.scenario_scores import score_telemetry
from evals.scoring import (
    count_flaps,
    flap_times,
    label_windows,
    leave_delay_s,
    percent_better,
    score_detections,
    score_drift,
    traffic_shares,
)

TS = START_TS + 10.0 * np.arange(1, 61)  # 60 ticks, ends of ticks


# --- flaps and shares ----------------------------------------------------------------------------


def test_a_quick_reversal_is_a_flap_and_a_slow_one_is_not() -> None:
    ts = 10.0 * np.arange(12)
    quick = np.array([0.3, 0.3, 0.45, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3])
    assert flap_times(quick, ts) == [20.0]
    slow = np.array([0.3, 0.42, 0.42, 0.42, 0.42, 0.42, 0.42, 0.42, 0.3, 0.3, 0.3, 0.3])
    assert flap_times(slow, ts) == []  # the fall came 70 s after the top
    small = 0.3 + 0.04 * np.sin(np.arange(12))
    assert flap_times(small, ts) == []


def test_each_swing_counts_once_and_gaps_are_skipped() -> None:
    ts = 10.0 * np.arange(10)
    zigzag = np.array([0.2, 0.5, 0.2, 0.5, np.nan, 0.2, 0.2, 0.2, 0.2, 0.2])
    # up to 0.5 (t=10), down (t=20), up (t=30), then down after a tick without requests
    assert flap_times(zigzag, ts) == [10.0, 20.0, 30.0]


def test_traffic_shares_and_flap_counts() -> None:
    counts = {"a": np.array([1, 0, 3, 1]), "b": np.array([1, 0, 1, 3])}
    s = traffic_shares(counts)
    assert s["a"][0] == 0.5 and np.isnan(s["a"][1]) and s["b"][3] == 0.75
    # 4 requests a tick: a 50-point swing is within sampling noise; 400 a tick: a real one
    assert count_flaps(counts, 10.0 * np.arange(4)) == {"a": 0, "b": 0}
    big = {k: 100 * v for k, v in counts.items()}
    assert count_flaps(big, 10.0 * np.arange(4)) == {"a": 1, "b": 1}


def test_a_stationary_random_split_does_not_flap() -> None:
    # a per-request router that spreads 25% of ~50 requests a tick at random: its 10-second
    # shares move 10 points by chance all the time, and none of that is a flap
    rng = np.random.default_rng(3)
    ts = 10.0 * np.arange(360)
    n = rng.poisson(50, ts.size)
    a = rng.binomial(n, 0.25)
    counts = {"a": a, "rest": n - a}
    assert sum(count_flaps(counts, ts).values()) <= 2
    share = traffic_shares(counts)["a"]
    assert len(flap_times(share, ts)) > 20  # the 10-point rule alone counts noise
    # a router that really swings the split every 20 s still flaps under the test
    swing = np.where(np.arange(ts.size) % 4 < 2, 0.6, 0.2)
    b = rng.binomial(n, swing)
    assert sum(count_flaps({"b": b, "rest": n - b}, ts).values()) >= 100


def test_leave_delay_is_measured_from_the_tick_start() -> None:
    share = np.full(TS.size, 0.6)
    share[20:] = 0.01
    t0 = START_TS + 180.0  # inside tick 18 (which starts at 180 s)
    assert leave_delay_s(share, TS, t0, 0.05) == 20.0
    assert leave_delay_s(share, TS, t0, 0.001) is None


# --- windows and detections ------------------------------------------------------------------


def test_labelled_ticks_become_merged_windows() -> None:
    labelled = np.zeros(TS.size, dtype=bool)
    labelled[[10, 11, 14, 40]] = True  # ticks 10-11 and 14 are 20 s apart: merged
    w = label_windows(TS, labelled)
    assert w == [(TS[10] - 10, TS[14]), (TS[40] - 10, TS[40])]


def test_precision_recall_and_delay() -> None:
    windows = {"b0": [(100.0, 200.0), (500.0, 520.0)], "b1": []}
    detections = [(90.0, "b0"), (130.0, "b0"), (150.0, "b0"), (300.0, "b0"), (150.0, "b1")]
    s = score_detections(detections, windows, grace_s=120.0)
    # 130 and 150 on b0 are in the first window; 300 is within its 120 s grace; 90 is before
    # it, 150 on b1 is on the wrong backend; the second window is missed
    assert (s.true_positives, s.false_positives) == (3, 2)
    assert s.precision == pytest.approx(3 / 5)
    assert s.recall == 0.5 and s.windows_detected == 1
    assert s.mean_delay_s == 30.0
    none = score_detections([], {"b0": []})
    assert none.precision is None and none.recall is None


def test_drift_delay_false_alarms_and_other_chaos() -> None:
    drifts = [(1000.0, 3000.0, ["b0"])]
    chaos = {"b0": [(1000.0, 3000.0)], "b1": [(200.0, 300.0)]}
    alarms = [(500.0, "b0"), (1600.0, "b0"), (1700.0, "b0"), (250.0, "b1"), (2000.0, "b1")]
    d = score_drift(alarms, drifts, chaos)
    assert d.delay_s == 600.0 and d.detected == 1
    # 500 on b0 before the onset and 2000 on b1 outside its window are false; 250 on b1 is
    # during another chaos event; 1700 repeats the detected drift
    assert d.false_alarms == 2 and d.other_chaos_alarms == 1
    missed = score_drift([(5000.0, "b0")], drifts, chaos)
    assert missed.delay_s is None and missed.false_alarms == 1


def test_percent_better() -> None:
    assert percent_better(7.0, 10.0) == pytest.approx(30.0)
    assert percent_better(12.0, 10.0) == pytest.approx(-20.0)
    assert percent_better(0.0, 0.0) is None


# --- expected properties --------------------------------------------------------------------------


def _run(policy: str, b0_share_after: float, sla: float) -> PolicyRun:
    n = TS.size
    b0 = np.full(n, 60.0)
    b0[35:] = 100 * b0_share_after
    rest = 100 - b0
    nan = np.full(n, np.nan)
    return PolicyRun(
        policy=policy,
        summary={"sla_violation_pct": sla, "p95_latency_ms": 300.0, "mean_cost": 0.001,
                 "reroutes": 0, "ambiguous_pct": 2.0},
        requests=6000,
        ts=TS,
        counts={"b0": b0, "b1": rest},
        p95_ms={"b0": nan, "b1": nan},
        error_rate={"b0": nan, "b1": nan},
        forecast_ms={"b0": nan, "b1": nan},
        violations=np.zeros(n),
        tick_requests=np.full(n, 100.0),
        seconds=0.0,
    )  # fmt: skip


def test_traffic_leaves_and_beats_baselines() -> None:
    entry = parse_entry(
        {
            "name": "e",
            "fleet": ["b0", "b1"],
            "duration_s": 600,
            "policies": ["predictive", "static", "round_robin"],
            "chaos": [{"kind": "latency_spike", "backend": "b0", "at": 330}],
            "expect": {
                "traffic_leaves": [
                    {"backend": "b0", "within_s": 30, "max_share": 0.05},
                    {"backend": "b0", "within_s": 10, "max_share": 0.05},
                ],
                "beats_baselines": [
                    {"by_pct": 30, "baselines": ["static"]},
                    {"by_pct": 30},
                ],
                "max_sla_violation_pct": 5,
            },
        }
    )
    assert isinstance(entry, ScenarioFile)
    runs = {"predictive": _run("predictive", 0.02, 6.0), "static": _run("static", 0.6, 10.0),
            "round_robin": _run("round_robin", 0.6, 7.0)}  # fmt: skip
    policies = {k: {**r.summary, "flaps": 0} for k, r in runs.items()}
    metrics = {"sla_violation_pct": 6.0}
    results = check_expectations(entry, runs, policies, metrics, drift_delay=None)
    got = {(p.name, p.limit): p for p in results}
    # traffic leaves at tick 35 (starts at 350 s), 20 s after the spike started at 330 s
    assert got[("traffic_leaves b0", 30)].passed is True
    assert got[("traffic_leaves b0", 30)].value == 20.0
    assert got[("traffic_leaves b0", 10)].passed is False
    beats = [p.passed for p in results if p.name.startswith("beats")]
    assert beats == [True, False]  # 40% better than static, only 14% better than round robin
    assert got[("max_sla_violation_pct", 5)].passed is False


# --- the gate ---------------------------------------------------------------------------------


def _entry(name: str, metrics: dict, expectations: list[PropertyResult] | None = None):
    return EntryResult(name, "scenario", None, "", metrics, {}, expectations or [], 0.0)


def test_thresholds_gate_metrics_and_named_expectations(tmp_path: Path) -> None:
    path = tmp_path / "th.yaml"
    path.write_text(
        "entries:\n"
        "  '*': {max_sla_violation_pct: 10}\n"
        "  'ci_*': {min_anomaly_recall: 0.5, expectations: [traffic_leaves b0]}\n"
        "  ci_b: {max_drift_delay_s: 600}\n"
    )
    th = load_thresholds(path)
    ok = PropertyResult("traffic_leaves b0", True, "fine")
    bad = PropertyResult("traffic_leaves b0", False, "too slow")
    a = _entry("ci_a", {"sla_violation_pct": 4.0, "anomaly_recall": 1.0}, [ok])
    b = _entry(
        "ci_b", {"sla_violation_pct": 12.0, "anomaly_recall": 1.0, "drift_delay_s": None}, [bad]
    )
    c = _entry("other", {"sla_violation_pct": 3.0, "anomaly_recall": None})
    d = _entry("ci_d", {"sla_violation_pct": 3.0}, [ok])  # no anomaly_recall reported
    apply_thresholds(th, [a, b, c, d])
    assert a.passed and c.passed
    assert not b.passed and not d.passed
    fails = gate_failures([a, b, c, d])
    assert any("ci_b: max_sla_violation_pct" in f for f in fails)
    assert any("ci_b: max_drift_delay_s" in f and "no value" in f for f in fails)
    assert any("ci_b: expectation traffic_leaves b0" in f for f in fails)
    assert any("ci_d: min_anomaly_recall" in f and "reports no metric" in f for f in fails)


def test_a_bad_thresholds_file_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "th.yaml"
    p.write_text("entries:\n  '*': {sla_violation_pct: 10}\n")
    with pytest.raises(ThresholdsError, match="not a limit"):
        load_thresholds(p)
    p.write_text("entries:\n  '*': {max_flaps: lots}\n")
    with pytest.raises(ThresholdsError, match="must be a number"):
        load_thresholds(p)
    p.write_text("entrys: {}\n")
    with pytest.raises(ThresholdsError):
        load_thresholds(p)
    with pytest.raises(ThresholdsError, match="no such"):
        load_thresholds(tmp_path / "none.yaml")


def test_the_shipped_thresholds_load() -> None:
    th = load_thresholds(Path(__file__).resolve().parents[1] / "evals" / "thresholds.yaml")
    assert th.blocks_for("ci_latency_spike")


# --- telemetry scoring -----------------------------------------------------------------------


def test_telemetry_series_are_scored_on_their_own_clocks() -> None:
    entry = parse_entry(
        {
            "name": "t",
            "traffic": {"kind": "telemetry", "series": [{"path": "a.csv"}, {"path": "b.csv"}]},
        }
    )
    assert isinstance(entry, ScenarioFile)
    parts = [
        {"k": 1, "backend": "b", "path": "b.csv", "points": 10, "rejected_rows": 0,
         "windows": [(5000.0, 6000.0)], "anomalies": [(5500.0, "b")], "change_points": [],
         "start_ts": 4000.0, "end_ts": 9000.0, "seconds": 1.0},
        {"k": 0, "backend": "a", "path": "a.csv", "points": 10, "rejected_rows": 1,
         "windows": [(100.0, 200.0)], "anomalies": [(50.0, "a"), (7000.0, "a")],
         "change_points": [(150.0, "a")], "start_ts": 0.0, "end_ts": 8000.0, "seconds": 1.0},
    ]  # fmt: skip
    r = score_telemetry(entry, parts)
    assert r.metrics["anomaly_precision"] == pytest.approx(1 / 3)
    assert r.metrics["anomaly_recall"] == 0.5
    assert r.metrics["change_points_in_windows"] == 1
    assert [s["backend"] for s in r.detail["series"]] == ["a", "b"]
    assert r.timeline["windows"]["b"] == [(1000.0, 2000.0)]  # on b's own clock


# --- end to end ---------------------------------------------------------------------------------

TINY = """\
name: {name}
seed: 3
duration_s: 12m
policies: [predictive, static]
forecaster: {{history_hours: 1, n_estimators: 4, max_depth: 6}}
chaos:
  - {{kind: backend_failure, backend: b0, at: 8m, duration_s: 3m}}
expect:
  traffic_leaves: {{backend: b0, within_s: 30, after: chaos_start, max_share: 0.02}}
  beats_baselines: {{metric: sla_violation_pct, by_pct: 10}}
"""


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("suite")
    (d / "scen").mkdir()
    (d / "scen" / "tiny.yaml").write_text(TINY.format(name="tiny"))
    (d / "ok.yaml").write_text("entries:\n  tiny: {max_sla_violation_pct: 90, expectations: all}\n")
    (d / "strict.yaml").write_text("entries:\n  tiny: {max_sla_violation_pct: 0.001}\n")
    return d


def test_eval_run_writes_the_report_and_passes_the_gate(tiny_suite: Path) -> None:
    from arcpoint.cli import main

    out = tiny_suite / "out"
    code = main(
        ["eval", "run", str(tiny_suite / "scen"), "--out", str(out), "--thresholds",
         str(tiny_suite / "ok.yaml"), "--jobs", "1", "--llm", "none"]
    )  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    (entry,) = report["entries"]
    assert entry["name"] == "tiny" and entry["passed"] and entry["error"] is None
    assert set(entry["detail"]["policies"]) == {"predictive", "static"}
    for key in ("sla_violation_pct", "p95_latency_ms", "mean_cost", "flaps", "escalation_pct",
                "anomaly_precision", "anomaly_recall", "drift_false_alarms"):  # fmt: skip
        assert key in entry["metrics"]
    names = {e["name"]: e["passed"] for e in entry["expectations"]}
    assert names == {"traffic_leaves b0": True, "beats_baselines sla_violation_pct": True}
    assert entry["detail"]["ground_truth_windows"]["b0"] == 1
    md = (out / "report.md").read_text()
    assert "| tiny | simulated |" in md and "**Gate: PASS**" in md
    for plot in entry["plots"]:
        assert (out / plot).stat().st_size > 1000
    assert len(entry["plots"]) == 2
    assert (out / "work" / "tiny.db").exists()


def test_a_broken_threshold_exits_1(tiny_suite: Path, capsys: pytest.CaptureFixture) -> None:
    from arcpoint.cli import main

    code = main(
        ["eval", "run", str(tiny_suite / "scen"), "--out", str(tiny_suite / "out2"),
         "--thresholds", str(tiny_suite / "strict.yaml"), "--jobs", "1", "--llm", "none",
         "--no-plots", "--no-record", "--json"]
    )  # fmt: skip
    assert code == 1
    captured = capsys.readouterr()
    assert "GATE FAILED" in captured.err and "max_sla_violation_pct" in captured.err
    assert json.loads(captured.out)["passed"] is False


def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from arcpoint.cli import main

    (tmp_path / "bad.yaml").write_text("name: bad\ndurtion_s: 5\n")
    assert main(["eval", "run", str(tmp_path / "bad.yaml"), "--out", str(tmp_path)]) == 2
    assert "did you mean 'duration_s'" in capsys.readouterr().err
    (tmp_path / "th.yaml").write_text("entries: {x: {flaps: 1}}\n")
    ok = tmp_path / "ok.yaml"
    ok.write_text("name: ok\n")
    assert main(["eval", "run", str(ok), "--thresholds", str(tmp_path / "th.yaml")]) == 2


def test_an_entry_that_cannot_run_fails_the_gate_without_stopping_the_others(
    tmp_path: Path,
) -> None:
    entries = [
        parse_entry({"kind": "nab_benchmark", "name": "nab", "data": str(tmp_path / "no"),
                     "labels": str(tmp_path / "no.json")}),
        parse_entry({"name": "trace", "traffic": {"kind": "arrival_trace",
                                                    "path": str(tmp_path / "none.csv")}}),
    ]  # fmt: skip
    suite = run_suite(entries, HarnessConfig(out_dir=tmp_path / "out", jobs=1))
    nab, trace = suite.entries
    assert "not found" in (nab.error or "")
    assert "cannot open the arrival trace" in (trace.error or "")
    assert not suite.passed
    assert len(gate_failures(suite.entries)) == 2


def test_the_loop_replay_scores_exactly_as_the_plain_replay(tmp_path: Path) -> None:
    """Before the loop changes anything (no retrain in ten minutes), routing through it must
    give the same requests, violations and costs as `run_policy`: the scoring is shared."""
    from agents.monitors.routing_drift import RoutingDriftConfig
    from agents.monitors.routing_drift import replay as replay_routing_drift
    from context_api.store import Store
    from evals.loop_replay import loop_summary, run_with_loop
    from evals.replay import run_policy
    from tools.forecaster import train
    from tools.sim.chaos import ChaosEvent
    from tools.sim.history import simulate_history
    from tools.sim.run import SimConfig
    from tools.sim.scenario import Scenario, build

    history = simulate_history(3600.0, seed=4, start_ts=START_TS - 4200.0)
    forecaster, _ = train(history, n_estimators=4, max_depth=6, seed=0, n_jobs=1)
    scenario = Scenario(
        name="parity",
        seed=8,
        duration_s=600.0,
        chaos=(ChaosEvent(kind="latency_spike", backend="b0", start_s=300.0, magnitude=3.0),),
    )
    built = build(scenario)
    plain = run_policy(
        built, "predictive", forecaster=forecaster, sim_config=SimConfig(start_ts=START_TS)
    )
    store = Store(tmp_path / "loop.db")
    try:
        # a detector short enough to see the spike in ten minutes (the routing is unchanged)
        fast = {"burn_in_s": 0.0, "warmup_ticks": 20}
        looped, loop = run_with_loop(
            built, forecaster, store, start_ts=START_TS, loop_config={"routing_drift": fast}
        )
        summary = loop_summary(loop, START_TS)
    finally:
        store.close()
    assert looped.requests == plain.requests
    assert looped.summary() == plain.summary()
    assert [t.counts for t in looped.ticks] == [t.counts for t in plain.ticks]
    # the loop's live routing-drift detector and the harness' replay of it agree alarm for alarm
    assert [t.residuals for t in looped.ticks] == [t.residuals for t in plain.ticks]
    replayed = replay_routing_drift(
        [t.ts for t in plain.ticks],
        [t.residuals for t in plain.ticks],
        ["b0", "b1", "b2", "b3"],
        RoutingDriftConfig(**fast),
        start_ts=START_TS,
    )
    assert summary["routing_drift_alarms"] == [(a.ts, a.backend) for a in replayed]
    assert replayed and replayed[0].backend == "b0" and replayed[0].ts > START_TS + 300.0
    assert summary["stats"]["decisions_sampled"] > 0
    assert summary["timeline"][0]["kind"] == "champion_active"


def test_a_block_can_be_limited_to_one_kind_of_entry(tmp_path: Path) -> None:
    path = tmp_path / "th.yaml"
    path.write_text("entries:\n  '*': {kind: scenario, max_escalation_pct: 6}\n")
    scenario = _entry("s", {"escalation_pct": 4.0})
    bench = EntryResult("b", "drift_benchmark", None, "", {"ph_speedup": 30.0}, {}, [], 0.0)
    apply_thresholds(load_thresholds(path), [scenario, bench])
    assert len(scenario.thresholds) == 1 and bench.thresholds == []
    assert scenario.passed and bench.passed
