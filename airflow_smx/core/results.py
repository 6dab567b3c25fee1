"""Every fold's outcome into one cross-validation result. No Airflow.

Input: one :class:`FoldOutcome` per fold (the DescribeTrainingJob of its job, or why there is
none). Output: ``cv_result.json``, whose top level keeps SMX-Validator's output keys
(``job_config``, ``crossvalidation``, ``training``, ``splits``) and adds ``summary``, and a
plain-text report with the per-fold table.
"""

from __future__ import annotations

import datetime
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from airflow_smx.core.attempts import Attempt
from airflow_smx.core.gate import gate_text
from airflow_smx.core.request import CVRequest

CONFIDENCE = 0.95


def clean_description(value: Any) -> Any:
    """DescribeTrainingJob as JSON: ISO timestamps, no ResponseMetadata."""
    if isinstance(value, dict):
        return {k: clean_description(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [clean_description(v) for v in value]
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    return value


@dataclass
class FoldOutcome:
    """What became of one fold's job."""

    fold: int
    job_name: str
    description: dict[str, Any] | None  # its latest job's DescribeTrainingJob, JSON-clean; None if none started
    error: str | None = None  # why the task failed, when there is no description to say it
    attempts: list[dict[str, Any]] = field(default_factory=list)  # every job it trained (Attempt.summary)

    @classmethod
    def of_attempts(cls, fold: int, first: str, found: list[dict[str, Any]]) -> FoldOutcome:
        """The outcome of a fold whose jobs, in order, are ``found``: the latest counts."""
        if not found:
            return cls(fold, first, None, error="no training job: its task never created it")
        described = [clean_description(d) for d in found]
        attempts = [Attempt(n, d, {}).summary() for n, d in enumerate(described, start=1)]
        return cls(fold, described[-1]["TrainingJobName"], described[-1], attempts=attempts)

    @property
    def status(self) -> str:
        return (self.description or {}).get("TrainingJobStatus", "NotStarted")

    @property
    def succeeded(self) -> bool:
        return self.status == "Completed"

    @property
    def reason(self) -> str | None:
        return (self.description or {}).get("FailureReason") or self.error


def metric_summary(values: dict[int, float], test_train_ratio: float | None = None) -> dict[str, Any]:
    """n, mean, sample std, min, max and two 95% t-intervals of the mean over the J fold scores.

    ``ci95`` (SMX-Validator's) takes the scores as independent: variance / J. They are not: the
    folds share most of their training records, and it is too narrow. ``ci95_corrected`` is
    Nadeau and Bengio's (2003) corrected resampled t: variance x (1/J + n_test/n_train), J - 1
    degrees of freedom; ``variance_factor`` is that (1/J + n_test/n_train).

    :param test_train_ratio: n_test / n_train of the folds (None: no corrected interval)
    """
    numbers = list(values.values())
    n = len(numbers)
    mean = statistics.fmean(numbers)
    std = statistics.stdev(numbers) if n > 1 else None
    factor = 1 / n + test_train_ratio if test_train_ratio is not None else None
    return {
        "n": n,
        "mean": mean,
        "std": std,
        "min": min(numbers),
        "max": max(numbers),
        "ci95": _t_interval(mean, std, n, 1 / n),
        "ci95_corrected": _t_interval(mean, std, n, factor),
        "variance_factor": factor,
        "values": {str(fold): value for fold, value in sorted(values.items())},
    }


def _t_interval(mean: float, std: float | None, n: int, variance_factor: float | None) -> list[float] | None:
    """mean +- t(n - 1) x sqrt(std^2 x variance_factor): the 95% interval of the mean."""
    if std is None or variance_factor is None:
        return None
    from scipy import stats  # here, not at the top: it would add half a second to every DAG parse

    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, n - 1)) * std * math.sqrt(variance_factor)
    return [mean - half, mean + half]


def summarize(
    request: CVRequest, outcomes: list[FoldOutcome], cv_run_id: str, test_train_ratio: float | None = None
) -> dict[str, Any]:
    """The run's summary: metrics over successful folds, failures, cost, and whether it passed.

    :param test_train_ratio: n_test / n_train of the folds (:attr:`FoldPlan.test_train_ratio`)
    """
    succeeded = [o for o in outcomes if o.succeeded]
    per_metric: dict[str, dict[int, float]] = {}
    for outcome in succeeded:
        for metric in outcome.description.get("FinalMetricDataList", []):
            per_metric.setdefault(metric["MetricName"], {})[outcome.fold] = float(metric["Value"])
    metrics = {name: metric_summary(values, test_train_ratio) for name, values in sorted(per_metric.items())}
    summary = {
        "cv_run_id": cv_run_id,
        "n_folds": len(outcomes),
        "succeeded": len(succeeded),
        "failed": len(outcomes) - len(succeeded),
        "required": request.required_folds,
        "success": len(succeeded) >= request.required_folds,
        "objective": _objective(request, metrics),
        "test_train_ratio": test_train_ratio,
        "metrics": metrics,
        "failures": [
            {"fold": o.fold, "job_name": o.job_name, "status": o.status, "reason": o.reason}
            for o in outcomes
            if not o.succeeded
        ],
        "cost": _cost(outcomes),
        "attempts": [
            {"fold": o.fold, "counts": o.job_name if o.succeeded else None, "attempts": o.attempts} for o in outcomes
        ],
    }
    return summary


