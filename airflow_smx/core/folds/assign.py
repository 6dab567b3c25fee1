"""Fold assignment equal to scikit-learn's splitters, in compact arrays (docs/folds.md has the recipe).

For n records in file order, the hold-out (if any) is carved off first as ``train_test_split``
(or ``GroupShuffleSplit`` for group strategies) would; the remaining records, still in file
order, are split as the strategy's splitter would, and its j-th test set is global fold j
(repeat ``j // n_splits``, fold ``j % n_splits``).

Why not call the splitters: they hold int64 index arrays over every record (about 46 bytes a
record inside StratifiedKFold, the most of a split's memory). Here a record costs one byte of
fold code per repeat, plus int32 scratch while one strategy runs. The random draws are the
splitters' own: numpy's ``shuffle`` draws by length, not by dtype, so an int32 ``arange``
shuffled by the same RandomState is the permutation scikit-learn's int64 one is; decisions
made per class or per group run on scikit-learn's code where it is public.
``tests/test_folds_sklearn.py`` compares record for record over many sizes, skews and seeds.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from math import ceil
from typing import Any

import numpy as np

from airflow_smx.core.folds.records import SplitError
from airflow_smx.core.request import CVSpec

HOLDOUT = -1  # fold code of a hold-out record
FOLD_DTYPE = np.int8  # fold codes; CVSpec caps n_splits at 100
CHUNK = 1 << 18  # records per step where a step needs int64 scratch (a few MiB)


@dataclass
class Assignment:
    """``folds[r, i]``: the fold (0..k-1) record i validates in, in repeat r; HOLDOUT if held out."""

    folds: np.ndarray

    @property
    def n_repeats(self) -> int:
        return self.folds.shape[0]

    @property
    def n_holdout(self) -> int:
        return int(np.count_nonzero(self.folds[0] == HOLDOUT))


def index_dtype(n: int) -> type:
    return np.int32 if n < 1 << 31 else np.int64


def assign_folds(
    cv: CVSpec,
    n: int,
    labels: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    label_values: list[Any] | None = None,
) -> Assignment:
    """Assign each of ``n`` records to a fold per repeat.

    :param labels: per-record label codes, 0.. in value order (required by stratified strategies)
    :param groups: per-record group codes, 0.. in value order (required by group strategies)
    :param label_values: the value of each label code, to name a class in an error
    """
    held = _holdout(cv, n, labels, groups)
    kept_labels = _kept(labels, held) if labels is not None and "stratified" in cv.strategy else None
    kept_groups = _kept(groups, held) if groups is not None and "group" in cv.strategy else None
    n_kept = n - (int(np.count_nonzero(held)) if held is not None else 0)
    _check_feasible(cv, n, n_kept, kept_labels, kept_groups, label_values)
    folds = np.full((cv.n_repeats, n), HOLDOUT, dtype=FOLD_DTYPE)
    kept = ~held if held is not None else None
    try:
        for repeat, row in enumerate(_kept_folds(cv, n_kept, kept_labels, kept_groups)):
            if kept is None:
                folds[repeat] = row
            else:
                folds[repeat][kept] = row  # not folds[repeat, kept]: mixed with an int, numpy makes the mask int64
    except ValueError as error:
        raise SplitError(f"cv: {error}") from None
    return Assignment(folds=folds)


def _kept(codes: np.ndarray, held: np.ndarray | None) -> np.ndarray:
    return codes if held is None else codes[~held]


# ---- the hold-out --------------------------------------------------------------------------


def _holdout(cv: CVSpec, n: int, labels: np.ndarray | None, groups: np.ndarray | None) -> np.ndarray | None:
    """A mask of the held-out records (None without a hold-out)."""
    if cv.holdout == 0:
        return None
    from sklearn.model_selection import ShuffleSplit  # not at the top: see _sklearn_splitter

    try:
        if cv.strategy in ("group", "stratified_group"):
            # GroupShuffleSplit is a ShuffleSplit over the distinct groups, in value order
            present, inverse = _present(groups)
            splitter = ShuffleSplit(n_splits=1, test_size=cv.holdout, random_state=cv.random_state)
            _, held_groups = next(splitter.split(np.empty((len(present), 0))))
            table = np.zeros(len(present), dtype=bool)
            table[held_groups] = True
            return table[inverse]
        n_train, n_test = _shuffle_split_sizes(n, cv.holdout)
        held = np.zeros(n, dtype=bool)
        if not cv.shuffle:
            held[n_train:] = True
        elif labels is None:
            _scatter(held, _permutation(np.random.RandomState(cv.random_state), n)[:n_test], True)
        else:
            _stratified_holdout(held, labels, n_train, n_test, cv.random_state)
    except ValueError as error:
        raise SplitError(f"cv.holdout: cannot hold out {cv.holdout} of {n} records: {error}") from None
    return held


def _shuffle_split_sizes(n: int, test_size: float) -> tuple[int, int]:
    """(n_train, n_test) as train_test_split sizes them for a fractional test_size."""
    n_test = ceil(test_size * n)
    if n - n_test <= 0:
        raise ValueError(f"with {n} records and test_size={test_size} the train set would be empty")
    return n - n_test, n_test


def _stratified_holdout(held: np.ndarray, labels: np.ndarray, n_train: int, n_test: int, seed: int) -> None:
    """StratifiedShuffleSplit's test set (what ``train_test_split(stratify=...)`` holds out)."""
    # private, but the one place scikit-learn keeps the per-class quota rule; the randomized
    # comparison in the tests fails if a version changes it
    from sklearn.utils.extmath import _approximate_mode

    counts = bincount(labels)
    if counts.min() < 2:
        raise ValueError(f"classes with 1 record cannot be stratified: {np.flatnonzero(counts < 2).tolist()}")
    if min(n_train, n_test) < len(counts):
        raise ValueError(f"train ({n_train}) and test ({n_test}) records must each cover all {len(counts)} classes")
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(counts, n_train, rng)
    t_i = _approximate_mode(counts - n_i, n_test, rng)
    for members, train, test in zip(_members_by_class(labels, counts), n_i, t_i, strict=True):
        _scatter(held, members[_permutation(rng, len(members))[train : train + test]], True)


