"""Leave-one-category-out cross-validation of NAB scores: choose settings without seeing the data.

NAB tunes one detection threshold per profile over the whole corpus, and a detector's settings are
usually chosen by looking at the same corpus: both flatter the score. Here every choice is made on
training categories and scored on a held-out one. For each category C of the corpus (the first
folder of a file's path, e.g. ``realAWSCloudwatch``):

1. every candidate detector (a named setting, e.g. one view or two) is scored on the files of the
   *other* categories by the same leave-one-category-out protocol run among them (each of them
   scored at a threshold tuned on the rest), and the candidate with the best ``select_profile``
   score wins (ties go to the earlier candidate, listed simplest first). Choosing on held-out
   scores rather than on scores at a threshold tuned on the same files favours settings whose
   threshold carries over to series they were not tuned on, which is what unseen series need;
   with a single training category the in-sample score is used;
2. for each profile, the winner's threshold is tuned on the other categories again;
3. the winner's output on C is scored at that threshold.

The held-out raw scores of all folds are pooled and normalised once, exactly as NAB normalises
a corpus: ``100 * (sum raw - sum null) / (sum perfect - sum null)``. So every file is scored by a
detector and threshold chosen without its category, and a category without labelled windows
(where only false alarms count) still weighs in. The in-sample figure, the same procedure with
every category in training, is reported beside it: the gap between the two is the optimism of
choosing on the data one reports on.

Assumption: categories differ the way unseen series will differ from the corpus. With four NAB
categories the estimate rests on four folds, so it is noisy (report it with that caveat).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tools.anomaly.nab_scoring import (
    PROFILES,
    FileLabels,
    Profile,
    optimise_threshold,
    score_corpus,
    score_file,
)


def category_of(name: str) -> str:
    """The category of a corpus file: the first folder of its relative path ("." if none)."""
    parts = name.replace("\\", "/").split("/")
    return parts[0] if len(parts) > 1 else "."


@dataclass(frozen=True, slots=True)
class ProfileTotals:
    """Raw, null and perfect totals of some files under one profile, and their normalised score."""

    raw: float
    null: float
    perfect: float

    @property
    def score(self) -> float | None:
        if self.perfect == self.null:
            return None
        return 100.0 * (self.raw - self.null) / (self.perfect - self.null)


@dataclass(frozen=True, slots=True)
class Fold:
    """One held-out category: what was chosen without it and how that scored on it."""

    held_out: str
    files: tuple[str, ...]
    chosen: str
    training_scores: dict[str, float | None]  # select_profile score per candidate (nested CV)
    thresholds: dict[str, float]  # per profile, tuned on training
    held_out_totals: dict[str, ProfileTotals]  # per profile


@dataclass(frozen=True, slots=True)
class CrossValidation:
    """Pooled held-out scores per profile, the folds, and the in-sample comparison."""

    scores: dict[str, float | None]
    totals: dict[str, ProfileTotals]
    folds: tuple[Fold, ...]
    in_sample_choice: str  # the candidate the protocol picks seeing every category
    in_sample_scores: dict[str, float | None]  # its scores at thresholds tuned on all files
    choice_scores: dict[str, float | None]  # select_profile CV score of every candidate
    candidates: tuple[str, ...]
    select_profile: str


def _null_raw(files: Sequence[FileLabels], profile: Profile) -> float:
    return optimise_threshold([(np.zeros(lab.n_rows), lab) for lab in files], profile)[1]


def _held_out_totals(
    output: Mapping[str, np.ndarray],
    labels: Mapping[str, FileLabels],
    names: Sequence[str],
    profile: Profile,
) -> ProfileTotals:
    """Pooled leave-one-category-out totals of one fixed output over `names`."""
    raw = null = perfect = 0.0
    cats = sorted({category_of(f) for f in names})
    for cat in cats:
        train = [(output[f], labels[f]) for f in names if category_of(f) != cat]
        test = [f for f in names if category_of(f) == cat]
        th, _ = optimise_threshold(train, profile)
        raw += sum(score_file(output[f], labels[f], profile, th).score for f in test)
        null += _null_raw([labels[f] for f in test], profile)
        perfect += profile.tp_weight * sum(len(labels[f].windows) for f in test)
    return ProfileTotals(raw, null, perfect)


def _choose(
    outputs: Mapping[str, Mapping[str, np.ndarray]],
    labels: Mapping[str, FileLabels],
    names: Sequence[str],
    candidates: Sequence[str],
    profile: Profile,
) -> tuple[str, dict[str, float | None]]:
    nested = len({category_of(f) for f in names}) >= 2
    scores: dict[str, float | None] = {}
    for cand in candidates:
        if nested:
            scores[cand] = _held_out_totals(outputs[cand], labels, names, profile).score
        else:
            corpus = {f: (outputs[cand][f], labels[f]) for f in names}
            scores[cand] = score_corpus(corpus, profile).score
    ranked = [c for c in candidates if scores[c] is not None]
    if not ranked:  # no labelled window in training: keep the first (simplest) candidate
        return candidates[0], scores
    best = max(ranked, key=lambda c: (scores[c], -candidates.index(c)))
    return best, scores


def cross_validate(
    outputs: Mapping[str, Mapping[str, np.ndarray]],
    labels: Mapping[str, FileLabels],
    *,
    profiles: Sequence[str] = tuple(PROFILES),
    select_profile: str = "standard",
) -> CrossValidation:
    """Leave-one-category-out CV over `outputs[candidate][file]` anomaly scores.

    Candidates are taken in the order of `outputs` (ties go to the earlier one); every candidate
    must have an output for every labelled file. Needs at least two categories.
    """
    candidates = tuple(outputs)
    if not candidates:
        raise ValueError("no candidate detectors to cross-validate")
    names = sorted(labels)
    for cand in candidates:
        missing = [f for f in names if f not in outputs[cand]]
        if missing:
            raise ValueError(f"candidate {cand!r} has no output for {missing[0]}")
    categories = sorted({category_of(f) for f in names})
    if len(categories) < 2:
        raise ValueError(
            "leave-one-category-out needs files in at least two categories "
            f"(first-level folders); found {categories or 'none'}"
        )
    for name in (*profiles, select_profile):
        if name not in PROFILES:
            raise ValueError(f"unknown profile {name!r}")
    selector = PROFILES[select_profile]

    folds = []
    sums = {p: [0.0, 0.0, 0.0] for p in profiles}
    for cat in categories:
        train = [f for f in names if category_of(f) != cat]
        test = [f for f in names if category_of(f) == cat]
        chosen, training_scores = _choose(outputs, labels, train, candidates, selector)
        thresholds: dict[str, float] = {}
        held: dict[str, ProfileTotals] = {}
        for pname in profiles:
            prof = PROFILES[pname]
            th, _ = optimise_threshold([(outputs[chosen][f], labels[f]) for f in train], prof)
            raw = sum(score_file(outputs[chosen][f], labels[f], prof, th).score for f in test)
            null = _null_raw([labels[f] for f in test], prof)
            perfect = prof.tp_weight * sum(len(labels[f].windows) for f in test)
            thresholds[pname] = th
            held[pname] = ProfileTotals(raw, null, perfect)
            acc = sums[pname]
            acc[0] += raw
            acc[1] += null
            acc[2] += perfect
        folds.append(Fold(cat, tuple(test), chosen, training_scores, thresholds, held))

    totals = {p: ProfileTotals(*sums[p]) for p in profiles}
    full_choice, choice_scores = _choose(outputs, labels, names, candidates, selector)
    in_sample = {
        p: score_corpus({f: (outputs[full_choice][f], labels[f]) for f in names}, PROFILES[p]).score
        for p in profiles
    }
    return CrossValidation(
        scores={p: totals[p].score for p in profiles},
        totals=totals,
        folds=tuple(folds),
        in_sample_choice=full_choice,
        in_sample_scores=in_sample,
        choice_scores=choice_scores,
        candidates=candidates,
        select_profile=select_profile,
    )