def _objective(request: CVRequest, metrics: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    name = request.metrics.objective
    if name is None:
        return None
    found = metrics.get(name)
    result: dict[str, Any] = {"metric": name, "direction": request.metrics.direction, "found": found is not None}
    if found:
        pick = max if request.metrics.direction == "maximize" else min
        best = pick(found["values"].items(), key=lambda item: item[1])
        result.update({key: found[key] for key in ("mean", "std", "ci95", "ci95_corrected")})
        result["best_fold"] = int(best[0])
    return result


def _cost(outcomes: list[FoldOutcome]) -> dict[str, Any]:
    """Instance-seconds billed and trained, in all and by instance type, and what spot saved."""
    by_type: dict[str, dict[str, float]] = {}
    for outcome in outcomes:
        description = outcome.description or {}
        resources = description.get("ResourceConfig", {})
        instances = int(resources.get("InstanceCount", 1))
        seconds = by_type.setdefault(
            str(resources.get("InstanceType", "unknown")),
            {"billable_instance_seconds": 0.0, "training_instance_seconds": 0.0},
        )
        seconds["billable_instance_seconds"] += float(description.get("BillableTimeInSeconds") or 0) * instances
        seconds["training_instance_seconds"] += float(description.get("TrainingTimeInSeconds") or 0) * instances
    # only spot bills less than it trains; a local run bills nothing, and saves nothing
    spot = any((o.description or {}).get("EnableManagedSpotTraining") for o in outcomes)
    billable = sum(s["billable_instance_seconds"] for s in by_type.values())
    training = sum(s["training_instance_seconds"] for s in by_type.values())
    return {
        "billable_instance_seconds": billable,
        "training_instance_seconds": training,
        "spot_savings": (1 - billable / training) if spot and training and billable <= training else None,
        "by_instance_type": by_type,
    }


def cv_result(
    request: CVRequest,
    outcomes: list[FoldOutcome],
    cv_run_id: str,
    original: dict[str, Any],
    test_train_ratio: float | None = None,
) -> dict:
    """``cv_result.json``: SMX-Validator's output keys, then ``summary`` and ``request``.

    :param original: the conf as the user sent it (SMX-Validator's sections are echoed from it)
    :param test_train_ratio: n_test / n_train of the folds, for the corrected interval
    """
    summary = summarize(request, outcomes, cv_run_id, test_train_ratio)
    return {
        "job_config": original.get("job_config")
        or {"name": request.name, "input_path": request.input.uri, "output_prefix": request.output_uri},
        "crossvalidation": original.get("crossvalidation") or request.cv.model_dump(mode="json"),
        "training": original.get("training") or request.training.model_dump(mode="json", exclude_none=True),
        "splits": [
            o.description or {"TrainingJobName": o.job_name, "TrainingJobStatus": o.status, "FailureReason": o.reason}
            for o in outcomes
        ],
        "summary": summary,
        "request": request.model_dump(mode="json"),
    }


def report(summary: dict[str, Any], outcomes: list[FoldOutcome]) -> str:
    """A readable per-fold table with the mean, std and interval of every metric."""
    names = list(summary["metrics"])
    header = ["fold", "status", *names]
    rows = []
    for outcome in outcomes:
        values = [summary["metrics"][m]["values"].get(str(outcome.fold)) for m in names]
        rows.append([str(outcome.fold), outcome.status, *(number_text(v) for v in values)])
    for label, key in (("mean", "mean"), ("std", "std"), ("min", "min"), ("max", "max")):
        rows.append([label, "", *(number_text(summary["metrics"][m][key]) for m in names)])
    rows.append(["ci95", "", *(interval_text(summary["metrics"][m]["ci95"]) for m in names)])
    rows.append(["ci95 corrected", "", *(interval_text(summary["metrics"][m]["ci95_corrected"]) for m in names)])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in [header, *rows]]
    verdict = "succeeded" if summary["success"] else "FAILED"
    lines.insert(
        0,
        f"CV run {summary['cv_run_id']}: {summary['succeeded']}/{summary['n_folds']} folds "
        f"succeeded ({summary['required']} required): {verdict}",
    )
    if summary.get("test_train_ratio") is not None:
        lines.append(
            "ci95 takes the fold scores as independent and is too narrow (folds share training records); "
            "ci95 corrected is Nadeau and Bengio's corrected resampled t: variance x (1/J + n_test/n_train), "
            f"n_test/n_train = {summary['test_train_ratio']:.4g}"
        )
    if summary.get("gate"):
        lines.extend(gate_text(summary["gate"]))
    for failure in summary["failures"]:
        lines.append(f"fold {failure['fold']} ({failure['job_name']}): {failure['status']}: {failure['reason']}")
    return "\n".join(lines) + "\n"


def number_text(value: float | None) -> str:
    """A figure as reports show it: 6 significant digits, "-" for none."""
    return "-" if value is None else f"{value:.6g}"


def interval_text(value: list[float] | None) -> str:
    """An interval as reports show it: [low, high] to 4 significant digits."""
    return "-" if value is None else f"[{value[0]:.4g}, {value[1]:.4g}]"
