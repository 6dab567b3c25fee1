"""The split: scan the input once, assign folds, write every record once, then the plan.

Every check runs in the first pass, before anything is written. Writing goes into the run's
own ``folds`` folder; if anything fails there, the folder is removed again, so a failed split
leaves no part, manifest or plan behind. ``plan.json`` is written last: its presence means
the split is complete, and a retried split with the same input and settings returns it as is.
"""

from __future__ import annotations

import json
import logging
import posixpath
from typing import Any

import numpy as np

from airflow_smx.core import storage
from airflow_smx.core.folds.assign import HOLDOUT, Assignment, assign_folds, bincount, joint_counts
from airflow_smx.core.folds.plan import Fold, FoldPlan
from airflow_smx.core.folds.records import Input, SplitError, open_input
from airflow_smx.core.folds.scan import Scan, scan
from airflow_smx.core.folds.stage import staged
from airflow_smx.core.folds.write import write_parts
from airflow_smx.core.request import CVSpec, InputSpec

log = logging.getLogger(__name__)

PLAN = "plan.json"


def split_dataset(
    spec: InputSpec,
    cv: CVSpec,
    folds_uri: str,
    *,
    assemble_train: bool = False,
    storage_options: dict[str, Any] | None = None,
    workers: int | None = None,
    write: bool = True,
    final: bool = False,
) -> FoldPlan:
    """Split ``spec``'s input into folds under ``folds_uri`` and return the plan.

    :param spec: the input dataset and how to read it
    :param cv: strategy, folds, repeats, seed and hold-out
    :param folds_uri: the run's folds folder, ``{output_uri}/{cv_run_id}/folds``
    :param assemble_train: also write each fold's train records as one file (for channels
        that need a single object: ``AugmentedManifestFile``, ``S3Prefix``)
    :param storage_options: fsspec options for both input and output (credentials, endpoint)
    :param workers: processes for an uncompressed input, local or fetched (None: one per CPU, up
        to 4, from 64 MiB on); the folds are the same whatever the number
    :param write: False: scan and assign only (a dry run): the plan of what would be written
    :param final: also the refit's train channel: every record but the hold-out (``plan.final``)
    :raises SplitError: naming the line or the numbers that make the split impossible
    """
    with staged(open_input(spec.uri, spec.compression, storage_options)) as source:
        found = scan(source, spec, workers)
        label_codes, group_codes = found.codes.get("label"), found.codes.get("group")
        assignment = assign_folds(cv, found.n_records, label_codes, group_codes, found.values.get("label"))
        found.identify()
        plan = make_plan(spec, cv, folds_uri, found, assignment, assemble_train, final)
        if write:
            _write_once(source, spec, folds_uri, found, assignment, plan, storage_options)
    return plan


def _write_once(
    source: Input,
    spec: InputSpec,
    folds_uri: str,
    found: Scan,
    assignment: Assignment,
    plan: FoldPlan,
    storage_options: dict[str, Any] | None,
) -> None:
    """Write the plan's parts, unless ``folds_uri`` holds them already; all of them, or none."""
    fs, folds_path = storage.filesystem(folds_uri, storage_options)
    if already_split(fs, folds_path, plan):
        log.info("%s already holds this split; reusing it", folds_uri)
        return
    storage.remove(fs, [folds_path])  # an earlier, interrupted attempt at this same run
    try:
        _write(fs, folds_path, source, spec, found, assignment, plan)
        if source.fingerprint() != source.opened_as:
            raise SplitError(f"input.uri: {spec.uri} changed while it was being split; run the split again")
    except BaseException:
        storage.remove(fs, [folds_path])
        raise


def read_plan(folds_uri: str, storage_options: dict[str, Any] | None = None) -> FoldPlan:
    """The plan a split wrote under ``folds_uri``."""
    return _read_plan(*storage.filesystem(folds_uri, storage_options))


def _read_plan(fs: Any, folds_path: str) -> FoldPlan:
    return FoldPlan.from_json(storage.read_json(fs, posixpath.join(folds_path, PLAN)))


def already_split(fs: Any, folds_path: str, plan: FoldPlan) -> bool:
    if not fs.exists(posixpath.join(folds_path, PLAN)):
        return False
    try:
        done = _read_plan(fs, folds_path)
    except (ValueError, TypeError, KeyError):
        return False
    return done.identity() == plan.identity() and (done.final is None) == (plan.final is None)


def _write(
    fs: Any, folds_path: str, source: Input, spec: InputSpec, found: Scan, assignment: Assignment, plan: FoldPlan
) -> None:
    for repeat in range(assignment.n_repeats):
        targets = {code: fs_path(fs, uri) for code, uri in part_targets(plan, repeat).items()}
        write_parts(fs, source, found, assignment.folds[repeat], targets)
        log.info("wrote the parts of repeat %d of %d", repeat + 1, assignment.n_repeats)
    write_channels(fs, folds_path, spec, found, plan)


def part_targets(plan: FoldPlan, repeat: int) -> dict[int, str]:
    """Repeat ``repeat``'s parts: fold code (HOLDOUT for the hold-out) -> URI."""
    targets = {f.index - repeat * plan.n_splits: f.validation for f in plan.folds if f.repeat == repeat}
    if repeat == 0 and plan.holdout:
        targets[HOLDOUT] = plan.holdout
    return targets


