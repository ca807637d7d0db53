"""The recorded series a telemetry scenario points at, read through the ingest boundary with
their labelled anomaly windows, for the observe-only replay (`evals.scenario_runs`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from evals.scenario_file import ScenarioFile, ScenarioFileError, TelemetryTraffic
from evals.workload_files import find_shared


@dataclass(frozen=True)
class LabelledSeries:
    backend: str
    path: Path
    points: list  # list[TelemetryPoint]
    windows: list[tuple[float, float]] | None
    """Labelled anomaly windows (unix seconds, inclusive); None when the scenario has no labels."""
    rejected: int


def load_telemetry(entry: ScenarioFile) -> list[LabelledSeries]:
    """The series of a telemetry scenario, read through the ingest boundary, with their labels."""
    from context_api.ingest import IngestError, ingest_file, parse_timestamp

    t = entry.traffic
    assert isinstance(t, TelemetryTraffic)
    labels: dict[str, list] | None = None
    if t.labels is not None:
        lp = find_shared(entry.resolve(t.labels))
        try:
            raw = json.loads(lp.read_text(encoding="utf-8"))
        except OSError as err:
            raise ScenarioFileError(lp, [f"cannot read the labels: {err.strerror}"]) from None
        except json.JSONDecodeError as err:
            raise ScenarioFileError(lp, [f"labels are not JSON: {err}"]) from None
        if not isinstance(raw, dict):
            raise ScenarioFileError(lp, ["labels must map file paths to lists of windows"])
        labels = {str(k).replace("\\", "/"): v for k, v in raw.items()}
    out = []
    for s in t.series:
        path = find_shared(entry.resolve(s.path))
        backend = s.backend or path.stem
        try:
            result = ingest_file(path, backend=backend)
        except IngestError as err:
            raise ScenarioFileError(path, [str(err)]) from None
        except OSError as err:
            raise ScenarioFileError(path, [f"cannot read: {err.strerror or err}"]) from None
        if not result.points:
            raise ScenarioFileError(path, ["no usable telemetry rows"])
        windows = None
        if labels is not None:
            posix = path.resolve().as_posix()
            keys = [k for k in labels if posix.endswith("/" + k.lstrip("/"))]
            if not keys:
                raise ScenarioFileError(
                    path, [f"the labels file has no entry for this series ({t.labels})"]
                )
            windows = []
            for pair in labels[max(keys, key=len)]:
                try:
                    start, end = (parse_timestamp(x) for x in pair)
                except (TypeError, ValueError) as err:
                    raise ScenarioFileError(path, [f"bad label window {pair!r}: {err}"]) from None
                windows.append((start, end))
        out.append(LabelledSeries(backend, path, result.points, windows, result.report.rejected))
    return out
