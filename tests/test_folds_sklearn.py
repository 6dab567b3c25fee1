"""Our folds are exactly scikit-learn's: the recipe in docs/folds.md, built here from sklearn alone."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import (
    GroupKFold,
    GroupShuffleSplit,
    KFold,
    RepeatedKFold,
    RepeatedStratifiedKFold,
    StratifiedGroupKFold,
    StratifiedKFold,
    train_test_split,
)

from airflow_smx.core.folds import SplitError, assign_folds, split_dataset
from airflow_smx.core.folds.records import compact_table
from airflow_smx.core.request import CVSpec, InputSpec
from tests.conftest import make_records, write_jsonl


def notebook_folds(strategy: str, k: int, seed: int, y, groups, repeats: int = 1, holdout: float = 0.0):
    """What a user computes in a notebook from the documented recipe: (held-out ids, [validation ids])."""
    n = len(y)
    ids = np.arange(n)
    held = ids[:0]
    if holdout:
        if strategy in ("group", "stratified_group"):
            kept, held = next(GroupShuffleSplit(1, test_size=holdout, random_state=seed).split(ids, groups=groups))
        else:
            kept, held = train_test_split(ids, test_size=holdout, random_state=seed, stratify=y)
        ids = np.sort(kept)
    splitter = {
        ("kfold", 1): KFold(k, shuffle=True, random_state=seed),
        ("kfold", repeats): RepeatedKFold(n_splits=k, n_repeats=repeats, random_state=seed),
        ("stratified", 1): StratifiedKFold(k, shuffle=True, random_state=seed),
        ("stratified", repeats): RepeatedStratifiedKFold(n_splits=k, n_repeats=repeats, random_state=seed),
        ("group", 1): GroupKFold(k, shuffle=True, random_state=seed),
        ("stratified_group", 1): StratifiedGroupKFold(k, shuffle=True, random_state=seed),
    }[(strategy, repeats)]
    y_used = y[ids] if "stratified" in strategy else None
    groups_used = groups[ids] if "group" in strategy else None
    tests = [ids[test] for _, test in splitter.split(ids, y_used, groups_used)]
    return sorted(held.tolist()), [t.tolist() for t in tests]


def part_ids(uri: str) -> list[int]:
    return [json.loads(line)["id"] for line in Path(uri.removeprefix("file://")).read_text().splitlines()]


CASES = [
    # strategy, n, seed, repeats, holdout, integer groups
    ("kfold", 50, 0, 1, 0.0, False),
    ("kfold", 1003, 7, 1, 0.0, False),
    ("kfold", 1003, 7, 3, 0.0, False),
    ("kfold", 2000, 11, 1, 0.25, False),
    ("stratified", 60, 1, 1, 0.0, False),
    ("stratified", 1500, 12345, 1, 0.0, False),
    ("stratified", 1500, 3, 2, 0.0, False),
    ("stratified", 2400, 5, 1, 0.2, False),
    ("group", 300, 2, 1, 0.0, False),
    ("group", 3001, 8, 1, 0.0, True),
    ("group", 2000, 9, 1, 0.3, True),
    ("stratified_group", 800, 4, 1, 0.0, False),
    ("stratified_group", 3000, 10, 1, 0.0, True),
    ("stratified_group", 3000, 6, 1, 0.2, False),
]


@pytest.mark.parametrize(("strategy", "n", "seed", "repeats", "holdout", "int_groups"), CASES)
def test_folds_equal_sklearn(tmp_path, strategy, n, seed, repeats, holdout, int_groups):
    k = 5
    records = make_records(n, seed, n_classes=5, n_groups=60, int_groups=int_groups)
    path = write_jsonl(tmp_path / "in.jsonl", records)
    cv = CVSpec(
        strategy=strategy, n_splits=k, n_repeats=repeats, random_state=seed, holdout=holdout, allow_small_classes=True
    )
    plan = split_dataset(
        InputSpec(uri=path.as_uri(), label="class", group="meta.patient"), cv, (tmp_path / "out").as_uri()
    )
    y = np.array([r["class"] for r in records])
    groups = np.array([r["meta"]["patient"] for r in records])
    held, expected = notebook_folds(strategy, k, seed, y, groups, repeats, holdout)

    assert len(plan.folds) == k * repeats
    assert [part_ids(f.validation) for f in plan.folds] == expected
    assert (part_ids(plan.holdout) if plan.holdout else []) == held
    for fold in plan.folds:
        assert fold.n_validation == len(expected[fold.index])
        assert fold.n_train == n - len(held) - fold.n_validation


def test_unshuffled_folds_are_contiguous_slices(tmp_path):
    records = make_records(103, seed=1)
    path = write_jsonl(tmp_path / "in.jsonl", records)
    plan = split_dataset(InputSpec(uri=path.as_uri()), CVSpec(n_splits=4, shuffle=False), (tmp_path / "o").as_uri())
    expected = [test.tolist() for _, test in KFold(4).split(np.arange(103))]
    assert [part_ids(f.validation) for f in plan.folds] == expected


def sklearn_assignment(cv: CVSpec, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """folds[r, i] from scikit-learn's own splitters and train_test_split (shuffled or not)."""
    n, k, seed = len(y), cv.n_splits, cv.random_state
    ids, folds = np.arange(n), np.full((cv.n_repeats, n), -1)
    if cv.holdout:
        if cv.strategy in ("group", "stratified_group"):
            kept, _ = next(GroupShuffleSplit(1, test_size=cv.holdout, random_state=seed).split(ids, groups=groups))
        else:
            stratify = y if cv.shuffle else None
            kept, _ = train_test_split(
                ids, test_size=cv.holdout, random_state=seed, shuffle=cv.shuffle, stratify=stratify
            )
        ids = np.sort(kept)
    state = seed if cv.shuffle else None
    splitter = {
        ("kfold", 1): KFold(k, shuffle=cv.shuffle, random_state=state),
        ("kfold", 2): RepeatedKFold(n_splits=k, n_repeats=cv.n_repeats, random_state=seed),
        ("stratified", 1): StratifiedKFold(k, shuffle=cv.shuffle, random_state=state),
        ("stratified", 2): RepeatedStratifiedKFold(n_splits=k, n_repeats=cv.n_repeats, random_state=seed),
        ("group", 1): GroupKFold(k, shuffle=cv.shuffle, random_state=state),
        ("stratified_group", 1): StratifiedGroupKFold(k, shuffle=cv.shuffle, random_state=state),
    }[(cv.strategy, min(cv.n_repeats, 2))]
    y_used = y[ids] if "stratified" in cv.strategy else None
    groups_used = groups[ids] if "group" in cv.strategy else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small classes: sklearn warns, and so does the request check
        for j, (_, test) in enumerate(splitter.split(ids, y_used, groups_used)):
            folds[j // k, ids[test]] = j % k
    return folds


def random_case(rng: random.Random) -> tuple[CVSpec, np.ndarray, np.ndarray]:
    """A request and its label and group codes: sizes from 2 to 5,000, classes skewed up to 1000:1."""
    strategy = rng.choice(["kfold", "stratified", "group", "stratified_group"])
    shuffle = rng.random() < 0.8
    repeats = rng.choice([1, 1, 2, 3]) if shuffle and strategy in ("kfold", "stratified") else 1
    n = int(10 ** rng.uniform(0.5, 3.7))
    n_classes = rng.randint(1, 12)
    skew = 10 ** rng.uniform(0, 3)
    weights = [skew ** (-i / max(1, n_classes - 1)) for i in range(n_classes)]
    n_groups = rng.randint(2, 300)
    group_weights = [rng.paretovariate(rng.uniform(0.8, 3)) for _ in range(n_groups)]
    y = np.array(rng.choices(range(n_classes), weights=weights, k=n))
    groups = np.array(rng.choices(range(n_groups), weights=group_weights, k=n))
    cv = CVSpec(
        strategy=strategy,
        n_splits=rng.choice([2, 3, 5, 7, 10]),
        n_repeats=repeats,
        shuffle=shuffle,
        random_state=rng.randrange(2**31),
        holdout=rng.choice([0.0, 0.0, 0.1, 0.25, 0.5]),
        allow_small_classes=True,
    )
    return cv, y, groups


def dense_codes(values: np.ndarray) -> np.ndarray:
    """What the scan hands the assignment: codes 0.. in value order, in a compact dtype."""
    distinct, inverse = np.unique(values, return_inverse=True)
    return compact_table(np.arange(len(distinct)), len(distinct))[inverse]


@pytest.mark.parametrize("batch", range(8))
def test_compact_assignment_equals_sklearn_on_random_requests(batch):
    """Many sizes, skews, seeds, strategies, repeats and hold-outs, fold for fold; where scikit-learn
    refuses a case (or, before 1.8, makes an empty fold), so do we (as a SplitError naming the field)."""
    rng = random.Random(20261201 + batch)
    compared = refused = 0
    for _ in range(60):
        cv, y, groups = random_case(rng)
        try:
            expected = sklearn_assignment(cv, y, groups)
            if any(len(np.unique(row[row >= 0])) < cv.n_splits for row in expected):
                # scikit-learn before 1.8 left a fold empty when groups were fewer than folds
                raise ValueError("an empty fold")
        except ValueError:
            with pytest.raises(SplitError):
                assign_folds(cv, len(y), dense_codes(y), dense_codes(groups))
            refused += 1
            continue
        got = assign_folds(cv, len(y), dense_codes(y), dense_codes(groups))
        assert got.folds.dtype == np.int8
        np.testing.assert_array_equal(got.folds, expected, err_msg=repr(cv))
        compared += 1
    assert compared >= 40, (compared, refused)


def test_unshuffled_group_folds_rank_tied_group_sizes_as_the_installed_sklearn_does():
    """More than 16 groups of one size: numpy's default sort orders them otherwise than a stable
    one, and scikit-learn changed from one to the other (1.9)."""
    groups = np.repeat(np.arange(40), [3, 3] + [2] * 34 + [1, 1, 1, 1])
    cv = CVSpec(strategy="group", n_splits=3, shuffle=False)
    got = assign_folds(cv, len(groups), None, dense_codes(groups)).folds
    np.testing.assert_array_equal(got, sklearn_assignment(cv, np.zeros(len(groups)), groups))