def write_channels(fs: Any, folds_path: str, spec: InputSpec, found: Scan, plan: FoldPlan) -> None:
    """What the parts are read through: each fold's train manifest (and file), the header, and the plan, last."""
    for fold in [*plan.folds, *([plan.final] if plan.final else [])]:
        manifest = [{"prefix": plan.prefix + "/"}, *(storage.relative(p, plan.prefix) for p in fold.train_parts)]
        storage.write_bytes(fs, fs_path(fs, fold.train_manifest), json.dumps(manifest).encode() + b"\n")
        if fold.train_file:
            storage.concatenate(fs, fs_path(fs, fold.train_file), [fs_path(fs, p) for p in fold.train_parts])
    if found.header is not None:
        storage.write_bytes(
            fs, posixpath.join(folds_path, "header" + _extension(spec.uri, found.format)), found.header + b"\n"
        )
    storage.write_json(fs, posixpath.join(folds_path, PLAN), plan.to_json())


def fs_path(fs: Any, uri: str) -> str:
    return fs._strip_protocol(uri)


def _extension(uri: str, fmt: str) -> str:
    name = posixpath.basename(uri).removesuffix(".gz").removesuffix(".GZ")  # a prefix (ends in /): none
    ext = posixpath.splitext(name)[1]
    return ext if ext and len(ext) <= 10 else (".jsonl" if fmt == "jsonl" else ".csv")


def make_plan(
    spec: InputSpec, cv: CVSpec, folds_uri: str, found: Scan, assignment: Assignment, assemble_train: bool, final: bool
) -> FoldPlan:
    prefix = folds_uri.rstrip("/")
    ext = _extension(spec.uri, found.format)
    labels = found.codes.get("label")
    names = [str(v) for v in found.values.get("label", [])]
    k = cv.n_splits
    folds = []
    tables = [_fold_table(row, k, labels, len(names)) for row in assignment.folds]
    for repeat, table in enumerate(tables):
        parts = [storage.join(prefix, f"part-{repeat * k + f:05d}{ext}") for f in range(k)]
        sizes = table[1:].sum(axis=1)
        for f in range(k):
            index = repeat * k + f
            folder = storage.join(prefix, f"fold-{index:05d}")
            folds.append(
                Fold(
                    index=index,
                    repeat=repeat,
                    validation=parts[f],
                    train_manifest=storage.join(folder, "train.manifest"),
                    train_file=storage.join(folder, f"train{ext}") if assemble_train else None,
                    n_train=int(sizes.sum() - sizes[f]),
                    n_validation=int(sizes[f]),
                    class_counts=_class_counts(table, names, f) if labels is not None else None,
                    train_parts=[p for i, p in enumerate(parts) if i != f],
                )
            )
    held = assignment.n_holdout
    holdout = storage.join(prefix, f"holdout{ext}") if held else None
    return FoldPlan(
        strategy=cv.strategy,
        n_splits=k,
        n_repeats=cv.n_repeats,
        random_state=cv.random_state,
        shuffle=cv.shuffle,
        n_records=found.n_records,
        input={
            "uri": spec.uri,
            "bytes": found.bytes,
            "sha256": found.sha256,
            "format": found.format,
            "compression": found.compression,
            "files": found.files,
            "label": spec.label,
            "group": spec.group,
            "csv_header": found.header.decode("utf-8", errors="replace").rstrip("\r") if found.header else None,
        },
        holdout=holdout,
        holdout_fraction=cv.holdout,
        n_holdout=held,
        classes=_counts(tables[0].sum(axis=0), names) if labels is not None else None,
        n_groups=len(found.values["group"]) if "group" in found.values else None,
        prefix=prefix,
        folds=folds,
        final=_final(
            prefix,
            ext,
            folds[: cv.n_splits],
            holdout,
            held,
            tables[0] if labels is not None else None,
            names,
            assemble_train,
        )
        if final
        else None,
    )


def _final(
    prefix: str,
    ext: str,
    first_repeat: list[Fold],
    holdout: str | None,
    held: int,
    table: np.ndarray | None,
    names: list[str],
    assemble_train: bool,
) -> Fold:
    """The refit's channels: repeat 0's parts hold every record but the hold-out, once.

    :param table: repeat 0's records per (fold code + 1, class); None without a label
    """
    folder = storage.join(prefix, "final")
    return Fold(
        index=-1,
        repeat=0,
        validation=holdout or "",
        train_manifest=storage.join(folder, "train.manifest"),
        train_file=storage.join(folder, f"train{ext}") if assemble_train else None,
        n_train=sum(f.n_validation for f in first_repeat),
        n_validation=held,
        class_counts=None
        if table is None
        else {"train": _counts(table[1:].sum(axis=0), names), "validation": _counts(table[0], names)},
        train_parts=[f.validation for f in first_repeat],
    )


def _fold_table(row: np.ndarray, k: int, labels: np.ndarray | None, n_classes: int) -> np.ndarray:
    """Records per (fold code + 1, class) of one repeat; the hold-out is row 0 (one column without a label)."""
    if labels is None:
        return bincount(row, minlength=k + 1, shift=1)[:, None]
    return joint_counts(row, k + 1, labels, n_classes, row_shift=1)


def _class_counts(table: np.ndarray, names: list[str], fold: int) -> dict[str, dict[str, int]]:
    validation = table[fold + 1]
    return {"train": _counts(table[1:].sum(axis=0) - validation, names), "validation": _counts(validation, names)}


def _counts(counts: np.ndarray, names: list[str]) -> dict[str, int]:
    return {name: int(c) for name, c in zip(names, counts.tolist(), strict=True)}
