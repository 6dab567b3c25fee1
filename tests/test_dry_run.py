"""A dry run's plan and report, without Airflow: the folds a run would make, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_smx.core.dry_run import dry_run_report, dry_run_text
from airflow_smx.core.folds import split_dataset
from airflow_smx.core.request import parse_request
from tests.conftest import make_records, write_jsonl


def test_the_plan_of_a_dry_run_is_the_real_splits_and_nothing_is_written(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", make_records(300, seed=3))
    request = parse_request(
        {
            "name": "probe",
            "input": {"uri": path.as_uri(), "label": "class"},
            "output_uri": (tmp_path / "out").as_uri(),
            "cv": {"strategy": "stratified", "n_splits": 3, "random_state": 1, "holdout": 0.1},
            "backend": "sagemaker",
            "training": {
                "AlgorithmSpecification": {"TrainingImage": "xgboost:1", "TrainingInputMode": "File"},
                "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 2, "KeepAlivePeriodInSeconds": 600},
                "StoppingCondition": {"MaxRuntimeInSeconds": 3000},
            },
            "dry_run": True,
        }
    )
    folds_uri = (tmp_path / "out" / "folds").as_uri()
    planned = split_dataset(request.input, request.cv, folds_uri, write=False)
    assert not (tmp_path / "out").exists()
    written = split_dataset(request.input, request.cv, folds_uri)
    assert planned.to_json() == written.to_json()  # the same folds a real run makes

    names = [f"job-{fold.index}" for fold in planned.folds]
    report = dry_run_report(request, planned, names, "probe-run")
    # 3 folds and the refit train 3000 s on 2 instances; the folds' instances then idle 600 s warm
    assert report["worst_case"]["instance_hours"] == pytest.approx((3 + 1) * 2 * 3000 / 3600 + 3 * 2 * 600 / 3600)
    text = dry_run_text(report)
    assert text.startswith("Dry run probe-run: nothing was written and no job started.")
    assert f"300 records, {len(planned.classes)} classes" in text and f"hold-out {planned.n_holdout}" in text
    for fold in planned.folds:
        assert f"job-{fold.index}  {fold.n_train:>9}  {fold.n_validation:>10}" in text
    assert text.rstrip().endswith(
        "worst case 4 jobs x 2 x ml.m5.xlarge x 0.833333 h + 3 warm pools x 2 x 0.166667 h = 7.66667 instance-hours."
    )


def test_the_example_is_a_dry_run_of_the_xgboost_example():
    root = Path(__file__).parent.parent / "examples"
    dry = json.loads((root / "xgboost_csv_dry_run.json").read_text())
    assert parse_request(dry).dry_run is True
    assert {**dry, "dry_run": False} == {**json.loads((root / "xgboost_csv.json").read_text()), "dry_run": False}
