"""A fold's attempts: what a new try does with the latest, and which failures are transient."""

from __future__ import annotations

import pytest

from airflow_smx.core.attempts import FOLDS_TAG, Attempt, Step, first_since_clear, is_transient, next_step


def attempt(status: str, folds: str = "a", number: int = 1) -> Attempt:
    return Attempt(number, {"TrainingJobName": f"job-fold0-r{number}", "TrainingJobStatus": status}, {FOLDS_TAG: folds})


@pytest.mark.parametrize(
    ("latest", "step"),
    [
        (None, (Step.CREATE, 1)),
        (attempt("InProgress"), (Step.ATTACH, 1)),
        (attempt("InProgress", folds="b"), (Step.REPLACE, 2)),
        (attempt("Stopping"), (Step.REPLACE, 2)),
        (attempt("Completed", number=3), (Step.REUSE, 3)),
        (attempt("Completed", folds="b", number=3), (Step.CREATE, 4)),
        (attempt("Failed", number=2), (Step.CREATE, 3)),
        (attempt("Stopped"), (Step.CREATE, 2)),
    ],
)
def test_what_a_try_does_with_the_latest_attempt(latest, step):
    assert next_step(latest, "a") == step


def test_an_automatic_retry_retrains_a_transient_failure_but_not_a_final_one():
    final = Attempt(
        1, {"TrainingJobName": "j", "TrainingJobStatus": "Failed", "FailureReason": "AlgorithmError: x"}, {}
    )
    transient = Attempt(1, {**final.description, "FailureReason": "CapacityError: none left"}, {})
    assert next_step(final, "", fresh=False) == (Step.REPORT, 1)  # its try died before reporting it
    assert next_step(transient, "", fresh=False) == (Step.CREATE, 2)
    assert next_step(final, "", fresh=True) == (Step.CREATE, 2)  # a user cleared it


@pytest.mark.parametrize(
    ("try_number", "max_tries", "fresh"),
    [(1, 6, True), (2, 6, False), (7, 6, False), (2, 7, True), (3, 7, False), (8, 13, True)],
)
def test_a_try_is_fresh_when_it_is_the_first_since_the_run_started_or_was_cleared(try_number, max_tries, fresh):
    # a task with 6 retries; a clear after try n sets max_tries to n + 6
    assert first_since_clear(try_number, max_tries, 6) is fresh


@pytest.mark.parametrize(
    ("status", "secondary", "reason", "transient"),
    [
        ("Failed", "Failed", "CapacityError: Unable to provision requested ML compute capacity.", True),
        ("Failed", "Failed", "InternalServerError: We encountered an internal error. Please try again.", True),
        ("Failed", "Failed", "AlgorithmError: ValueError: could not convert string to float", False),
        ("Failed", "Failed", "ClientError: Data download failed: NoSuchKey", False),
        ("Failed", "Failed", "ClientError: InternalServerError in the hyperparameters", False),  # the prefix decides
        ("Failed", "Failed", None, False),  # unknown: not worth a paid retry
        ("Stopped", "MaxWaitTimeExceeded", None, True),  # spot capacity never came back within MaxWait
        ("Stopped", "MaxRuntimeExceeded", None, False),
        ("Stopped", "Stopped", None, False),  # someone stopped it
    ],
)
def test_which_failures_the_tasks_retries_train_again(status, secondary, reason, transient):
    description = {"TrainingJobStatus": status, "SecondaryStatus": secondary}
    if reason:
        description["FailureReason"] = reason
    assert is_transient(description) is transient


def test_secondary_status_transitions_stand_in_for_a_missing_secondary_status():
    transitions = [{"Status": "Starting"}, {"Status": "Interrupted"}, {"Status": "MaxWaitTimeExceeded"}]
    assert is_transient({"TrainingJobStatus": "Stopped", "SecondaryStatusTransitions": transitions})
