"""Training job and trial names: SMX-Validator's shape, always valid, never colliding."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from airflow_smx.core.naming import VALID_NAME, attempt_name, cv_run_id, training_job_name, trial_name

WHEN = datetime(2026, 11, 29, 16, 59, 41, tzinfo=UTC)


def test_short_names_keep_smx_validators_shape():
    assert training_job_name("churn", WHEN, 3) == "crossvalidator-churn-20261129-165941-fold3"
    assert trial_name("churn", WHEN) == "crossvalidator-churn-20261129-165941"
    assert cv_run_id("churn", WHEN) == "churn-20261129-165941"


def test_odd_characters_are_cleaned():
    assert training_job_name("my_project", WHEN, 0) == "crossvalidator-my-project-20261129-165941-fold0"
    assert training_job_name("--Émile's  model!--", WHEN, 12) == "crossvalidator-mile-s-model-20261129-165941-fold12"


@pytest.mark.parametrize("fold", [0, 9, 1023])
def test_long_names_are_cut_with_a_hash_and_stay_valid(fold):
    names = [
        "a" * 100,
        "a" * 99 + "b",
        "image-classification-resnet50-pretrained-imagenet-v2",
        "x" * 27,
        "_" * 3 + "y" * 60,
    ]
    jobs = [training_job_name(n, WHEN, fold) for n in names]
    assert len(set(jobs)) == len(names)
    for job in jobs:
        assert job.startswith("crossvalidator-") and job.endswith(f"-20261129-165941-fold{fold}")
        for attempt in (job, attempt_name(job, 2), attempt_name(job, 99)):  # every retrain's name fits too
            assert len(attempt) <= 63 and VALID_NAME.match(attempt), attempt
    assert training_job_name("x" * 22, WHEN, 9) == f"crossvalidator-{'x' * 22}-20261129-165941-fold9"
    assert attempt_name(training_job_name("x" * 22, WHEN, 9), 12).endswith("-fold9-r12")


def test_different_runs_and_folds_never_share_a_name():
    later = datetime(2026, 11, 29, 16, 59, 42, tzinfo=UTC)
    names = {training_job_name("n" * 80, when, fold) for when in (WHEN, later) for fold in range(20)}
    assert len(names) == 40


def test_two_runs_never_share_names_even_with_one_timestamp_and_cleaned_name():
    from airflow_smx.core.naming import run_key

    keys = {run_key("smx_cross_validation", "manual__a"), run_key("smx_cross_validation", "manual__b")}
    keys.add(run_key("other_dag", "manual__a"))
    assert len(keys) == 3
    names = {training_job_name(n, WHEN, 0, k) for n in ("churn xgboost", "churn_xgboost") for k in keys}
    assert len(names) == 3  # the names clean to one; the run keys keep the jobs apart
    assert {cv_run_id("churn", WHEN, k) for k in keys} == {f"churn-20261129-165941-{k}" for k in keys}
