"""Aggregating fold outcomes: statistics, failures, cost, and the run's verdict."""

from __future__ import annotations

import math
import statistics

import pytest
from scipy import stats

from airflow_smx.core.request import parse_request
from airflow_smx.core.results import FoldOutcome, cv_result, report, summarize

ACCURACY = [0.81, 0.84, 0.79, 0.86, 0.80]


def request(**overrides):
    return parse_request(
        {
            "name": "demo",
            "input": {"uri": "s3://b/in.jsonl"},
            "output_uri": "s3://b/out",
            "backend": "local",
            "local": {"command": "train"},
            "metrics": {"objective": "validation:accuracy", "direction": "maximize"},
            **overrides,
        }
    )


def completed(fold: int, accuracy: float, billable=100, training=250, instances=2, instance_type="ml.m5.xlarge"):
    return FoldOutcome(
        fold=fold,
        job_name=f"crossvalidator-demo-20261129-165941-fold{fold}",
        description={
            "TrainingJobStatus": "Completed",
            "FinalMetricDataList": [
                {"MetricName": "validation:accuracy", "Value": accuracy, "Timestamp": "2026-11-29T17:00:00+00:00"},
                {"MetricName": "train:loss", "Value": 1 - accuracy, "Timestamp": "2026-11-29T17:00:00+00:00"},
            ],
            "EnableManagedSpotTraining": True,
            "BillableTimeInSeconds": billable,
            "TrainingTimeInSeconds": training,
            "ResourceConfig": {"InstanceCount": instances, "InstanceType": instance_type},
        },
    )


def test_statistics_over_folds():
    outcomes = [completed(i, a) for i, a in enumerate(ACCURACY[:4])]
    outcomes.append(completed(4, ACCURACY[4], instance_type="ml.c5.2xlarge"))
    summary = summarize(request(), outcomes, "demo-20261129-165941")
    accuracy = summary["metrics"]["validation:accuracy"]
    std = statistics.stdev(ACCURACY)
    half = stats.t.ppf(0.975, 4) * std / math.sqrt(5)
    assert accuracy["n"] == 5 and accuracy["mean"] == pytest.approx(0.82)
    assert accuracy["std"] == pytest.approx(std) and (accuracy["min"], accuracy["max"]) == (0.79, 0.86)
    assert accuracy["ci95"] == pytest.approx([0.82 - half, 0.82 + half])
    assert accuracy["values"] == {str(i): a for i, a in enumerate(ACCURACY)}
    assert summary["objective"]["best_fold"] == 3 and summary["success"] is True
    assert summary["cost"] == {
        "billable_instance_seconds": 1000.0,
        "training_instance_seconds": 2500.0,
        "spot_savings": pytest.approx(0.6),
        "by_instance_type": {
            "ml.m5.xlarge": {"billable_instance_seconds": 800.0, "training_instance_seconds": 2000.0},
            "ml.c5.2xlarge": {"billable_instance_seconds": 200.0, "training_instance_seconds": 500.0},
        },
    }


def test_failed_folds_are_named_and_decide_the_verdict():
    outcomes = [completed(i, a) for i, a in enumerate(ACCURACY[:3])]
    outcomes.append(
        FoldOutcome(3, "job-3", {"TrainingJobStatus": "Failed", "FailureReason": "AlgorithmError: out of memory"})
    )
    outcomes.append(FoldOutcome(4, "job-4", None, error="ResourceLimitExceeded after 5 attempts"))
    strict = summarize(request(), outcomes, "r")
    assert strict["success"] is False and (strict["succeeded"], strict["failed"], strict["required"]) == (3, 2, 5)
    assert strict["failures"] == [
        {"fold": 3, "job_name": "job-3", "status": "Failed", "reason": "AlgorithmError: out of memory"},
        {"fold": 4, "job_name": "job-4", "status": "NotStarted", "reason": "ResourceLimitExceeded after 5 attempts"},
    ]
    assert strict["metrics"]["validation:accuracy"]["n"] == 3
    assert summarize(request(min_successful_folds=3), outcomes, "r")["success"] is True
    text = report(strict, outcomes)
    assert "3/5 folds succeeded (5 required): FAILED" in text
    assert "fold 3 (job-3): Failed: AlgorithmError: out of memory" in text


def test_cv_result_keeps_smx_validator_keys():
    outcomes = [completed(i, a) for i, a in enumerate(ACCURACY)]
    original = {"job_config": {"name": "demo"}, "crossvalidation": {"n_splits": 5}, "training": {"x": 1}}
    result = cv_result(request(), outcomes, "r", original)
    assert list(result)[:5] == ["job_config", "crossvalidation", "training", "splits", "summary"]
    assert result["job_config"] == {"name": "demo"} and len(result["splits"]) == 5
    assert cv_result(request(), outcomes, "r", {})["job_config"]["input_path"] == "s3://b/in.jsonl"


def test_a_single_fold_has_no_spread():
    summary = summarize(request(), [completed(0, 0.9)], "r")
    assert summary["metrics"]["validation:accuracy"]["std"] is None
    assert summary["metrics"]["validation:accuracy"]["ci95"] is None
    assert "ci95" in report(summary, [completed(0, 0.9)])


def test_the_corrected_interval_on_a_case_worked_by_hand():
    # Scores 0.80 ... 0.88 (mean 0.84, variance 0.001), J = 5, n_test/n_train = 1/4 (5 folds);
    # t(0.975, 4) = 2.776445. Plain: 2.776445 x sqrt(0.001 / 5) = 0.0392645. Corrected (Nadeau
    # and Bengio 2003): 2.776445 x sqrt(0.001 x (1/5 + 1/4)) = 0.0588973.
    outcomes = [completed(i, a) for i, a in enumerate([0.80, 0.82, 0.84, 0.86, 0.88])]
    summary = summarize(request(), outcomes, "r", test_train_ratio=0.25)
    accuracy = summary["metrics"]["validation:accuracy"]
    assert accuracy["ci95"] == pytest.approx([0.84 - 0.0392645, 0.84 + 0.0392645], abs=1e-6)
    assert accuracy["ci95_corrected"] == pytest.approx([0.84 - 0.0588973, 0.84 + 0.0588973], abs=1e-6)
    assert accuracy["variance_factor"] == pytest.approx(0.45)
    assert summary["objective"]["ci95_corrected"] == accuracy["ci95_corrected"]
    assert summary["test_train_ratio"] == 0.25
    text = report(summary, outcomes)
    assert "ci95 corrected" in text and "[0.7811, 0.8989]" in text and "n_test/n_train = 0.25" in text


def test_without_the_folds_sizes_there_is_no_corrected_interval():
    summary = summarize(request(), [completed(i, a) for i, a in enumerate(ACCURACY)], "r")
    assert summary["metrics"]["validation:accuracy"]["ci95_corrected"] is None
    assert "ci95 corrected" in report(summary, []) and "n_test/n_train" not in report(summary, [])


def test_only_spot_training_is_said_to_save():
    outcome = completed(0, 0.8, billable=0, training=6)  # the local backend bills nothing
    del outcome.description["EnableManagedSpotTraining"]
    assert summarize(request(), [outcome], "r")["cost"]["spot_savings"] is None
