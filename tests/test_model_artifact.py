"""Model artifacts: arrays + JSON, no pickle, identical predictions, tampering refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tools import model_artifact
from tools.features import FEATURE_NAMES
from tools.forecaster import build_dataset, train
from tools.model_artifact import ArtifactError, from_arrays, load, save, to_arrays

from .test_forecaster import synthetic_history


@pytest.fixture(scope="module")
def model():
    history = synthetic_history(hours=4)
    forecaster, _ = train(history, n_estimators=8, n_jobs=1, parent_version="rf-parent")
    return forecaster, build_dataset(history).X


@pytest.fixture
def saved(model, tmp_path):
    forecaster, _ = model
    npz, meta = save(forecaster, tmp_path / forecaster.version_id, created_at="2024-01-01T00:00:00")
    return npz, meta


def test_round_trip_gives_identical_predictions_and_metadata(model, saved):
    forecaster, X = model
    npz, meta_path = saved
    assert npz.suffix == ".npz" and meta_path.suffix == ".json"
    loaded = load(npz)  # either file's path, or the base, names the artifact
    a, b = forecaster.predict(X), loaded.predict(X)
    for name in ("mean", "lo", "hi"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert loaded.version_id == forecaster.version_id
    assert loaded.trained_from_ts == forecaster.trained_from_ts
    assert loaded.trained_to_ts == forecaster.trained_to_ts
    assert loaded.feature_names == FEATURE_NAMES
    assert loaded.model_features == forecaster.model_features
    assert loaded.report == forecaster.report
    assert loaded.parent_version == "rf-parent"
    assert loaded.created_at == "2024-01-01T00:00:00"
    meta = json.loads(meta_path.read_text())
    assert meta["version_id"] == forecaster.version_id
    assert meta["report"]["forest"]["mae_ms"] == forecaster.report.forest.mae_ms
    assert meta["hyperparameters"]["n_estimators"] == 8
    assert meta["interval_multiplier"] == forecaster.interval_multiplier


def test_no_pickle_anywhere(saved):
    npz, _ = saved
    with np.load(npz, allow_pickle=False) as data:
        assert set(data.files) == set(model_artifact.ARRAY_DTYPES)
        assert all(data[k].dtype != object for k in data.files)


def test_object_arrays_are_refused(model, tmp_path):
    forecaster, _ = model
    npz, _ = save(forecaster, tmp_path / "m")
    arrays = dict(np.load(npz, allow_pickle=False))
    arrays["value"] = np.array([{"evil": 1}], dtype=object)
    np.savez(npz, **arrays, allow_pickle=True)
    with pytest.raises(ArtifactError, match="pickle-free"):
        load(tmp_path / "m")


def _rewrite(npz, meta_path, arrays_fn=None, meta_fn=None):
    if arrays_fn:
        arrays = dict(np.load(npz, allow_pickle=False))
        arrays_fn(arrays)
        np.savez(npz, **arrays)
    if meta_fn:
        meta = json.loads(meta_path.read_text())
        meta_fn(meta)
        meta_path.write_text(json.dumps(meta))


def _bump_threshold(a):
    i = int(np.flatnonzero(a["left"] != -1)[0])
    a["threshold"][i] += 1.0


def _truncate(a):
    a["value"] = a["value"][:-1]


def _set(key, value):
    return lambda m: m.__setitem__(key, value)


@pytest.mark.parametrize(
    ("arrays_fn", "meta_fn", "message"),
    [
        (_bump_threshold, None, "hash mismatch"),
        (None, _set("interval_multiplier", 0.1), "hash mismatch"),
        (None, _set("trained_to_ts", 0.0), "hash mismatch"),
        (None, _set("format_version", 2), "unknown format version"),
        (None, _set("format", "pickle"), "not a forecaster artifact"),
        (_truncate, None, "shape"),
        (lambda a: a.__setitem__("extra", np.zeros(3)), None, "differ from the expected"),
        (lambda a: a.__setitem__("left", a["left"].astype(np.int64)), None, "dtype"),
        (None, _set("feature_names", ["a", "b"]), "feature layout"),
        (None, _set("horizon_ticks", 60), "ticks"),
        (None, _set("version_id", "rf-0000"), "version id mismatch"),
        (None, _set("n_trees", 1), "count"),
        (None, lambda m: m.pop("target"), "malformed metadata"),
        (None, _set("surprise", 1), "malformed metadata"),
    ],
)
def test_tampered_or_mismatched_artifacts_are_refused(saved, arrays_fn, meta_fn, message):
    npz, meta_path = saved
    _rewrite(npz, meta_path, arrays_fn, meta_fn)
    with pytest.raises(ArtifactError, match=message):
        load(npz)


def test_arrays_that_are_not_a_forest_are_refused_even_with_a_matching_hash(model):
    forecaster, _ = model
    arrays, meta = to_arrays(forecaster)
    arrays = {k: v.copy() for k, v in arrays.items()}
    i = int(np.flatnonzero(arrays["left"] != -1)[0])
    arrays["left"][i] = 0  # a cycle back to the root
    from tools.forecaster import content_hash

    spec = {k: meta[k] for k in forecaster.spec()}
    meta["content_sha256"] = content_hash(arrays, spec)
    with pytest.raises(ArtifactError, match="invalid model content"):
        from_arrays(arrays, meta)


def test_missing_or_unreadable_files(saved, tmp_path):
    npz, meta_path = saved
    with pytest.raises(ArtifactError, match="missing"):
        load(tmp_path / "nothing-here")
    meta_path.write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load(npz)
    npz.write_bytes(b"not a zip")
    meta_path.unlink()
    with pytest.raises(ArtifactError, match="missing"):
        load(npz)


def test_pure_conversion_round_trip(model):
    forecaster, X = model
    arrays, meta = to_arrays(forecaster, created_at="2024-01-01T00:00:00")
    json.dumps(meta, allow_nan=False)  # JSON-able as is
    again = from_arrays(arrays, meta)
    assert np.array_equal(again.predict(X[:20]).mean, forecaster.predict(X[:20]).mean)
