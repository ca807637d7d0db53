"""The rows every error analysis reads: float columns checked for shape and finiteness, string
labels encoded once as integer codes (what keeps grouping a million rows fast), and the record
of a group left out for having too few rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class SkippedGroup(Frozen):
    """A group that was not scored or tested because it had too few rows."""

    what: str = Field(description="which analysis skipped it")
    key: dict[str, str | float | int | None]
    n: int
    min_required: int
    reason: str


def float_array(name: str, values: Sequence[float] | np.ndarray, n: int | None) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if n is not None and arr.size != n:
        raise ValueError(f"{name} has {arr.size} rows, expected {n}")
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = np.flatnonzero(bad)
        raise ValueError(
            f"{name} has {idx.size} NaN or infinite value(s), first at row {int(idx[0])}"
        )
    return arr


@dataclass(frozen=True, slots=True)
class Labels:
    """A label column encoded once: ``names[codes[i]]`` is row i's label (names sorted).

    Grouping works on the integer codes, which is what keeps a million rows fast.
    """

    codes: np.ndarray
    names: list


LabelInput = str | Sequence[str] | np.ndarray | Labels


def encode_labels(name: str, values: LabelInput, n: int) -> Labels:
    """Encode a string label per row (or one string for every row); reject empty or non-strings."""
    if isinstance(values, Labels):
        if values.codes.shape != (n,):
            raise ValueError(f"{name} has {values.codes.size} rows, expected {n}")
        return values
    if isinstance(values, str):
        if not values:
            raise ValueError(f"{name} is an empty label")
        return Labels(np.zeros(n, dtype=np.int64), [values])
    if not isinstance(values, np.ndarray):
        values = list(values)
        bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
        if bad is not None:
            raise ValueError(f"{name}[{bad}] must be a string, got {values[bad]!r}")
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.size != n:
        raise ValueError(f"{name} must be a string or {n} labels, got shape {arr.shape}")
    if arr.dtype.kind == "O":
        bad = next((i for i, v in enumerate(arr) if not isinstance(v, str)), None)
        if bad is not None:
            raise ValueError(f"{name}[{bad}] must be a string, got {arr[bad]!r}")
        arr = arr.astype(str) if arr.size else arr.astype("U1")
    elif arr.dtype.kind != "U":
        raise ValueError(f"{name} must hold strings, got dtype {arr.dtype}")
    names, codes = np.unique(arr, return_inverse=True)
    if names.size and names[0] == "":  # sorted: an empty label would come first
        raise ValueError(f"{name}[{int(np.flatnonzero(codes == 0)[0])}] is an empty label")
    return Labels(codes.astype(np.int64).ravel(), [str(x) for x in names])
