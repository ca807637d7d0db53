"""A weighted, interleaved slot table: how a split of traffic becomes per-request choices.

The policy decides *shares* once per tick; requests then walk a precomputed table of backend
indices, so routing one request is an index and an increment, and routing a batch is a slice
of the same table (identical choices, by construction). Slots are interleaved by stride so a
backend's requests are spread evenly through the table rather than bunched (as in smooth
weighted round robin or Maglev-style tables).
"""

from __future__ import annotations

import numpy as np

DEFAULT_SLOTS = 1000


def apportion(shares: np.ndarray, slots: int) -> np.ndarray:
    """Integer slot counts proportional to `shares` (largest remainder), summing to `slots`."""
    shares = np.asarray(shares, dtype=np.float64)
    if shares.ndim != 1 or shares.size == 0:
        raise ValueError("shares must be a non-empty 1-D array")
    if not np.all(np.isfinite(shares)) or np.any(shares < 0):
        raise ValueError(f"shares must be finite and non-negative, got {shares.tolist()}")
    total = shares.sum()
    if total <= 0:
        raise ValueError("shares must not all be zero")
    exact = shares / total * slots
    counts = np.floor(exact).astype(np.int64)
    short = slots - int(counts.sum())
    if short:
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[:short]] += 1
    return counts


def build_schedule(shares: np.ndarray, slots: int = DEFAULT_SLOTS) -> np.ndarray:
    """A table of `slots` backend indices in which index i appears in proportion to shares[i].

    Backend i's j-th slot gets the key (j + 0.5) / count_i; sorting all keys interleaves the
    backends evenly. Ties break by backend index, so the table is deterministic.
    """
    counts = apportion(shares, slots)
    owners = np.repeat(np.arange(counts.size), counts)
    within = np.concatenate([np.arange(c) for c in counts])
    keys = (within + 0.5) / np.repeat(np.maximum(counts, 1), counts)
    order = np.lexsort((owners, keys))
    return owners[order].astype(np.int64)
