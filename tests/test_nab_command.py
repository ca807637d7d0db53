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


def test_malformed_row_names_file_and_line(
    corpus: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, labels = corpus
    bad = data / "real" / "spiky.csv"
    lines = bad.read_text().splitlines()
    lines[7] = f"{ts(6)},not-a-number"
    bad.write_text("\n".join(lines) + "\n")
    assert main(["nab", "--data", str(data), "--labels", str(labels), "--jobs", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:8: bad value 'not-a-number'" in err


def test_file_without_labels_is_an_error(
    corpus: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, labels = corpus
    write_csv(data / "extra.csv", [1.0, 2.0, 3.0])
    assert main(["nab", "--data", str(data), "--labels", str(labels), "--jobs", "1"]) == 2
    assert "no windows for 1 file(s): extra.csv" in capsys.readouterr().err


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
        ("2014-03-01 00:00:00,1.0", "out-of-order timestamp"),
    ],
)
def test_read_series_rejects_bad_rows(tmp_path: Path, row: str, message: str) -> None:
    path = tmp_path / "f.csv"
    path.write_text(f"timestamp,value\n{ts(0)},1.0\n{ts(1)},2.0\n{row}\n")
    with pytest.raises(NabFormatError, match=f"f.csv:4: {message}"):
        read_series(path)


def test_read_series_counts_repeated_timestamps(tmp_path: Path) -> None:
    # Real NAB files repeat a timestamp where clocks go back; the rows are kept and counted.
    path = tmp_path / "f.csv"
    path.write_text(f"timestamp,value\n{ts(0)},1.0\n{ts(1)},2.0\n{ts(1)},3.0\n{ts(2)},4.0\n")
    s = read_series(path)
    assert len(s.values) == 4 and s.duplicate_timestamps == 1


def test_read_series_rejects_a_bad_header(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("time,v\n")
    with pytest.raises(NabFormatError, match="header"):
        read_series(path)
