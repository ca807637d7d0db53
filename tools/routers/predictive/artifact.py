"""Latency model files: `.npz` arrays (read with `allow_pickle=False`) plus JSON metadata.

The only module of the predictive router that touches files. `load_default` reads the model
shipped with the package (`tools/routers/predictive/data/`), trained by
`arcpoint router-model train` (see the README for the command and the data it used).
"""

from __future__ import annotations

import json
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from tools.routers.predictive.model import LatencyModel, ModelError

DEFAULT_PATH = Path(__file__).parent / "data" / "latency-model"


def _paths(base: str | Path) -> tuple[Path, Path]:
    p = Path(base)
    if p.suffix in (".npz", ".json"):
        p = p.with_suffix("")
    return p.with_suffix(".npz"), p.with_suffix(".json")


def save(model: LatencyModel, base: str | Path) -> tuple[Path, Path]:
    """Write `<base>.npz` and `<base>.json`; returns both paths."""
    npz, js = _paths(base)
    npz.parent.mkdir(parents=True, exist_ok=True)
    arrays, meta = model.to_arrays()
    with npz.open("wb") as fh:
        np.savez_compressed(fh, **arrays)
    js.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return npz, js


def load(base: str | Path) -> LatencyModel:
    """Read and verify a model; ModelError says what is wrong with a bad pair of files."""
    npz, js = _paths(base)
    if not npz.exists() or not js.exists():
        raise ModelError(f"latency model not found: need {npz} and {js}")
    try:
        meta = json.loads(js.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{js}: unreadable metadata ({exc})") from None
    try:
        with np.load(npz, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelError(f"{npz}: unreadable arrays ({exc})") from None
    return LatencyModel.from_arrays(arrays, meta)


@lru_cache(maxsize=1)
def load_default() -> LatencyModel:
    """The shipped model (read once per process)."""
    return load(DEFAULT_PATH)
