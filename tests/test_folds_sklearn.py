"""Our folds are exactly scikit-learn's: the recipe in docs/folds.md, built here from sklearn alone."""

from __future__ import annotations

import json
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

from airflow_smx.core.folds import split_dataset
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
