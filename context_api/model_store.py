"""Forecaster artifacts and their registration: arrays plus JSON on disk (no pickle), a row in
`model_versions` naming the file. Shared by the closed loop, the monitors' tools and the CLI."""

from __future__ import annotations

from pathlib import Path

from context_api.store import Store
from tools.forecaster import Forecaster

KIND = "forecaster"


def artifact_dir_for(db: str | Path) -> Path:
    """Where a database's model artifacts live by default: `<db stem>.models/` beside it."""
    p = Path(db)
    return p.with_name(p.stem + ".models")


def save_forecaster(forecaster: Forecaster, directory: str | Path) -> str:
    """Write the forecaster as arrays plus JSON (`tools.model_artifact`, no pickle) under
    `directory`, named by its version; returns the `.npz` path (the store's artifact_path)."""
    from tools import model_artifact

    npz_path, _ = model_artifact.save(forecaster, Path(directory) / forecaster.version_id)
    return str(npz_path)


def load_forecaster(path: str | Path) -> Forecaster:
    """Load and verify an artifact written by `save_forecaster`; loading cannot run code."""
    from tools import model_artifact

    return model_artifact.load(Path(path))


def register_forecaster(
    store: Store,
    forecaster: Forecaster,
    *,
    artifact_dir: str | Path | None,
    at: float,
    parent_id: str | None = None,
    note: str | None = None,
) -> str:
    """Save (when a directory is given) and register a forecaster; a version already known is
    left as it is (training is deterministic, so the same id means the same model)."""
    if store.get_model_version(forecaster.version_id) is not None:
        return forecaster.version_id
    path = save_forecaster(forecaster, artifact_dir) if artifact_dir is not None else None
    report = forecaster.report
    store.register_model_version(
        forecaster.version_id,
        KIND,
        parent_id=parent_id,
        created_at=at,
        trained_from_ts=forecaster.trained_from_ts,
        trained_to_ts=forecaster.trained_to_ts,
        metrics=report.model_dump(mode="json") if report is not None else {},
        artifact_path=path,
        note=note,
    )
    return forecaster.version_id


class ModelCache:
    """Forecasters loaded from the store's artifacts, by version id (loaded once)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._models: dict[str, Forecaster] = {}

    def put(self, model: Forecaster) -> None:
        self._models[model.version_id] = model

    def get(self, version_id: str) -> Forecaster:
        """The forecaster of a stored version; ValueError says why it cannot be loaded."""
        model = self._models.get(version_id)
        if model is not None:
            return model
        row = self.store.get_model_version(version_id)
        if row is None:
            raise ValueError(f"unknown model version {version_id!r}")
        if not row.artifact_path:
            raise ValueError(f"model version {version_id} has no artifact to load")
        model = load_forecaster(row.artifact_path)
        if model.version_id != version_id:
            raise ValueError(f"artifact {row.artifact_path} holds {model.version_id}")
        self._models[version_id] = model
        return model
