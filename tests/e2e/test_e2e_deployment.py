"""The DAG in a real deployment: triggered over REST, folds deferred to the triggerer, the pool obeyed.

Figures (trigger-to-success time, most jobs at once against the pool) go to
build/e2e/artifacts/e2e-report.json and the test output.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest
import requests

from tests.e2e.deployment import (
    BUCKET,
    DAG_ID,
    MULTI_DAG_ID,
    POOL_SLOTS,
    SECRET_TEMPLATE,
    Deployment,
    diagnose,
    record,
    sagemaker_request,
    start_run,
    wait_for,
)

pytestmark = pytest.mark.e2e


def mark_failed(deployment: Deployment, run_id: str) -> None:
    """What a user's "Mark run as failed" does."""
    response = deployment.airflow.api("PATCH", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", json={"state": "failed"})
    assert response.status_code == 200, response.text


def fold_logs(deployment: Deployment, run_id: str, ti: dict[str, Any]) -> list[str]:
    """Every try's log of a fold task; a try whose log the API cannot find is left out."""
    logs = []
    for try_number in range(1, ti["try_number"] + 1):
        try:
            logs.append(deployment.airflow.task_log(run_id, ti["task_id"], ti["map_index"], try_number))
        except requests.HTTPError:
            continue
    return logs


def test_airflow_lists_the_provider(deployment: Deployment) -> None:
    listing = deployment.airflow.cli("providers", "list")
    assert "airflow-smx" in listing
    record("deployment", **{k: round(v, 1) for k, v in deployment.timings.items()})


@pytest.mark.parametrize(
    ("dag_id", "n_splits", "instances", "most_jobs"),
    [(DAG_ID, 5, 1, POOL_SLOTS), (MULTI_DAG_ID, 3, 2, 1)],
    ids=["5 folds x 1 instance", "3 folds x 2 instances"],
)
def test_a_run_succeeds_within_the_pool(
    deployment: Deployment, dag_id: str, n_splits: int, instances: int, most_jobs: int
) -> None:
    name = f"e2e-{n_splits}x{instances}"
    run_id = start_run(deployment, sagemaker_request(name, n_splits=n_splits, instances=instances), dag_id)
    watched = deployment.airflow.watch(run_id, dag_id=dag_id)

    assert watched.state == "success", diagnose(deployment, run_id, dag_id)
    train_task = "train_fold" if instances == 1 else f"train_fold_x{instances}"
    if dag_id == DAG_ID:  # the plain graph: every task of the run ran, none was skipped
        assert set(watched.seen) == {
            "check_request",
            "split_dataset",
            "train_fold",
            "aggregate_results",
            "stop_unfinished_jobs",
        }
        assert all(
            states <= {"scheduled", "queued", "running", "deferred", "success", "up_for_retry", None}
            for states in watched.seen.values()
        ), watched.seen
    else:  # several fold tasks: the one its folds need ran, the other was skipped
        assert watched.seen["train_fold"] - {None} == {"skipped"}, watched.seen
        assert "success" in watched.seen["train_fold_x2_folds"]
    # Every fold deferred to our trigger, and a deferred task resumes only on its trigger's event,
    # which only a triggerer fires: the waits went through the triggerer.
    assert "deferred" in watched.seen[train_task], watched.seen
    trigger = "airflow_smx.triggers.sagemaker_fold.SageMakerFoldTrainingTrigger"
    assert watched.triggers == {(train_task, fold): trigger for fold in range(n_splits)}
    folds = [ti for ti in deployment.airflow.task_instances(run_id, dag_id) if ti["task_id"] == train_task]
    jobs = deployment.aws.jobs(run_id)
    assert len(jobs) == n_splits
    assert {job["status"] for job in jobs.values()} == {"Completed"}
    # the conf's "{{ var.value.smx_e2e_secret }}" is data: never rendered by the worker
    assert {job["hyperparameters"]["note"] for job in jobs.values()} == {SECRET_TEMPLATE}
    peak = deployment.aws.peak(run_id)
    assert peak["instances"] <= POOL_SLOTS
    assert peak["jobs"] == most_jobs  # the pool, not something else, set the pace

    summary = deployment.airflow.xcom(run_id, "aggregate_results", dag_id)
    assert (summary["n_folds"], summary["succeeded"], summary["failed"]) == (n_splits, n_splits, 0)
    accuracy = [0.80 + 0.02 * fold for fold in range(n_splits)]  # what the AWS endpoint reports per fold
    assert summary["metrics"]["validation:accuracy"]["mean"] == pytest.approx(sum(accuracy) / n_splits)
    key = summary["result"].removeprefix(f"s3://{BUCKET}/")
    stored = json.loads(deployment.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert stored["summary"] == {k: v for k, v in summary.items() if k != "result"}
    record(
        name,
        trigger_to_success_seconds=round(watched.seconds, 1),
        most_jobs_at_once=peak["jobs"],
        most_instances_at_once=peak["instances"],
        pool_slots=POOL_SLOTS,
        # A resumed fold can be killed by a stale executor event (apache/airflow#72716); its
        # retry re-attaches to the same job, so the run still succeeds with one job per fold.
        fold_retries=sum(ti["try_number"] - 1 for ti in folds),
    )


def test_a_bad_form_value_is_refused_at_trigger(deployment: Deployment) -> None:
    before = len(deployment.aws.jobs())
    response = deployment.airflow.trigger({"cv_n_splits": 1})  # the form's schema says minimum 2
    assert response.status_code == 400, response.text
    assert "Invalid input for param cv_n_splits" in response.text
    assert len(deployment.aws.jobs()) == before


def test_a_bad_request_fails_its_check_and_touches_nothing(deployment: Deployment) -> None:
    before = len(deployment.aws.jobs())
    conf = sagemaker_request("e2e-bad", n_splits=1)
    conf["output_uri"] = "s3://somebody-elses-bucket/cv"
    run_id = start_run(deployment, conf)
    watched = deployment.airflow.watch(run_id)
    assert watched.state == "failed"
    assert watched.seen["check_request"] == {"failed"} or "failed" in watched.seen["check_request"]
    assert "success" not in watched.seen.get("split_dataset", set())
    assert len(deployment.aws.jobs()) == before
    assert deployment.keys("runs/e2e-bad") == []


def test_cancelling_a_run_before_its_folds_start_fails_it(deployment: Deployment) -> None:
    """Marked failed while checking or splitting: the run ends failed (not a success: only its
    teardown was left, and Airflow would count that skipped), and no job starts."""
    run_id = start_run(deployment, sagemaker_request("e2e-early-cancel", n_splits=2))
    mark_failed(deployment, run_id)
    watched = deployment.airflow.watch(run_id, timeout=120)
    assert watched.state == "failed", watched.seen
    assert deployment.aws.jobs(run_id) == {}


@pytest.mark.parametrize("triggerer", ["watching", "paused"])
def test_cancelling_a_run_stops_its_training_jobs(deployment: Deployment, triggerer: str) -> None:
    """Marking a run failed stops its jobs within seconds: the triggers' on_kill when the triggerer
    is watching them, and the run's teardown whatever the triggerer does (here: frozen)."""
    run_id = start_run(deployment, sagemaker_request(f"e2e-cancel-{triggerer}", n_splits=2, seconds=3600))
    in_progress = lambda: [j for j in deployment.aws.jobs(run_id).values() if j["status"] == "InProgress"]  # noqa: E731
    wait_for("both folds' jobs to be InProgress", lambda: len(in_progress()) == 2, timeout=180)
    folds = lambda: [ti for ti in deployment.airflow.task_instances(run_id) if ti["task_id"] == "train_fold"]  # noqa: E731
    wait_for("both folds to defer", lambda: [ti["state"] for ti in folds()] == ["deferred", "deferred"], timeout=60)
    logs = lambda: "".join(log for ti in folds() for log in fold_logs(deployment, run_id, ti))  # noqa: E731
    if triggerer == "watching":
        wait_for("the triggerer to watch both jobs", lambda: logs().count(") starting") == 2, timeout=60)
    with deployment.airflow.paused("triggerer") if triggerer == "paused" else contextlib.nullcontext():
        cancelled = time.monotonic()
        mark_failed(deployment, run_id)
        stopped = lambda: {j["status"] for j in deployment.aws.jobs(run_id).values()} == {"Stopped"}  # noqa: E731
        try:
            wait_for("the cancelled run's jobs to stop", stopped, timeout=60)
        except TimeoutError:
            pytest.fail(f"jobs: {deployment.aws.jobs(run_id)}\n{diagnose(deployment, run_id)}")
        seconds = round(time.monotonic() - cancelled, 1)
        assert deployment.airflow.watch(run_id, timeout=120).state == "failed"
    assert seconds < 15
    if triggerer == "watching":  # the live triggerer calls our trigger's on_kill (the teardown may stop first)
        wait_for("the triggerer to call on_kill on both", lambda: logs().count("invoking on_kill") == 2, timeout=60)
    else:  # nothing but the teardown could have stopped them
        teardown = deployment.airflow.task_log(run_id, "stop_unfinished_jobs")
        assert teardown.count("Stopped training job") == 2, teardown
    record(f"cancel, triggerer {triggerer}", seconds_to_stop_jobs=seconds)
