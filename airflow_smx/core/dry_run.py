"""A dry run's report: what a run would split and train, from a scan of its data. No Airflow.

A request with ``"dry_run": true`` is checked and its input scanned and assigned to folds as
for a real run, then the run stops: no fold file, no job, no experiment; only this report.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from airflow_smx.core.folds import FoldPlan
from airflow_smx.core.policy import WorstCase
from airflow_smx.core.request import CVRequest


def dry_run_report(request: CVRequest, plan: FoldPlan, job_names: list[str], cv_run_id: str) -> dict[str, Any]:
    """The figures a user checks before spending: records, classes, each fold's sizes and job
    name, and the worst-case instance-hours (SageMaker; a local run bills none).

    :param job_names: the training job of each fold of ``plan``, in its order
    """
    spend = WorstCase.of(request) if request.backend == "sagemaker" else None
    return {
        "dry_run": True,
        "cv_run_id": cv_run_id,
        "input": plan.input,
        "n_records": plan.n_records,
        "n_holdout": plan.n_holdout,
        "classes": plan.classes,
        "n_groups": plan.n_groups,
        "cv": {"strategy": plan.strategy, "n_splits": plan.n_splits, "n_repeats": plan.n_repeats},
        "folds": [
            {
                "fold": fold.index,
                "repeat": fold.repeat,
                "job_name": name,
                "n_train": fold.n_train,
                "n_validation": fold.n_validation,
                "class_counts": fold.class_counts,
            }
            for fold, name in zip(plan.folds, job_names, strict=True)
        ],
        "worst_case": {**asdict(spend), "instance_hours": spend.instance_hours, "text": str(spend)} if spend else None,
    }


def dry_run_text(report: dict[str, Any]) -> str:
    """The report as a user reads it in the task log: one line per fold."""
    classes = report["classes"] or {}
    lines = [
        f"Dry run {report['cv_run_id']}: nothing was written and no job started.",
        f"{report['input']['uri']}: {report['n_records']} records"
        + (f", {len(classes)} classes ({_counts(classes)})" if classes else "")
        + (f", {report['n_groups']} groups" if report["n_groups"] else "")
        + (f"; hold-out {report['n_holdout']}" if report["n_holdout"] else ""),
    ]
    width = max(len(f["job_name"]) for f in report["folds"])
    lines.append(f"{'fold':>4}  {'training job':<{width}}  {'train':>9}  {'validation':>10}  validation classes")
    for fold in report["folds"]:
        counts = (fold["class_counts"] or {}).get("validation")
        lines.append(
            f"{fold['fold']:>4}  {fold['job_name']:<{width}}  {fold['n_train']:>9}  {fold['n_validation']:>10}  "
            + (_counts(counts) if counts else "-")
        )
    if report["worst_case"]:
        lines.append(f"Training would cost at most: {report['worst_case']['text']}.")
    return "\n".join(lines) + "\n"


def _counts(counts: dict[str, int], most: int = 12) -> str:
    """``a: 3, b: 4``; past ``most`` values (a continuous label), only how many there are."""
    if len(counts) > most:
        return f"{len(counts)} distinct values"
    return ", ".join(f"{name}: {n}" for name, n in counts.items())
