"""`arcpoint nab` end to end on a tiny NAB-shaped corpus, and its handling of bad input."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from arcpoint.cli import main
from arcpoint.nab_io import NabFormatError, read_series

T0 = datetime(2014, 4, 1)


def ts(i: int) -> str:
    return (T0 + timedelta(minutes=5 * i)).strftime("%Y-%m-%d %H:%M:%S")


def write_csv(path: Path, values: list[float], stamps: list[str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    stamps = stamps or [ts(i) for i in range(len(values))]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "value"])
        w.writerows(zip(stamps, values, strict=True))


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    spiky = list(rng.normal(10.0, 1.0, 600))
    spiky[450] = 60.0
    write_csv(data / "real" / "spiky.csv", spiky)
    write_csv(data / "art" / "quiet.csv", list(rng.normal(0.0, 1.0, 500)))
    labels = {
        "real/spiky.csv": [[ts(420) + ".000000", ts(480) + ".000000"]],
        "art/quiet.csv": [],
    }
    labels_path = tmp_path / "labels.json"
    labels_path.write_text(json.dumps(labels))
    return data, labels_path


def test_scores_a_corpus_and_writes_results(
    corpus: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, labels = corpus
    out, report = tmp_path / "out", tmp_path / "nab.json"
    argv = ["nab", "--data", str(data), "--labels", str(labels), "--out", str(out)]
    assert main([*argv, "--json", str(report), "--jobs", "1"]) == 0
    captured = capsys.readouterr()
    assert "[1/2]" in captured.err and "[2/2]" in captured.err  # progress on stderr
    for name in ("standard", "reward_low_fp", "reward_low_fn"):
        assert name in captured.out

    rows = list(csv.DictReader((out / "real" / "spiky.csv").open()))
    assert list(rows[0]) == ["timestamp", "value", "anomaly_score", "label"]
    assert len(rows) == 600
    assert [int(r["label"]) for r in rows].count(1) == 61  # rows 420..480
    assert float(rows[0]["anomaly_score"]) == 0.0  # warming up: no model yet
    assert float(rows[450]["anomaly_score"]) > 0.5  # the spike alerts
    assert (out / "art" / "quiet.csv").exists()

    result = json.loads(report.read_text())
    assert set(result) >= {"standard", "reward_low_fp", "reward_low_fn", "files"}
    # One window, caught at its middle (row 450 of 420..480): reward sigma(-31/61)/sigma(-1)
    # ~ 0.86, so the standard score is about 100 * (0.86 + 1) / 2 = 93, minus any false alarm.
    assert result["standard"] > 80
    spiky = result["files"]["real/spiky.csv"]
    assert spiky["rows"] == 600 and spiky["probationary_rows"] == 90
    window = spiky["profiles"]["standard"]["windows"][0]
    assert window["detected_at"] == ts(450)
    assert result["files"]["art/quiet.csv"]["windows"] == 0


def test_profile_selection(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    data, labels = corpus
    report = tmp_path / "nab.json"
    argv = ["nab", "--data", str(data), "--labels", str(labels), "--json", str(report)]
    assert main([*argv, "--profile", "reward_low_fn", "--jobs", "1"]) == 0
    result = json.loads(report.read_text())
    assert "reward_low_fn" in result and "standard" not in result


def test_malformed_file_is_reported_and_the_others_still_scored(
    corpus: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, labels = corpus
    bad = data / "real" / "spiky.csv"
    lines = bad.read_text().splitlines()
    lines[7] = f"{ts(6)},not-a-number"
    bad.write_text("\n".join(lines) + "\n")
    (data / "art" / "binary.csv").write_bytes(b"timestamp,value\n\xff\xfe\x00garbage\n")
    report = tmp_path / "nab.json"
    argv = ["nab", "--data", str(data), "--labels", str(labels), "--jobs", "1"]
    assert main([*argv, "--json", str(report)]) == 1  # some files could not be scored
    captured = capsys.readouterr()
    assert f"{bad}:8: bad value 'not-a-number'" in captured.err
    assert "skipped art/binary.csv" in captured.err and "not UTF-8" in captured.err
    assert "[1/1] art/quiet.csv" in captured.err  # the readable file was still scored
    assert "2 file(s) could not be scored" in captured.out
    result = json.loads(report.read_text())
    assert set(result["problems"]) == {"real/spiky.csv", "art/binary.csv"}
    assert list(result["files"]) == ["art/quiet.csv"]


def test_file_without_labels_is_reported(
    corpus: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, labels = corpus
    write_csv(data / "extra.csv", [1.0, 2.0, 3.0])
    assert main(["nab", "--data", str(data), "--labels", str(labels), "--jobs", "1"]) == 1
    assert "skipped extra.csv: no entry in" in capsys.readouterr().err


def test_nothing_scorable_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text("time,v\n")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"a.csv": []}))
    assert main(["nab", "--data", str(data), "--labels", str(labels), "--jobs", "1"]) == 2
    assert "no file could be scored" in capsys.readouterr().err


def test_a_clock_that_steps_back_is_counted_and_scored(
    corpus: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, labels = corpus
    quiet = data / "art" / "quiet.csv"
    lines = quiet.read_text().splitlines()
    # rows 201..212 replay the hour before them (a clock set back), row 300 repeats row 299
    stamps = [ts(i) for i in range(500)]
    stamps[200:212] = [ts(i) for i in range(188, 200)]
    stamps[300] = stamps[299]
    body = [f"{stamps[i]},{line.split(',')[1]}" for i, line in enumerate(lines[1:])]
    quiet.write_text("\n".join([lines[0], *body]) + "\n")
    report = tmp_path / "nab.json"
    argv = ["nab", "--data", str(data), "--labels", str(labels), "--jobs", "1"]
    assert main([*argv, "--json", str(report)]) == 0
    assert "art/quiet.csv: 1 repeated and 1 backward timestamps" in capsys.readouterr().err
    info = json.loads(report.read_text())["files"]["art/quiet.csv"]
    assert info["rows"] == 500
    assert (info["duplicate_timestamps"], info["backward_timestamps"]) == (1, 1)


def test_cross_validation_adds_cv_scores(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    data, labels = corpus
    report = tmp_path / "nab.json"
    argv = ["nab", "--data", str(data), "--labels", str(labels), "--json", str(report)]
    assert main([*argv, "--cv", "--jobs", "1"]) == 0
    cv = json.loads(report.read_text())["cv"]
    assert set(cv) >= {"standard", "reward_low_fp", "reward_low_fn", "folds"}
    assert [f["held_out"] for f in cv["folds"]] == ["art", "real"]
    # With "real" held out, training ("art") has no labelled window: the first candidate is
    # kept, its threshold never fires, so the held-out window is missed (the null score, 0).
    real = cv["folds"][1]
    assert real["chosen"] == cv["candidates"][0] and real["thresholds"]["standard"] is None
    assert cv["standard"] == pytest.approx(0.0)
    assert cv["in_sample"]["standard"] > 80


def test_cross_validation_scores_the_chosen_detector(
    corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    data, labels = corpus
    report = tmp_path / "nab.json"
    argv = ["nab", "--data", str(data), "--labels", str(labels), "--json", str(report)]
    assert main([*argv, "--cv", "--detector", "gaussian", "--jobs", "1"]) == 0
    out = json.loads(report.read_text())
    # No setting is chosen among candidates: --cv measures the detector that was run.
    assert out["cv"]["candidates"] == ["gaussian"]
    assert {f["chosen"] for f in out["cv"]["folds"]} == {"gaussian"}
    assert out["cv"]["in_sample"]["standard"] == pytest.approx(out["standard"])


def test_defaults_need_the_shared_data_or_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["nab"]) == 2
    assert "--data is required" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("2014-04-01 00:10:00,1.0,extra", "expected 2 fields"),
        ("yesterday,1.0", "bad timestamp 'yesterday'"),
        ("2014-04-01 00:10:00,nan", "value is not finite"),
    ],
)
def test_read_series_rejects_bad_rows(tmp_path: Path, row: str, message: str) -> None:
    path = tmp_path / "f.csv"
    path.write_text(f"timestamp,value\n{ts(0)},1.0\n{ts(1)},2.0\n{row}\n")
    with pytest.raises(NabFormatError, match=f"f.csv:4: {message}"):
        read_series(path)


def test_read_series_keeps_and_counts_clock_changes(tmp_path: Path) -> None:
    # Real NAB files repeat or step back a timestamp where clocks change; rows stay, counted.
    path = tmp_path / "f.csv"
    rows = [ts(0), ts(1), ts(1), ts(2), ts(0), ts(3)]
    path.write_text("timestamp,value\n" + "".join(f"{t},{i}\n" for i, t in enumerate(rows)))
    s = read_series(path)
    assert s.values.tolist() == [0, 1, 2, 3, 4, 5]
    assert s.duplicate_timestamps == 1 and s.backward_timestamps == 1


def test_read_series_rejects_a_bad_header(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("time,v\n")
    with pytest.raises(NabFormatError, match="header"):
        read_series(path)
