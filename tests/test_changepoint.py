"""Online change points: found where they are, never from later rows, on any scale."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from arcpoint.cli import main
from tools.drift.changepoint import ChangePointConfig, ChangePointDetector, merge_locations


def _shift_series(seed: int, scale: float = 1.0, offset: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0.0, 1.0, 30), rng.normal(4.0, 1.0, 20)])  # 50 rows
    return x * scale + offset


@pytest.mark.parametrize(("scale", "offset"), [(1.0, 0.0), (1e-3, 5.0), (2e4, 1e6)])
def test_a_mean_shift_in_fifty_rows_is_found_on_any_scale(scale: float, offset: float) -> None:
    found = ChangePointDetector().detect(_shift_series(1, scale, offset))
    assert len(found) == 1
    change = found[0]
    assert abs(change.location - 30) <= 2
    assert change.location <= change.detected_at < 50
    assert change.shift_sigmas == pytest.approx(4.0, abs=1.5)
    assert change.shift == pytest.approx(4.0 * scale, rel=0.4)


def test_decisions_use_no_later_rows() -> None:
    """Feeding the series up to a change's detection row reports the same change."""
    x = _shift_series(2)
    change = ChangePointDetector().detect(x)[0]
    prefix = ChangePointDetector().detect(x[: change.detected_at + 1])
    assert prefix == [change]
    later = x.copy()
    later[change.detected_at + 1 :] += 100.0  # the future cannot move past decisions
    assert ChangePointDetector().detect(later)[0] == change


@pytest.mark.parametrize("seed", range(5))
def test_stationary_noise_raises_nothing(seed: int) -> None:
    rng = np.random.default_rng(seed)
    assert ChangePointDetector().detect(rng.normal(1e3, 0.5, 600)) == []


def test_a_variance_change_is_found() -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 1, 150), rng.normal(0, 6, 150)])
    found = ChangePointDetector().detect(x)
    assert found and abs(found[0].location - 150) <= 10


def test_bad_values_and_settings_are_rejected() -> None:
    det = ChangePointDetector()
    with pytest.raises(ValueError, match="finite"):
        det.update(math.nan)
    with pytest.raises(ValueError):
        ChangePointConfig(threshold=1.0)
    with pytest.raises(ValueError):
        ChangePointConfig(warmup=1)


def test_merge_keeps_one_change_per_five_rows() -> None:
    assert merge_locations([[10, 40], [12, 80], [46]]) == [10, 40, 46, 80]
    assert merge_locations([[10], [15], [21]]) == [10, 21]
    assert merge_locations([]) == []


def _write(path: Path, rows: list[list[object]]) -> None:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_command_reports_changes_of_every_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(4)
    a = np.concatenate([rng.normal(10, 1, 80), rng.normal(20, 1, 70)])
    b = np.concatenate([rng.normal(0, 1, 120), rng.normal(-8, 1, 30)])
    rows: list[list[object]] = [["value_a", "timestamp", "value_b"]]
    rows += [
        [f"{a[i]:.4f}", f"2024-01-01T00:{i // 60:02d}:{i % 60:02d}", f"{b[i]:.4f}"]
        for i in range(150)
    ]
    rows[50][2] = "n/a"  # a gap in value_b: recorded, indices still refer to the file
    path = tmp_path / "m.csv"
    _write(path, rows)
    out = tmp_path / "cp.json"
    assert main(["changepoints", str(path), "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert "time column 'timestamp'" in captured.out
    assert "column 'value_b': 1 row(s) without a number left out (rows 49)" in captured.err
    result = json.loads(out.read_text())
    assert set(result) >= {"changepoints", "detector", "params"}
    assert result["params"]["threshold"] == ChangePointConfig().threshold
    assert len(result["changepoints"]) == 2
    assert abs(result["changepoints"][0] - 80) <= 3 and abs(result["changepoints"][1] - 120) <= 3
    by_column = {c["column"]: c for c in result["changes"]}
    assert by_column["value_a"]["mean_after"] > by_column["value_a"]["mean_before"]
    assert by_column["value_b"]["shift_sigmas"] < -4
    assert result["rejected_rows"] == {"value_b": [49]}

    assert main(["changepoints", str(path), "--column", "value_a"]) == 0
    assert "value column(s): value_a)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty file"),
        ("time\n1\n2\n", "no value column"),
        ("time,v\n1,2\n2,3\n", "at least 6 are needed"),
    ],
)
def test_command_rejects_unusable_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "x.csv"
    path.write_text(content)
    assert main(["changepoints", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_command_names_an_unknown_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "x.csv"
    path.write_text("time,v\n1,2\n")
    assert main(["changepoints", str(path), "--column", "w"]) == 2
    assert "no column 'w'; value columns: v" in capsys.readouterr().err
