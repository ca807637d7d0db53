"""Ingesting real telemetry: what is accepted, what is rejected and why, what is refused."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arcpoint.cli import main
from context_api.ingest import (
    IngestError,
    Ingestor,
    ingest_file,
    ingest_files,
    parse_timestamp,
)
from tools.telemetry import TelemetryPoint

FIXTURES = Path(__file__).parent / "fixtures" / "ingest"
NAB = Path(__file__).resolve().parents[2] / "shared" / "data" / "nab" / "data"
T0 = 1714564800.0  # 2024-05-01T12:00:00Z


def lines(text: str) -> list[str]:
    return io.StringIO(text).readlines()


def ingest_text(text: str, **kwargs) -> tuple:
    allowed = kwargs.pop("allowed_backends", None)
    retime = kwargs.pop("retime", False)
    ingestor = Ingestor(allowed_backends=allowed, max_reported=100, retime=retime)
    ingestor.add_lines(lines(text), source="t", **kwargs)
    result = ingestor.result()
    return result.points, result.rejections, result.report


def reasons(rejections) -> list[tuple[int, str]]:
    return [(r.line, r.reason.value) for r in rejections]


# -- accepted input ------------------------------------------------------------------------------


def test_full_csv_becomes_telemetry_points_sorted_by_ts_then_backend():
    result = ingest_file(FIXTURES / "fleet.csv")
    assert result.report.rejected == 0
    assert result.report.accepted == 6
    assert all(type(p) is TelemetryPoint for p in result.points)
    assert [(p.ts, p.backend) for p in result.points] == sorted(
        (p.ts, p.backend) for p in result.points
    )
    first = result.points[0]
    assert first == TelemetryPoint(
        ts=T0,
        backend="b0",
        rps=120.5,
        p50_ms=80.0,
        p95_ms=140.0,
        error_rate=0.001,
        in_flight=9.6,
        load_known=True,
    )
    span = result.report.backends["b1"]
    assert (span.count, span.first_ts, span.last_ts) == (3, T0, T0 + 20)
    assert span.median_interval_s == 10.0
    assert result.report.sources[0].columns["p95_ms"] == "p95_ms"


def test_jsonl_aliases_timezones_and_derived_fields():
    result = ingest_file(FIXTURES / "fleet.jsonl")
    report = result.report
    assert report.rejected == 0 and report.accepted == 4
    assert report.sources[0].blank_lines == 1
    assert report.sources[0].ignored_columns == ["region"]
    by_key = {(p.backend, p.ts): p for p in result.points}
    # `load` and `latency_ms` aliases; in_flight from Little's law: 120.5 rps * 80 ms.
    b0 = by_key[("b0", T0)]
    assert (b0.rps, b0.p50_ms, b0.p95_ms) == (120.5, 80.0, 140.0)
    assert b0.in_flight == pytest.approx(120.5 * 0.080)
    assert b0.load_known
    # 'YYYY-mm-dd HH:MM:SS' without offset is UTC; `requests_per_s` and `p95` aliases.
    b1 = by_key[("b1", T0)]
    assert (b1.rps, b1.p50_ms, b1.p95_ms, b1.in_flight) == (60.0, 95.0, 210.0, 5.7)
    # Only one latency known: p50 = p95.
    assert by_key[("b0", T0 + 10)].p50_ms == 150.0
    # +02:00 offset honoured; no load column: load unknown.
    late = by_key[("b1", T0 + 10)]
    assert (late.p50_ms, late.p95_ms) == (220.0, 220.0)
    assert (late.load_known, late.rps, late.in_flight) == (False, 0.0, 0.0)
    assert any("p50 = p95" in note for note in report.notes)


def test_single_column_series_uses_file_stem_and_unknown_load():
    result = ingest_file(FIXTURES / "nab_like.csv")
    assert result.report.accepted == 5 and result.report.rejected == 0
    assert {p.backend for p in result.points} == {"nab_like"}
    assert all(
        not p.load_known and p.rps == 0.0 and p.in_flight == 0.0 and p.p50_ms == p.p95_ms
        for p in result.points
    )
    assert [p.p95_ms for p in result.points] == [20.5, 21.0, 19.75, 22.0, 0.0]
    assert result.report.backends["nab_like"].median_interval_s == 300.0
    assert any("300 s" in note for note in result.report.notes)


def test_backend_option_names_a_single_column_series():
    result = ingest_file(FIXTURES / "nab_like.csv", backend="gpu-a")
    assert {p.backend for p in result.points} == {"gpu-a"}


def test_backend_option_fills_empty_backend_cells_only():
    text = "ts,backend,latency\n1,b0,10\n2,,11\n"
    points, rejections, _ = ingest_text(text, backend="fallback")
    assert [p.backend for p in points] == ["b0", "fallback"]
    _, rejections, _ = ingest_text(text)
    assert reasons(rejections) == [(3, "missing_field")]


def test_only_p50_known_sets_p95_to_it():
    points, _, _ = ingest_text("time,p50\n2024-05-01T12:00:00Z,42\n", backend="b0")
    assert (points[0].p50_ms, points[0].p95_ms) == (42.0, 42.0)


def test_in_flight_without_rps_keeps_in_flight_but_load_unknown():
    points, _, _ = ingest_text("ts,backend,latency,in_flight\n1,b0,10,3\n")
    assert (points[0].load_known, points[0].rps, points[0].in_flight) == (False, 0.0, 3.0)


@pytest.mark.parametrize(
    "text",
    [
        "ts\tbackend\tlatency\n1\tb0\t10\n2\tb0\t11\n",
        "ts;backend;latency\n1;b0;10\n2;b0;11\n",
        "\ufeffTimestamp , Backend , LATENCY_MS\r\n1,b0,10\r\n2,b0,11\r\n\r\n",
    ],
    ids=["tab", "semicolon", "bom-crlf-case-spaces"],
)
def test_csv_dialects(text):
    points, rejections, _ = ingest_text(text.removeprefix("\ufeff"))
    assert not rejections
    assert [(p.ts, p.p95_ms) for p in points] == [(1.0, 10.0), (2.0, 11.0)]


def test_bom_is_stripped_when_reading_a_file(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffts,backend,latency\n1,b0,10\n".encode())
    assert ingest_file(path).report.accepted == 1


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-05-01T12:00:00Z", T0),
        ("2024-05-01T12:00:00+00:00", T0),
        ("2024-05-01T14:00:00+02:00", T0),
        ("2024-05-01 12:00:00", T0),
        ("2024-05-01T12:00:00.250", T0 + 0.25),
        ("1714564800", T0),
        ("1714564800.5", T0 + 0.5),
        (1714564800, T0),
        (1714564800.5, T0 + 0.5),
    ],
)
def test_timestamp_formats(raw, expected):
    assert parse_timestamp(raw) == expected


@pytest.mark.parametrize("raw", ["yesterday", "nan", "inf", "-5", "2024-13-01 00:00:00", True, [1]])
def test_bad_timestamps_raise_value_error(raw):
    with pytest.raises(ValueError):
        parse_timestamp(raw)


# -- rejected rows: one per case -----------------------------------------------------------------


def test_every_bad_csv_row_is_rejected_with_line_and_reason():
    result = ingest_file(FIXTURES / "bad_rows.csv", allowed_backends=["b0", "b1"])
    assert reasons(result.rejections) == [
        (3, "malformed_row"),  # missing columns
        (4, "bad_timestamp"),
        (5, "bad_type"),  # rps 'lots'
        (6, "non_finite"),  # NaN latency
        (7, "non_finite"),  # infinite latency
        (8, "negative_latency"),
        (9, "negative_load"),
        (10, "error_rate_out_of_range"),
        (11, "unknown_backend"),
        (12, "out_of_order"),
        (13, "duplicate"),
        (14, "missing_field"),  # timestamp
        (15, "missing_field"),  # latency
    ]
    assert [p.ts for p in result.points] == [T0, T0 + 100]
    report = result.report
    assert report.accepted == 2 and report.rejected == 13
    assert report.rejected_by_reason["non_finite"] == 2
    assert report.rejected_by_reason["missing_field"] == 2
    assert report.sources[0].rows == 15
    nan_row = result.rejections[3]
    assert nan_row.raw == "1714564830,b0,100,nan,0.01"
    assert nan_row.source == str(FIXTURES / "bad_rows.csv")
    assert "p95 latency is nan" in nan_row.detail


def test_every_bad_jsonl_row_is_rejected_with_line_and_reason():
    result = ingest_file(FIXTURES / "bad_rows.jsonl")
    assert reasons(result.rejections) == [
        (2, "malformed_row"),  # invalid JSON
        (3, "malformed_row"),  # an array, not an object
        (4, "bad_type"),  # boolean latency
        (5, "bad_type"),  # text latency
        (6, "non_finite"),  # NaN
        (7, "non_finite"),  # Infinity
        (8, "ambiguous_field"),  # p95_ms and latency
        (9, "bad_type"),  # numeric backend
        (10, "percentile_order"),  # p50 > p95
    ]
    # Numbers as JSON strings are accepted.
    assert [p.p95_ms for p in result.points] == [150.0, 151.5]


def test_unknown_backends_pass_without_a_fleet():
    result = ingest_file(FIXTURES / "bad_rows.csv")
    assert "unknown_backend" not in result.report.rejected_by_reason
    assert "b9" in result.report.backends


def test_unknown_backend_rejects_the_stem_of_a_single_column_series():
    result = ingest_file(FIXTURES / "nab_like.csv", allowed_backends=["b0"])
    assert result.report.accepted == 0
    assert result.report.rejected_by_reason == {"unknown_backend": 5}


def test_out_of_order_is_per_backend():
    text = "ts,backend,latency\n10,b0,1\n5,b1,1\n11,b0,1\n4,b1,1\n9,b0,1\n"
    points, rejections, _ = ingest_text(text)
    assert reasons(rejections) == [(5, "out_of_order"), (6, "out_of_order")]
    assert [(p.backend, p.ts) for p in points] == [("b1", 5.0), ("b0", 10.0), ("b0", 11.0)]


def test_duplicates_across_files_are_rejected_and_order_is_per_file(tmp_path):
    later = tmp_path / "later.csv"
    later.write_text("ts,backend,latency\n20,b0,1\n21,b0,1\n")
    earlier = tmp_path / "earlier.csv"
    earlier.write_text("ts,backend,latency\n10,b0,1\n20,b0,2\n")
    result = ingest_files([later, earlier])
    assert reasons(result.rejections) == [(3, "duplicate")]
    assert result.rejections[0].source == str(earlier)
    assert [p.ts for p in result.points] == [10.0, 20.0, 21.0]
    assert [p.ts for p in result.by_source[str(earlier)]] == [10.0]


def test_a_stray_quote_costs_only_its_own_line():
    text = 'ts,backend,latency\n1,"b0,10\n2,b0,11\n3,"b0",12\n4,"b""0",13\n'
    points, rejections, _ = ingest_text(text)
    assert reasons(rejections) == [(2, "malformed_row")]
    assert rejections[0].raw == '1,"b0,10'
    assert [(p.ts, p.backend) for p in points] == [(2.0, "b0"), (3.0, "b0"), (4.0, 'b"0')]


def test_bad_backend_names_are_rejected():
    text = "ts,backend,latency\n1,b\x070,10\n2," + "x" * 200 + ",10\n3,b0,5\n"
    points, rejections, _ = ingest_text(text)
    assert reasons(rejections) == [(2, "bad_backend"), (3, "bad_backend")]
    assert [p.ts for p in points] == [3.0]


def test_wrong_field_counts_and_blank_lines():
    text = "ts,backend,latency\n\n1,b0,10,extra\n   \n2,b0\n3,b0,12\n"
    points, rejections, report = ingest_text(text)
    assert reasons(rejections) == [(3, "malformed_row"), (5, "malformed_row")]
    assert report.sources[0].blank_lines == 2
    assert [p.ts for p in points] == [3.0]


def test_negative_in_flight_and_error_rate_bounds():
    text = "ts,backend,latency,in_flight,error_rate\n1,b0,10,-2,0\n2,b0,10,1,-0.1\n3,b0,10,1,1\n"
    points, rejections, _ = ingest_text(text)
    assert reasons(rejections) == [(2, "negative_load"), (3, "error_rate_out_of_range")]
    assert points[0].error_rate == 1.0


def test_report_lists_first_n_rejections_but_keeps_all():
    text = "ts,backend,latency\n" + "".join(f"{i},b0,-1\n" for i in range(30))
    ingestor = Ingestor(max_reported=5)
    ingestor.add_lines(lines(text), source="t")
    result = ingestor.result()
    assert len(result.rejections) == 30
    assert len(result.report.rejections) == 5
    assert result.report.rejections_omitted == 25
    assert result.report.rejected == 30


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.one_of(
            st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40),
            st.tuples(
                st.one_of(st.integers(-5, 50), st.sampled_from(["", "x", "2024-05-01 00:00:0"])),
                st.sampled_from(["b0", "b1", "", "b\t2"]),
                st.one_of(st.floats(allow_nan=True), st.sampled_from(["", "1e999", "ten"])),
            ).map(lambda t: f"{t[0]},{t[1]},{t[2]}"),
        ),
        max_size=25,
    )
)
def test_arbitrary_rows_are_accepted_or_rejected_never_lost(rows):
    body = "".join(row.replace("\r", " ").replace("\n", " ") + "\n" for row in rows)
    ingestor = Ingestor(allowed_backends=["b0", "b1"])
    summary = ingestor.add_lines(lines("ts,backend,latency\n" + body), source="t", fmt="csv")
    assert summary.accepted + summary.rejected == summary.rows
    assert summary.rows + summary.blank_lines == len(rows)


# -- unusable files ------------------------------------------------------------------------------


def test_prose_is_not_csv():
    with pytest.raises(IngestError, match="no usable CSV header"):
        ingest_file(FIXTURES / "not_telemetry.txt")


def test_json_array_is_not_jsonl():
    with pytest.raises(IngestError, match="JSON array"):
        ingest_file(FIXTURES / "array.json")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty file"),
        (b"\n\n  \n", "empty file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        ("ts,b\xe9ckend,latency\n1,b0,10\n".encode("latin-1"), "not UTF-8"),
        (b"ts,backend,rps\n1,b0,10\n", "need a latency"),
        (b"backend,latency\nb0,10\n", "need a timestamp"),
        (b"ts,latency,p95_ms\n1,10,10\n", "both name the field"),
    ],
    ids=["empty", "blank", "binary", "latin1", "no-latency", "no-timestamp", "ambiguous"],
)
def test_unusable_files_raise_a_clear_error(tmp_path, content, match):
    path = tmp_path / "f.csv"
    path.write_bytes(content)
    with pytest.raises(IngestError, match=match):
        ingest_file(path)


def test_csv_read_as_jsonl_is_refused():
    with pytest.raises(IngestError, match="no line is a JSON object"):
        ingest_file(FIXTURES / "fleet.csv", fmt="jsonl")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(IngestError, match="cannot read"):
        ingest_file(tmp_path / "nope.csv")


def test_header_only_file_is_usable_and_empty():
    points, rejections, report = ingest_text("timestamp,value\n", backend="b0")
    assert (points, rejections, report.accepted) == ([], [], 0)


def test_unusable_file_leaves_the_ingestor_unchanged(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ts": 1, "backend": "b0", "latency": 5}\n')
    ingestor = Ingestor()
    ingestor.add_file(FIXTURES / "fleet.csv")
    with pytest.raises(IngestError):
        ingestor.add_file(FIXTURES / "nab_like.csv", fmt="jsonl")
    ingestor.add_file(bad)
    result = ingestor.result()
    assert result.report.accepted == 7
    assert [s.source for s in result.report.sources] == [str(FIXTURES / "fleet.csv"), str(bad)]


# -- real NAB series -----------------------------------------------------------------------------

needs_nab = pytest.mark.skipif(not NAB.is_dir(), reason="shared NAB data not present")


@needs_nab
def test_nab_file_with_repeated_timestamps_rejects_exactly_the_repeats():
    result = ingest_file(NAB / "realAWSCloudwatch" / "ec2_disk_write_bytes_1ef3de.csv")
    # The value column is read as a latency: byte counts above the physical bound (10 minutes,
    # ARCPOINT_MAX_LATENCY_MS) are rejected with a reason, never stored.
    reasons = result.report.rejected_by_reason
    assert reasons["duplicate"] == 11
    assert set(reasons) == {"duplicate", "out_of_bounds"}
    assert result.report.accepted == 4730 - 11 - reasons["out_of_bounds"]
    assert max(p.p95_ms for p in result.points) <= 600_000
    assert {p.backend for p in result.points} == {"ec2_disk_write_bytes_1ef3de"}


@needs_nab
def test_nab_series_with_negative_values_rejects_them():
    result = ingest_file(NAB / "artificialWithAnomaly" / "art_daily_flatmiddle.csv")
    assert result.report.rejected_by_reason == {"negative_latency": 2352}
    assert result.report.accepted == 4032 - 2352


# -- the command line ----------------------------------------------------------------------------


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["ingest", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_dry_run_json_report(capsys, tmp_path):
    db = tmp_path / "a.db"
    code, out, _ = run_cli(
        capsys,
        str(FIXTURES / "bad_rows.csv"),
        str(FIXTURES / "nab_like.csv"),
        "--backends",
        "b0,b1,nab_like",
        "--dry-run",
        "--json",
        "--db",
        str(db),
    )
    assert code == 0
    payload = json.loads(out)
    assert payload["accepted"] == 7 and payload["rejected"] == 13
    assert payload["rejected_by_reason"]["unknown_backend"] == 1
    assert payload["rejections"][0]["line"] == 3
    assert payload["stored"] is None and payload["errors"] == []
    assert not db.exists()


def test_cli_text_report_and_strict(capsys, tmp_path):
    code, out, _ = run_cli(capsys, str(FIXTURES / "bad_rows.csv"), "--dry-run")
    assert code == 0
    assert "3 accepted, 12 rejected" in out
    assert "bad_rows.csv:6  non_finite: p95 latency is nan" in out
    db = tmp_path / "x.db"
    code, out, _ = run_cli(capsys, str(FIXTURES / "bad_rows.csv"), "--strict", "--db", str(db))
    assert code == 1
    assert "nothing stored" in out
    assert not db.exists()


def test_cli_text_report_names_ignored_columns(capsys):
    code, out, _ = run_cli(capsys, str(FIXTURES / "fleet.jsonl"), "--dry-run")
    assert code == 0
    assert "fleet.jsonl: ignored columns 'region'" in out


def test_cli_unusable_file_exits_2_and_names_it(capsys):
    code, out, err = run_cli(
        capsys, str(FIXTURES / "fleet.csv"), str(FIXTURES / "not_telemetry.txt"), "--dry-run"
    )
    assert code == 2
    assert "not_telemetry.txt: no usable CSV header" in err
    assert "nothing stored" in out


def test_cli_reads_stdin(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO('{"ts": 1, "latency": 5}\n'))
    code, out, _ = run_cli(capsys, "-", "--backend", "b7", "--dry-run", "--json")
    assert code == 0
    assert json.loads(out)["backends"]["b7"]["count"] == 1


def _sink(stored: set[tuple[str, float]], chunks: list[int] | None = None):
    def sink(source: str, points) -> set[int]:
        if chunks is not None:
            chunks.append(len(points))
        return {i for i, p in enumerate(points) if (p.backend, p.ts) in stored}

    return sink


def test_rows_already_in_the_store_are_duplicates():
    chunks: list[int] = []
    ingestor = Ingestor(sink=_sink({("b0", T0), ("b0", T0 + 10)}, chunks))
    ingestor.add_file(FIXTURES / "fleet.csv")
    result = ingestor.result()
    assert reasons(result.rejections) == [(2, "duplicate"), (4, "duplicate")]
    assert "in the store" in result.rejections[0].detail
    assert chunks == [6]  # one call per chunk, not per row
    assert result.points == []  # the sink took them
    assert result.report.accepted == 4


def test_cli_stores_points_and_rejections_and_a_rerun_stores_nothing_twice(capsys, tmp_path):
    Store = pytest.importorskip("context_api.store").Store

    db = tmp_path / "arcpoint.db"
    code, out, _ = run_cli(
        capsys, str(FIXTURES / "fleet.csv"), str(FIXTURES / "bad_rows.csv"), "--db", str(db)
    )
    assert code == 0
    # bad_rows.csv's first row repeats fleet.csv's first; it still takes its place in the
    # file's sequence, so its line 12 (earlier) is out of order and line 13 a repeat.
    assert "8 telemetry rows, 13 rejections" in out
    expected = ingest_files([FIXTURES / "fleet.csv", FIXTURES / "bad_rows.csv"]).points
    with Store(db) as store:
        assert store.list_telemetry() == expected
        assert (
            store.ingest_rejection_counts(source=str(FIXTURES / "bad_rows.csv"))["non_finite"] == 2
        )
        first = store.list_ingest_rejections(limit=1)[0]
        # bad_rows.csv's first row repeats fleet.csv's first b0 row.
        assert (first.line, first.reason, first.raw) == (
            2,
            "duplicate",
            "1714564800,b0,100,150,0.01",
        )
        run = store.list_runs(limit=1)[0]
        assert (run.command, run.status, run.summary["accepted"]) == ("ingest", "finished", 8)

    code, out, _ = run_cli(capsys, str(FIXTURES / "fleet.csv"), "--db", str(db), "--json")
    payload = json.loads(out)
    assert code == 0
    assert payload["accepted"] == 0
    assert payload["rejected_by_reason"] == {"duplicate": 6}
    assert payload["stored"]["telemetry"] == 0
    with Store(db) as store:
        assert len(store.list_telemetry()) == 8


def test_cli_store_that_cannot_be_opened_exits_3(capsys, tmp_path):
    pytest.importorskip("context_api.store")
    code, _, err = run_cli(capsys, str(FIXTURES / "fleet.csv"), "--db", str(tmp_path))
    assert code == 3
    assert "cannot open the store" in err


# -- replay through the simulator's code paths ---------------------------------------------------


def hourly_series(tmp_path: Path, n: int = 40) -> Path:
    path = tmp_path / "hourly.csv"
    path.write_text(
        "timestamp,value\n" + "".join(f"{int(T0) + 3600 * i},{100 + i}\n" for i in range(n))
    )
    return path


def test_retime_respaces_each_backend_one_tick_apart_in_order(tmp_path):
    ingestor = Ingestor(retime=True)
    ingestor.add_file(FIXTURES / "nab_like.csv")
    ingestor.add_file(hourly_series(tmp_path, 5), backend="nab_like")  # continues the same backend
    ingestor.add_file(FIXTURES / "fleet.csv")
    result = ingestor.result()
    nab = [p for p in result.points if p.backend == "nab_like"]
    start = parse_timestamp("2014-04-01 00:00:00")
    assert [p.ts for p in nab] == [start + 10.0 * i for i in range(10)]
    assert [p.p95_ms for p in nab] == [20.5, 21.0, 19.75, 22.0, 0.0, 100, 101, 102, 103, 104]
    assert result.report.backends["nab_like"].median_interval_s == 10.0
    notes = " ".join(result.report.notes)
    assert "retimed" in notes
    assert "median interval 3600 s" in notes  # the original spacing is still reported
    # Already 10 s apart: unchanged.
    assert [p.ts for p in result.points if p.backend == "b0"] == [T0, T0 + 10, T0 + 20]


def test_retime_keeps_order_and_duplicate_checks_on_original_times():
    text = "ts,backend,latency\n100,b0,1\n400,b0,2\n400,b0,3\n300,b0,4\n700,b0,5\n"
    points, rejections, _ = ingest_text(text, retime=True)
    assert reasons(rejections) == [(4, "duplicate"), (5, "out_of_order")]
    assert [(p.ts, p.p95_ms) for p in points] == [(100.0, 1.0), (110.0, 2.0), (120.0, 5.0)]


def test_retime_checks_the_store_at_the_times_that_get_stored():
    ingestor = Ingestor(retime=True, sink=_sink({("b0", 110.0)}))
    ingestor.add_lines(lines("ts,backend,latency\n100,b0,1\n400,b0,2\n"), source="t")
    result = ingestor.result()
    assert reasons(result.rejections) == [(3, "duplicate")]
    assert "retimed to" in result.rejections[0].detail


def test_ingested_points_feed_the_feature_windows():
    features = pytest.importorskip("tools.features")
    points = ingest_file(FIXTURES / "fleet.csv").points
    windows = {name: features.FeatureWindow(name) for name in ("b0", "b1")}
    for p in points:  # (ts, backend) order, as a replay delivers them
        windows[p.backend].update(p)
    b0 = windows["b0"].features()
    assert b0.shape == (features.N_FEATURES,)
    assert b0[features.feature_index("p95_ms")] == 160.0
    assert b0[features.feature_index("rps")] == 130.0


def test_hourly_series_fills_a_feature_window_only_when_retimed(tmp_path):
    features = pytest.importorskip("tools.features")
    path = hourly_series(tmp_path)
    raw = features.FeatureWindow()
    for p in ingest_file(path).points:
        raw.update(p)
    assert not raw.ready  # every hour-long gap empties the window
    retimed = features.FeatureWindow()
    ingestor = Ingestor(retime=True)
    ingestor.add_file(path)
    for p in ingestor.result().points:
        retimed.update(p)
    assert retimed.ready


def test_cli_retime_rerun_stores_nothing_twice(capsys, tmp_path):
    Store = pytest.importorskip("context_api.store").Store
    db = tmp_path / "arcpoint.db"
    path = hourly_series(tmp_path, 12)
    assert run_cli(capsys, str(path), "--retime", "--db", str(db))[0] == 0
    code, out, _ = run_cli(capsys, str(path), "--retime", "--db", str(db), "--json")
    assert code == 0
    assert json.loads(out)["rejected_by_reason"] == {"duplicate": 12}
    with Store(db) as store:
        stamps = [p.ts for p in store.list_telemetry(backend="hourly")]
    assert stamps == [T0 + 10.0 * i for i in range(12)]
