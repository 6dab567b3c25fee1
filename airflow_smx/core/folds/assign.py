"""Fold assignment through scikit-learn's splitters (see docs/folds.md for the exact recipe).

For n records in file order, the hold-out (if any) is carved off first with
``train_test_split`` (or ``GroupShuffleSplit`` for group strategies); the remaining records,
still in file order, go through the strategy's splitter, whose j-th test indices are the
validation records of global fold j (repeat ``j // n_splits``, fold ``j % n_splits``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from airflow_smx.core.folds.records import SplitError
from airflow_smx.core.request import CVSpec

HOLDOUT = -1  # fold code of a hold-out record


@dataclass
class Assignment:
    """``folds[r, i]``: the fold (0..k-1) record i validates in, in repeat r; HOLDOUT if held out."""

    folds: np.ndarray
    holdout: np.ndarray  # sorted record indices of the hold-out set

    @property
    def n_repeats(self) -> int:
        return self.folds.shape[0]


def make_splitter(cv: CVSpec) -> Any:
    """The scikit-learn splitter that defines ``cv``'s folds."""
    # scikit-learn is imported here, not at the top: the DAG file imports this package, and
    # sklearn with scipy would add about a second to every parse and every task's start
    from sklearn.model_selection import (
        GroupKFold,
        KFold,
        RepeatedKFold,
        RepeatedStratifiedKFold,
        StratifiedGroupKFold,
        StratifiedKFold,
    )

    k, seed = cv.n_splits, cv.random_state
    state = seed if cv.shuffle else None
    if cv.strategy == "kfold":
        if cv.n_repeats > 1:
            return RepeatedKFold(n_splits=k, n_repeats=cv.n_repeats, random_state=seed)
        return KFold(n_splits=k, shuffle=cv.shuffle, random_state=state)
    if cv.strategy == "stratified":
        if cv.n_repeats > 1:
            return RepeatedStratifiedKFold(n_splits=k, n_repeats=cv.n_repeats, random_state=seed)
        return StratifiedKFold(n_splits=k, shuffle=cv.shuffle, random_state=state)
    if cv.strategy == "group":
        return GroupKFold(n_splits=k, shuffle=cv.shuffle, random_state=state)
    return StratifiedGroupKFold(n_splits=k, shuffle=cv.shuffle, random_state=state)


def split_holdout(
    cv: CVSpec, n: int, labels: np.ndarray | None, groups: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Record indices (sorted) kept for cross-validation, and those held out."""
    from sklearn.model_selection import GroupShuffleSplit, train_test_split  # why here: see make_splitter

    everything = np.arange(n)
    if cv.holdout == 0:
        return everything, everything[:0]
    try:
        if cv.strategy in ("group", "stratified_group"):
            splitter = GroupShuffleSplit(n_splits=1, test_size=cv.holdout, random_state=cv.random_state)
            kept, held = next(splitter.split(everything, groups=groups))
        else:
            stratify = labels if labels is not None and cv.shuffle else None
            kept, held = train_test_split(
                everything, test_size=cv.holdout, random_state=cv.random_state, shuffle=cv.shuffle, stratify=stratify
            )
    except ValueError as error:
        raise SplitError(f"cv.holdout: cannot hold out {cv.holdout} of {n} records: {error}") from None
    return np.sort(kept), np.sort(held)


def assign_folds(
    cv: CVSpec,
    n: int,
    labels: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    label_values: list[Any] | None = None,
) -> Assignment:
    """Assign each of ``n`` records to a fold per repeat.

    :param labels: per-record label codes (required by stratified strategies)
    :param groups: per-record group codes (required by group strategies)
    :param label_values: the value of each label code, to name a class in an error
    """
    kept, held = split_holdout(cv, n, labels, groups)
    # Each splitter gets only what it uses (sklearn warns about ignored groups).
    kept_labels = labels[kept] if labels is not None and "stratified" in cv.strategy else None
    kept_groups = groups[kept] if groups is not None and "group" in cv.strategy else None
    _check_feasible(cv, n, len(kept), kept_labels, kept_groups, label_values)
    folds = np.full((cv.n_repeats, n), HOLDOUT, dtype=np.int16)
    splitter = make_splitter(cv)
    try:
        # The splitters only count X's rows: an (n, 0) array costs no memory.
        features = np.empty((len(kept), 0), dtype=np.uint8)
        for j, (_, test) in enumerate(splitter.split(features, kept_labels, kept_groups)):
            repeat, fold = divmod(j, cv.n_splits)
            folds[repeat, kept[test]] = fold
    except ValueError as error:
        raise SplitError(f"cv: {error}") from None
    return Assignment(folds=folds, holdout=held)


def _check_feasible(
    cv: CVSpec,
    n: int,
    n_kept: int,
    labels: np.ndarray | None,
    groups: np.ndarray | None,
    label_values: list[Any] | None,
) -> None:
    k = cv.n_splits
    after = f" ({n_kept} after the hold-out)" if n_kept != n else ""
    if n_kept < k:
        raise SplitError(f"cv.n_splits: {k} folds need at least {k} records; the input has {n}{after}")
    if cv.strategy in ("group", "stratified_group"):
        n_groups = len(np.unique(groups))
        if n_groups < k:
            raise SplitError(f"cv.n_splits: {k} folds need at least {k} groups; the input has {n_groups}{after}")
    if cv.strategy in ("stratified", "stratified_group") and not cv.allow_small_classes:
        counts = np.bincount(labels)
        present = np.flatnonzero(counts)
        small = present[counts[present] < k]
        if len(small):
            code = int(small[np.argmin(counts[small])])
            name = label_values[code] if label_values else code
            raise SplitError(
                f"cv.n_splits: class {name!r} has {counts[code]} records{after}, fewer than {k} folds, so some "
                f"fold would train without it ({len(small)} such classes); lower n_splits, merge the class, "
                "or set cv.allow_small_classes"
            )
