"""``plan.json``: the record of one split. Its keys are fixed; other tools read them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PLAN_VERSION = 1


@dataclass
class Fold:
    """One fold: its validation part, and its train channel as a manifest (and optionally a file)."""

    index: int  # global fold index: repeat * n_splits + fold
    repeat: int
    validation: str  # URI of the part holding the fold's validation records
    train_manifest: str  # URI of a SageMaker ManifestFile listing the other parts of the repeat
    train_file: str | None  # URI of the assembled train records, for channels needing one object
    n_train: int
    n_validation: int
    class_counts: dict[str, dict[str, int]] | None  # {"train": {class: n}, "validation": {class: n}}
    train_parts: list[str] = field(default_factory=list)  # URIs the manifest lists


@dataclass
class FoldPlan:
    """What a split wrote and how: strategy, seed, input identity, and every fold."""

    strategy: str
    n_splits: int
    n_repeats: int
    random_state: int
    shuffle: bool
    n_records: int
    input: dict[str, Any]  # uri, bytes, sha256, format, compression, label, group, csv_header
    holdout: str | None  # URI of the hold-out part
    holdout_fraction: float
    n_holdout: int
    classes: dict[str, int] | None  # records per class, whole input
    n_groups: int | None
    prefix: str  # the folds folder URI
    folds: list[Fold]
    version: int = PLAN_VERSION
    # the refit's data: every record but the hold-out in train (repeat 0's parts), the hold-out as
    # validation ("" without one); index -1. None: the split was asked for folds only
    final: Fold | None = None

    @property
    def test_train_ratio(self) -> float:
        """n_test / n_train of Nadeau and Bengio's corrected variance: the folds' validation
        records over their training records (about 1 / (k - 1) for k folds)."""
        return sum(f.n_validation for f in self.folds) / sum(f.n_train for f in self.folds)

    @property
    def n_classes(self) -> int:
        """Distinct labels in the whole input (SMX-Validator's ``${num_classes}``); 0 without a label."""
        return len(self.classes or {})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FoldPlan:
        folds = [Fold(**f) for f in data["folds"]]
        final = Fold(**data["final"]) if data.get("final") else None
        return cls(**{**data, "folds": folds, "final": final})

    def identity(self) -> dict[str, Any]:
        """The fields that decide the folds' content: equal identities mean identical outputs.
        (``final`` adds files, and changes no fold: runs with and without it have the same folds.)"""
        data = self.to_json()
        return {
            k: data[k]
            for k in (
                "strategy",
                "n_splits",
                "n_repeats",
                "random_state",
                "shuffle",
                "input",
                "holdout_fraction",
                "prefix",
                "version",
            )
        } | {"assembled": [f.train_file is not None for f in self.folds]}