# ---- the folds of the kept records ---------------------------------------------------------


def _kept_folds(cv: CVSpec, n: int, labels: np.ndarray | None, groups: np.ndarray | None) -> Iterator[np.ndarray]:
    """Each repeat's fold codes of the ``n`` kept records (in their file order)."""
    k, seed = cv.n_splits, cv.random_state
    if cv.n_repeats > 1:
        # RepeatedKFold and RepeatedStratifiedKFold: shuffled splitters drawing from one RandomState
        rng = np.random.RandomState(seed)
        for _ in range(cv.n_repeats):
            yield _kfold(n, k, rng) if cv.strategy == "kfold" else _stratified(labels, k, rng)
        return
    rng = np.random.RandomState(seed) if cv.shuffle else None
    if cv.strategy == "kfold":
        yield _kfold(n, k, rng)
    elif cv.strategy == "stratified":
        yield _stratified(labels, k, rng)
    elif cv.strategy == "group":
        yield _group(groups, k, rng)
    else:
        yield _stratified_group(labels, groups, k, cv, rng)


def _kfold(n: int, k: int, rng: np.random.RandomState | None) -> np.ndarray:
    """KFold: consecutive blocks of the (shuffled) record order."""
    order = _permutation(rng, n) if rng is not None else None
    folds = np.empty(n, dtype=FOLD_DTYPE)
    start = 0
    for fold, size in enumerate(_fold_sizes(n, k)):
        if order is None:
            folds[start : start + size] = fold
        else:
            _scatter(folds, order[start : start + size], fold)
        start += size
    return folds


