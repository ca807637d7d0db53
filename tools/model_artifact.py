"""The forecaster's file format: numeric arrays in `.npz` plus JSON metadata. No pickle.

Why this format: loading a pickle runs code chosen by whoever wrote the file. An `.npz` read with
`np.load(..., allow_pickle=False)` can only yield plain numeric arrays, and JSON only data, so a
model file from elsewhere cannot execute anything here. This module is the one place in `tools/`
that touches files (the other functions stay pure): `to_arrays`/`from_arrays` convert, `save`/`load`
only write and read those two files.

Layout for a base path `models/rf-1234` (a `.npz` or `.json` suffix given is ignored):

* `models/rf-1234.npz`: the flattened forest, `feature` (int32), `threshold` (float64), `left`,
  `right`, `roots` (int32) and `value` (float64); see `tools.flat_forest.FlatForest`.
* `models/rf-1234.json`: `ArtifactMetadata`: format name and version, version id and full content
  hash, parent version, created_at, feature names (input layout and the model's columns), target
  encoding, interval multiplier and floor, forecast ceiling, training window, hyperparameters,
  each array's dtype and shape, and the training report (hold-out metrics).

`load` refuses, with an `ArtifactError` naming the problem: an unknown format or format version,
missing or extra arrays, dtypes or shapes that differ from the metadata, arrays that do not form
a valid forest, a feature layout other than this code's `FEATURE_NAMES`, another horizon or tick,
and any content that does not hash to the recorded version (a tampered or mismatched pair).
"""

from __future__ import annotations

import json
import math
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from tools.features import FEATURE_NAMES
from tools.flat_forest import FlatForest
from tools.forecaster import Forecaster, TrainReport, content_hash
from tools.telemetry import HORIZON_TICKS, TICK_SECONDS

FORMAT = "arcpoint.forecaster"
FORMAT_VERSION = 1
ARRAY_DTYPES = {
    "feature": "int32",
    "threshold": "float64",
    "left": "int32",
    "right": "int32",
    "value": "float64",
    "roots": "int32",
}


class ArtifactError(ValueError):
    """A model artifact that cannot be trusted or used; the message says why."""


class ArraySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dtype: str
    shape: list[int]


class ArtifactMetadata(BaseModel):
    """The JSON half of an artifact."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["arcpoint.forecaster"]
    format_version: int
    version_id: str
    content_sha256: str
    parent_version: str | None = None
    created_at: str
    feature_names: list[str]
    model_features: list[str]
    target: Literal["log_ratio", "log", "ms"]
    reference_feature: str | None
    interval_multiplier: float
    spread_floor: float
    nominal_coverage: float
    ceiling_ms: float | None
    horizon_ticks: int
    tick_seconds: float
    trained_from_ts: float
    trained_to_ts: float
    hyperparameters: dict[str, Any]
    n_trees: int
    n_nodes: int
    arrays: dict[str, ArraySpec]
    report: dict[str, Any] | None = None


# ------------------------------------------------------------------------ pure conversion
def to_arrays(
    forecaster: Forecaster, *, created_at: str | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The forecaster as (arrays, JSON-able metadata)."""
    arrays = forecaster.forest.arrays()
    meta = ArtifactMetadata(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        version_id=forecaster.version_id,
        content_sha256=forecaster.content_sha256,
        parent_version=forecaster.parent_version,
        created_at=created_at or forecaster.created_at or _now(),
        **forecaster.spec(),
        n_trees=forecaster.forest.n_trees,
        n_nodes=forecaster.forest.n_nodes,
        arrays={k: ArraySpec(dtype=str(v.dtype), shape=list(v.shape)) for k, v in arrays.items()},
        report=forecaster.report.model_dump(mode="json") if forecaster.report else None,
    )
    return arrays, meta.model_dump(mode="json")


