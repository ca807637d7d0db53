"""Workloads: the Azure traces and the fits drawn from them, load scaling, user trace files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evals.workload_files import TraceError, azure_path, azure_trace, detect_unit, read_trace
from tools.sim.spec import DEFAULT_FLEET, REFERENCE_TOKENS, TokenStats
from tools.sim.workload import LENGTH_FITS, TIER_WEIGHTS, LengthFit, at_load, synthetic


def _azure(kind: str):
    try:
        azure_path(kind)
    except TraceError:
        pytest.skip("the shared Azure traces are not on this machine")
    return azure_trace(kind)


@pytest.mark.parametrize("kind", ["conv", "code"])
def test_length_fits_are_the_azure_traces_own(kind):
    w = _azure(kind)
    fit = LengthFit.of(w.input_tokens, w.output_tokens)
    ours = LENGTH_FITS[kind]
    for name in ("mu_in", "sd_in", "mu_out", "sd_out", "rho"):
        assert getattr(ours, name) == pytest.approx(getattr(fit, name), abs=1e-3)
    assert (ours.min_in, ours.max_in) == (fit.min_in, fit.max_in)


def test_reference_token_moments_are_the_conversation_trace():
    w = _azure("conv")
    got = TokenStats.of(w.input_tokens, w.output_tokens)
    for name in ("mean_input", "mean_output", "mean_input_sq", "mean_input_output"):
        assert getattr(REFERENCE_TOKENS, name) == pytest.approx(getattr(got, name), rel=1e-4)


def test_synthetic_traffic_has_the_rate_and_the_mix_it_was_asked_for():
    w = synthetic(
        duration_s=3600, mean_rps=20, seed=1, burst_rate_per_hour=0.0, diurnal_amplitude=0.0
    )
    assert w.rate_rps == pytest.approx(20, rel=0.03)
    assert np.log(w.input_tokens).mean() == pytest.approx(LENGTH_FITS["conv"].mu_in, abs=0.03)
    shares = np.bincount(w.tier, minlength=3) / len(w)
    assert shares == pytest.approx(TIER_WEIGHTS, abs=0.01)
    bursty = synthetic(duration_s=3600, mean_rps=20, seed=1, burst_rate_per_hour=20)
    assert len(bursty) > len(w) * 1.05


def test_at_load_time_scales_to_the_requested_share_of_capacity():
    w = synthetic(duration_s=600, mean_rps=5, seed=2)
    for load in (0.3, 0.9):
        scaled = at_load(w, load, DEFAULT_FLEET)
        assert scaled.offered_load(DEFAULT_FLEET) == pytest.approx(load, rel=1e-6)
    cut = at_load(w, 2.0, DEFAULT_FLEET, duration_s=900)
    assert cut.duration_s == 900 and cut.arrival_s.max() < 900
    assert cut.rate_rps == pytest.approx(scaled.rate_rps * 2 / 0.9, rel=0.05)  # repeated to fill


def test_a_user_csv_trace_is_read_with_its_bad_rows_counted(tmp_path):
    p = tmp_path / "trace.csv"
    p.write_text(
        "timestamp,input_tokens,output_tokens\n"
        "0.0,100,20\n"
        "0.5,200,30\n"
        "oops,100,10\n"
        "1.5,-4,10\n"
        "2.0,50,0\n"
        "0.2,300,40\n"
        "3.0,150,\n"
    )
    w, report = read_trace(p)
    assert report.accepted == 3 and report.rejected == 4 and len(w) == 3
    assert report.out_of_order == 1
    assert report.reasons["input tokens missing or not a positive integer"] == 1
    assert report.reasons["output tokens missing or not a positive integer"] == 2
    assert any(e.startswith("line 4: bad timestamp") for e in report.examples)
    assert w.arrival_s.tolist() == [0.0, 0.2, 0.5] and w.input_tokens.tolist() == [100, 300, 200]
    assert report.time_unit == "s" and report.time_unit_detected


def test_a_mooncake_style_jsonl_trace_in_milliseconds_with_prefix_hashes(tmp_path):
    p = tmp_path / "mooncake.jsonl"
    recs = [
        {"timestamp": 0, "input_length": 6955, "output_length": 52, "hash_ids": [0, 1, 2]},
        {"timestamp": 27482, "input_length": 6472, "output_length": 26, "hash_ids": [0, 1, 9]},
        {"timestamp": 3_600_000, "input_length": 100, "output_length": 5, "hash_ids": []},
    ]
    p.write_text("\n".join(json.dumps(r) for r in recs) + "\n{not json\n[1, 2]\n")
    w, report = read_trace(p)
    assert report.time_unit == "ms" and report.rejected == 2 and report.with_hashes == 2
    assert w.arrival_s.tolist() == [0.0, 27.482, 3600.0]
    assert w.prefix == ((0, 1, 2), (0, 1, 9), ()) and w.block_tokens == 512
    w_s, report_s = read_trace(p, time_unit="s")
    assert w_s.arrival_s[-1] == 3_600_000 and not report_s.time_unit_detected


def test_timestamp_units_are_detected_from_their_scale():
    assert detect_unit(np.array([1.7e9, 1.7e9 + 5])) == "s"
    assert detect_unit(np.array([1.7e12, 1.7e12 + 5000])) == "ms"
    assert detect_unit(np.array([0.0, 3600.0])) == "s"
    assert detect_unit(np.array([0.0, 3_600_000.0])) == "ms"


def test_a_trace_with_nothing_usable_is_an_error_not_an_empty_run(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("when,prompt,reply\n1,2,3\n")
    with pytest.raises(TraceError, match="no column for timestamp, input, output"):
        read_trace(p)
    q = tmp_path / "empty.jsonl"
    q.write_text('{"timestamp": "x", "input_length": 1, "output_length": 1}\n')
    with pytest.raises(TraceError, match="no usable request records"):
        read_trace(q)
    with pytest.raises(TraceError, match="no such file"):
        read_trace(tmp_path / "missing.csv")


def test_the_azure_trace_reads_its_real_datetimes():
    w = _azure("code")
    assert len(w) == 8819
    assert w.duration_s == pytest.approx(3436, abs=5)