def _stratified(labels: np.ndarray, k: int, rng: np.random.RandomState | None) -> np.ndarray:
    """StratifiedKFold._make_test_folds, class by class."""
    counts = bincount(labels)
    members = _members_by_class(labels, counts)
    present = np.flatnonzero(counts)
    if np.all(k > counts[present]):
        raise ValueError(f"n_splits={k} cannot be greater than the number of members in each class.")
    # scikit-learn numbers the classes in order of first appearance, and deals the records
    # sorted by that number round-robin to the folds: class e holds the sorted positions
    # [start, start + count), of which those congruent to fold i mod k go to fold i
    by_appearance = present[np.argsort([members[c][0] for c in present], kind="stable")]
    folds = np.empty(len(labels), dtype=FOLD_DTYPE)
    start = 0
    for code in by_appearance:
        count = int(counts[code])
        per_fold = [(start + count - 1 - i) // k - (start - 1 - i) // k for i in range(k)]
        folds_for_class = np.arange(k, dtype=FOLD_DTYPE).repeat(per_fold)
        if rng is not None:
            rng.shuffle(folds_for_class)
        _scatter(folds, members[code], folds_for_class)
        start += count
    return folds


def _group(groups: np.ndarray, k: int, rng: np.random.RandomState | None) -> np.ndarray:
    """GroupKFold, decided per group."""
    present, inverse = _present(groups)
    to_fold = np.empty(len(present), dtype=FOLD_DTYPE)
    if rng is not None:  # unique_groups = rng.permutation(unique_groups), then array_split
        for fold, chunk in enumerate(np.array_split(_permutation(rng, len(present)), k)):
            to_fold[chunk] = fold
    else:  # the largest groups first, each to the lightest fold
        sizes = bincount(inverse, minlength=len(present))
        order = np.argsort(sizes, kind=_group_sort_kind())[::-1]
        per_fold = np.zeros(k)
        for group in order:
            lightest = np.argmin(per_fold)
            per_fold[lightest] += sizes[group]
            to_fold[group] = lightest
    return to_fold[inverse]


@functools.cache
def _installed(splitter: str) -> str:
    """The installed scikit-learn's code of ``splitter``'s test indices. Two of its rules changed
    between the versions the MWAA images install; reading them here keeps the folds the
    installed version's (tests/test_folds_sklearn.py runs on each image's version)."""
    from sklearn import model_selection

    return inspect.getsource(getattr(model_selection, splitter)._iter_test_indices)


def _group_sort_kind() -> str | None:
    """The sort GroupKFold ranks groups by size with: stable since scikit-learn 1.9, numpy's
    default before (which orders more than 16 tied sizes otherwise)."""
    code = _installed("GroupKFold")
    return "stable" if 'argsort(n_samples_per_group, kind="stable")' in code else None


def _shuffled_groups_remapped() -> bool:
    """Whether StratifiedGroupKFold maps its shuffled rows back to their groups. Up to scikit-learn
    1.7 it shuffled the rows only, so the fold chosen for row r's counts went to group r."""
    return "inv_perm" in _installed("StratifiedGroupKFold")


def _stratified_group(
    labels: np.ndarray, groups: np.ndarray, k: int, cv: CVSpec, rng: np.random.RandomState | None
) -> np.ndarray:
    """StratifiedGroupKFold, decided per group on scikit-learn's own fold choice."""
    splitter = _sklearn_splitter(cv)
    class_present, class_inverse = _present(labels)
    class_counts = bincount(class_inverse)
    if np.all(k > class_counts):
        raise ValueError(f"n_splits={k} cannot be greater than the number of members in each class.")
    present, inverse = _present(groups)
    per_group = joint_counts(inverse, len(present), class_inverse, len(class_present)).astype(float)
    slot = np.arange(len(present))  # the group's row in per_group, shuffled or not
    if rng is not None:
        perm = np.arange(len(present))
        rng.shuffle(perm)  # the draws of shuffling the rows themselves, as scikit-learn 1.7 does
        per_group = per_group[perm]
        if _shuffled_groups_remapped():
            slot[perm] = np.arange(len(present))
    per_fold = np.zeros((k, len(class_present)))
    fold_of_row = np.empty(len(present), dtype=FOLD_DTYPE)
    for row in np.argsort(-np.std(per_group, axis=1), kind="stable"):
        best = splitter._find_best_fold(y_counts_per_fold=per_fold, y_cnt=class_counts, group_y_counts=per_group[row])
        per_fold[best] += per_group[row]
        fold_of_row[row] = best
    return fold_of_row[slot][inverse]


def _sklearn_splitter(cv: CVSpec) -> Any:
    # scikit-learn is imported here, not at the top: the DAG file imports this package, and
    # sklearn with scipy would add about a second to every parse and every task's start
    from sklearn.model_selection import StratifiedGroupKFold

    return StratifiedGroupKFold(n_splits=cv.n_splits, shuffle=cv.shuffle, random_state=None)


# ---- compact building blocks ---------------------------------------------------------------


def _permutation(rng: np.random.RandomState, n: int) -> np.ndarray:
    """``rng.permutation(n)`` in int32: the same draws, half the bytes."""
    order = np.arange(n, dtype=index_dtype(n))
    rng.shuffle(order)
    return order


def _scatter(target: np.ndarray, index: np.ndarray, values: Any) -> None:
    """``target[index] = values``, CHUNK indices a step: numpy would copy all of an int32 index to int64."""
    for at in range(0, len(index), CHUNK):
        target[index[at : at + CHUNK]] = values if np.isscalar(values) else values[at : at + CHUNK]


def _fold_sizes(n: int, k: int) -> list[int]:
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def bincount(codes: np.ndarray, minlength: int = 0, shift: int = 0) -> np.ndarray:
    """``np.bincount(codes + shift)``, CHUNK records a step: numpy's converts the whole input to int64."""
    counts = np.zeros(minlength, dtype=np.int64)
    for begin in range(0, len(codes), CHUNK):
        chunk = np.bincount(codes[begin : begin + CHUNK].astype(np.int64) + shift, minlength=minlength)
        if len(chunk) > len(counts):
            chunk[: len(counts)] += counts
            counts = chunk
        else:
            counts[: len(chunk)] += chunk
    return counts


def _present(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(codes, return_inverse=True)`` for dense small codes, without sorting n records."""
    counts = bincount(codes)
    present = np.flatnonzero(counts)
    if len(present) == len(counts):
        return present, codes
    rank = np.zeros(len(counts), dtype=codes.dtype)
    rank[present] = np.arange(len(present))
    return present, rank[codes]


def _members_by_class(labels: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """Each code's record indices in file order (a stable counting sort, CHUNK records a step)."""
    order = np.empty(len(labels), dtype=index_dtype(len(labels)))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    filled = np.zeros(len(counts), dtype=np.int64)
    for begin in range(0, len(labels), CHUNK):
        chunk = labels[begin : begin + CHUNK]
        within = np.argsort(chunk, kind="stable")
        ranked = chunk[within]
        first = np.searchsorted(ranked, ranked, side="left")  # where each code's run starts
        order[starts[ranked] + filled[ranked] + (np.arange(len(ranked)) - first)] = within + begin
        filled += np.bincount(chunk, minlength=len(counts))
    return [order[s : s + c] for s, c in zip(starts.tolist(), counts.tolist(), strict=True)]


def joint_counts(rows: np.ndarray, n_rows: int, columns: np.ndarray, n_columns: int, row_shift: int = 0) -> np.ndarray:
    """``table[r, c]``: records with row code r - row_shift and column code c, CHUNK records a step."""
    table = np.zeros(n_rows * n_columns, dtype=np.int64)
    for begin in range(0, len(rows), CHUNK):
        cell = (rows[begin : begin + CHUNK].astype(np.int64) + row_shift) * n_columns + columns[begin : begin + CHUNK]
        table += np.bincount(cell, minlength=n_rows * n_columns)
    return table.reshape(n_rows, n_columns)


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
        n_groups = len(_present(groups)[0])
        if n_groups < k:
            raise SplitError(f"cv.n_splits: {k} folds need at least {k} groups; the input has {n_groups}{after}")
    if cv.strategy in ("stratified", "stratified_group") and not cv.allow_small_classes:
        counts = bincount(labels)
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