def from_arrays(
    arrays: dict[str, np.ndarray],
    metadata: dict[str, Any],
    *,
    expected_feature_names: tuple[str, ...] = FEATURE_NAMES,
) -> Forecaster:
    """Rebuild and verify a forecaster; raises ArtifactError on any inconsistency."""
    if not isinstance(metadata, dict):
        raise ArtifactError("metadata must be a JSON object")
    if metadata.get("format") != FORMAT:
        raise ArtifactError(f"not a forecaster artifact (format {metadata.get('format')!r})")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"unknown format version {metadata.get('format_version')!r}; this code reads "
            f"version {FORMAT_VERSION}"
        )
    try:
        meta = ArtifactMetadata.model_validate(metadata)
    except ValidationError as exc:
        raise ArtifactError(f"malformed metadata: {exc}") from None
    if set(arrays) != set(ARRAY_DTYPES):
        raise ArtifactError(
            f"arrays {sorted(arrays)} differ from the expected {sorted(ARRAY_DTYPES)}"
        )
    if set(meta.arrays) != set(ARRAY_DTYPES):
        raise ArtifactError("metadata does not describe exactly the expected arrays")
    for name, dtype in ARRAY_DTYPES.items():
        a = arrays[name]
        spec = meta.arrays[name]
        if str(a.dtype) != dtype or spec.dtype != dtype:
            raise ArtifactError(f"array {name!r} has dtype {a.dtype}, expected {dtype}")
        if list(a.shape) != spec.shape:
            raise ArtifactError(
                f"array {name!r} has shape {list(a.shape)}, metadata says {spec.shape}"
            )
    if arrays["roots"].shape[0] != meta.n_trees or arrays["value"].shape[0] != meta.n_nodes:
        raise ArtifactError("tree or node count differs from the metadata")
    if tuple(meta.feature_names) != tuple(expected_feature_names):
        raise ArtifactError(
            "the artifact was trained on another feature layout than this code computes: "
            f"{meta.feature_names} vs {list(expected_feature_names)}"
        )
    if meta.horizon_ticks != HORIZON_TICKS or meta.tick_seconds != TICK_SECONDS:
        raise ArtifactError(
            f"artifact forecasts {meta.horizon_ticks} ticks of {meta.tick_seconds} s ahead; "
            f"this code uses {HORIZON_TICKS} ticks of {TICK_SECONDS} s"
        )
    digest = content_hash(arrays, _spec(meta))
    if digest != meta.content_sha256:
        raise ArtifactError(
            f"content hash mismatch: the arrays and metadata hash to {digest[:16]}..., the "
            f"artifact records {meta.content_sha256[:16]}... (tampered or mismatched files)"
        )
    try:
        forest = FlatForest(**arrays, n_features=len(meta.model_features))
        report = TrainReport.model_validate(meta.report) if meta.report is not None else None
        forecaster = Forecaster(
            forest=forest,
            feature_names=tuple(meta.feature_names),
            model_features=tuple(meta.model_features),
            target=meta.target,
            interval_multiplier=meta.interval_multiplier,
            spread_floor=meta.spread_floor,
            nominal_coverage=meta.nominal_coverage,
            ceiling_ms=math.inf if meta.ceiling_ms is None else meta.ceiling_ms,
            trained_from_ts=meta.trained_from_ts,
            trained_to_ts=meta.trained_to_ts,
            hyperparameters=meta.hyperparameters,
            report=report,
            parent_version=meta.parent_version,
            created_at=meta.created_at,
        )
    except (ValueError, ValidationError) as exc:
        raise ArtifactError(f"invalid model content: {exc}") from None
    if forecaster.version_id != meta.version_id:
        raise ArtifactError(
            f"version id mismatch: content gives {forecaster.version_id}, metadata says "
            f"{meta.version_id}"
        )
    return forecaster


def _spec(meta: ArtifactMetadata) -> dict[str, Any]:
    """The part of the metadata that `Forecaster.spec()` hashes."""
    return {
        "feature_names": list(meta.feature_names),
        "model_features": list(meta.model_features),
        "target": meta.target,
        "reference_feature": meta.reference_feature,
        "interval_multiplier": meta.interval_multiplier,
        "spread_floor": meta.spread_floor,
        "nominal_coverage": meta.nominal_coverage,
        "ceiling_ms": meta.ceiling_ms,
        "horizon_ticks": meta.horizon_ticks,
        "tick_seconds": meta.tick_seconds,
        "trained_from_ts": meta.trained_from_ts,
        "trained_to_ts": meta.trained_to_ts,
        "hyperparameters": meta.hyperparameters,
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------- files
def artifact_paths(path: str | Path) -> tuple[Path, Path]:
    """(`.npz`, `.json`) paths for a base path, with or without either suffix."""
    p = Path(path)
    if p.suffix in (".npz", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".npz"), p.with_name(p.name + ".json")


def save(
    forecaster: Forecaster, path: str | Path, *, created_at: str | None = None
) -> tuple[Path, Path]:
    """Write the two files; returns their paths. Existing files are replaced."""
    npz_path, json_path = artifact_paths(path)
    arrays, meta = to_arrays(forecaster, created_at=created_at)
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    with npz_path.open("wb") as fh:
        np.savez(fh, **arrays)
    json_path.write_text(json.dumps(meta, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return npz_path, json_path


def load(
    path: str | Path, *, expected_feature_names: tuple[str, ...] = FEATURE_NAMES
) -> Forecaster:
    """Read and verify an artifact written by `save`. Never unpickles anything."""
    npz_path, json_path = artifact_paths(path)
    for p in (npz_path, json_path):
        if not p.is_file():
            raise ArtifactError(f"missing artifact file {p}")
    try:
        metadata = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{json_path} is not valid JSON: {exc}") from None
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ArtifactError(f"{npz_path} is not a readable pickle-free .npz: {exc}") from None
    return from_arrays(arrays, metadata, expected_feature_names=expected_feature_names)
