"""The Turing change-point benchmark's evaluation metrics (van den Burg and Williams, 2020).

TCPD scores a detector against several human annotators at once:

* **F1 with a margin.** A predicted location within `margin` rows of an annotated one is a true
  positive; each prediction matches at most one annotation (the closest), so two predictions
  near one change count once. The first row (0) is added to every annotator's set and to the
  prediction: a series is a segmentation that starts at row 0, and a detector that reports
  nothing still "finds" that start. Precision is over the union of all annotators' locations;
  recall is averaged over annotators; F1 is their harmonic mean. On a quiet series where
  annotators marked nothing, reporting nothing scores 1, which is why a detector that never
  reports a change is a strong baseline.
* **Covering.** Each annotator's segmentation is covered by the predicted one: every annotated
  segment is matched with the predicted segment that overlaps it most (Jaccard index), weighted
  by its length; the result is averaged over annotators (Arbelaez et al., 2010).

Locations are 0-based row indices. Pure functions; the doctests of TCPD's reference
implementation are reproduced in the tests.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping


def true_positives(annotated: Iterable[int], predicted: Iterable[int], margin: int = 5) -> set[int]:
    """Annotated locations matched by a prediction within `margin`, each prediction used once."""
    left = set(predicted)
    hits: set[int] = set()
    for tau in annotated:
        close = sorted((abs(tau - x), x) for x in left if abs(tau - x) <= margin)
        if close:
            hits.add(tau)
            left.remove(close[0][1])
    return hits


def f_measure(
    annotations: Mapping[str, Iterable[int]],
    predictions: Iterable[int],
    margin: int = 5,
    *,
    return_pr: bool = False,
) -> float | tuple[float, float, float]:
    """TCPD's F1 of `predictions` against every annotator's locations (row 0 added to all)."""
    if not annotations:
        raise ValueError("need at least one annotator")
    per_annotator = [{*locs, 0} for locs in annotations.values()]
    predicted = {*predictions, 0}
    union = set().union(*per_annotator)
    precision = len(true_positives(union, predicted, margin)) / len(predicted)
    recall = sum(len(true_positives(t, predicted, margin)) / len(t) for t in per_annotator) / len(
        per_annotator
    )
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return (f1, precision, recall) if return_pr else f1


def segments(locations: Iterable[int], n_obs: int) -> list[range]:
    """The partition of rows 0..n_obs-1 that change points at `locations` define."""
    cuts = sorted({c for c in locations if 0 < c < n_obs})
    bounds = [0, *cuts, n_obs]
    return [range(a, b) for a, b in itertools.pairwise(bounds)]


def _jaccard(a: range, b: range) -> float:
    inter = max(0, min(a.stop, b.stop) - max(a.start, b.start))
    union = len(a) + len(b) - inter
    return inter / union if union else 0.0


def cover_single(predicted: list[range], annotated: list[range]) -> float:
    """How well the predicted segmentation covers one annotated segmentation, in [0, 1]."""
    total = sum(len(r) for r in annotated)
    if total != sum(len(r) for r in predicted):
        raise ValueError("segmentations of different lengths")
    return sum(len(r) * max(_jaccard(r, p) for p in predicted) for r in annotated) / total


def covering(
    annotations: Mapping[str, Iterable[int]], predictions: Iterable[int], n_obs: int
) -> float:
    """TCPD's covering metric: mean over annotators of the cover of their segmentation."""
    if not annotations:
        raise ValueError("need at least one annotator")
    if n_obs < 1:
        raise ValueError("n_obs must be >= 1")
    predicted = segments(predictions, n_obs)
    covers = [cover_single(predicted, segments(locs, n_obs)) for locs in annotations.values()]
    return sum(covers) / len(covers)
