"""What a deployment must do whatever its executor: the checks the LocalExecutor and the
CeleryExecutor tests share. Each asserts, and returns the figures worth recording."""

from __future__ import annotations

import json
import re
import time
from typing import Any
from urllib.parse import quote

import pytest
import requests

from tests.e2e.deployment import (
    BUCKET,
    CELERY_WORKER,
    DAG_ID,
    POOL_SLOTS,
    SECRET_TEMPLATE,
    Deployment,
    Watched,
    diagnose,
    start_run,
    wait_for,
)

TRIGGER = "airflow_smx.triggers.sagemaker_fold.SageMakerFoldTrainingTrigger"
UNEVENTFUL = {"scheduled", "queued", "running", "deferred", "success", "up_for_retry", None}


def mark_failed(deployment: Deployment, run_id: str, dag_id: str = DAG_ID) -> None:
    """What a user's "Mark run as failed" does."""
    response = deployment.airflow.api("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", json={"state": "failed"})
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


def succeeds(
    deployment: Deployment, conf: dict[str, Any], train_task: str, dag_id: str = DAG_ID
) -> tuple[str, Watched]:
    """Run ``conf`` to success: its fold task ran (and its refit task, unless ``refit`` is off:
    then the refit's tasks skip), every other fold task was skipped (where the graph has
    several, each has a task selecting its folds: those ran), and nothing failed or was retried
    but a fold (apache/airflow#72716)."""
    run_id = start_run(deployment, conf, dag_id)
    watched = deployment.airflow.watch(run_id, dag_id=dag_id)
    assert watched.state == "success", diagnose(deployment, run_id, dag_id)
    refit = conf.get("refit", True)
    ran = {train_task, *([final_task(train_task)] if refit else [])}
    trainers = {task_id for task_id in watched.seen if re.fullmatch(r"train_(fold|final)(_x\d+|_local)?", task_id)}
    for task_id, states in watched.seen.items():
        if task_id in trainers - ran or (task_id == "register_model" and not refit):
            assert states - {None} == {"skipped"}, watched.seen
        else:
            assert states <= UNEVENTFUL, watched.seen
    return run_id, watched


def final_task(train_task: str) -> str:
    """The refit's task beside a fold task: train_fold_x2 -> train_final_x2."""
    return train_task.replace("train_fold", "train_final")


def run_within_pool(
    deployment: Deployment, conf: dict[str, Any], dag_id: str = DAG_ID, instances: int = 1, most_jobs: int = POOL_SLOTS
) -> tuple[str, Watched, dict[str, Any]]:
    """Run ``conf`` to success: every fold deferred to our trigger, one Completed job per fold, at
    most ``most_jobs`` at once (the pool), and the aggregate in XCom and S3. The run, and its figures."""
    n_splits = conf["cv"]["n_splits"]
    train_task = "train_fold" if instances == 1 else f"train_fold_x{instances}"
    run_id, watched = succeeds(deployment, conf, train_task, dag_id)
    # Every fold deferred to our trigger, and a deferred task resumes only on its trigger's event,
    # which only a triggerer fires: the waits went through the triggerer.
    assert "deferred" in watched.seen[train_task], watched.seen
    deferred = {(train_task, fold) for fold in range(n_splits)} | (
        {(final_task(train_task), 0)} if conf["refit"] else set()
    )
    assert watched.triggers == dict.fromkeys(deferred, TRIGGER)
    folds = [ti for ti in deployment.airflow.task_instances(run_id, dag_id) if ti["task_id"] == train_task]
    jobs = deployment.aws.jobs(run_id)
    assert len(jobs) == n_splits + int(conf["refit"])  # the folds', and the refit's after them
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
    registered = stored["summary"].pop("model", None)  # added by register_model, after the aggregate
    assert stored["summary"] == {k: v for k, v in summary.items() if k != "result"}
    assert (registered is not None) == conf["refit"], registered
    # the UI's links: each fold to its job and logs, the aggregate to the report in the S3 console
    fold = deployment.airflow.extra_links(run_id, train_task, 1, dag_id)
    job = stored["splits"][1]["TrainingJobName"]
    assert fold["SageMaker training job"].endswith(f"/sagemaker/home?region=us-east-1#/jobs/{job}"), fold
    assert fold["Training job logs"].endswith(f"TrainingJobs$3FlogStreamNameFilter$3D{job}"), fold
    report = deployment.airflow.extra_links(run_id, "aggregate_results", dag_id=dag_id)["CV report"]
    report_key = quote(key.replace("cv_result.json", "cv_report.html"), safe="")
    assert report.endswith(f"/s3/object/{BUCKET}?region=us-east-1&prefix={report_key}"), report
    return (
        run_id,
        watched,
        {
            "trigger_to_success_seconds": round(watched.seconds, 1),
            "most_jobs_at_once": peak["jobs"],
            "most_instances_at_once": peak["instances"],
            "pool_slots": POOL_SLOTS,
            # A resumed fold can be killed by a stale executor event (apache/airflow#72716); its
            # retry re-attaches to the same job, so the run still succeeds with one job per fold.
            "fold_retries": sum(ti["try_number"] - 1 for ti in folds),
        },
    )


def cancel_stops_jobs(deployment: Deployment, conf: dict[str, Any], triggerer: str) -> float:
    """Mark a run of two long folds failed once both train: its jobs stop within seconds, by the
    triggers' on_kill while the triggerer is ``"watching"`` them, and by the run's teardown
    whatever the triggerer does (``"down"``: killed, started again after). The seconds from the mark to every job stopped.

    Each path is shown alone: with the triggerer watching, what runs tasks (the scheduler's
    LocalExecutor, or the Celery worker) is down, so the teardown cannot stop the jobs first.
    """
    run_id = start_run(deployment, conf)
    in_progress = lambda: [j for j in deployment.aws.jobs(run_id).values() if j["status"] == "InProgress"]  # noqa: E731
    wait_for("both folds' jobs to be InProgress", lambda: len(in_progress()) == 2, timeout=180)
    folds = lambda: [ti for ti in deployment.airflow.task_instances(run_id) if ti["task_id"] == "train_fold"]  # noqa: E731
    wait_for("both folds to defer", lambda: [ti["state"] for ti in folds()] == ["deferred", "deferred"], timeout=60)
    logs = lambda: "".join(log for ti in folds() for log in fold_logs(deployment, run_id, ti))  # noqa: E731
    if triggerer == "watching":
        wait_for("the triggerer to watch both jobs", lambda: logs().count(") starting") == 2, timeout=60)
    task_runner = CELERY_WORKER if CELERY_WORKER in deployment.airflow.components else "scheduler"
    with deployment.airflow.down("triggerer" if triggerer == "down" else task_runner):
        cancelled = time.monotonic()
        mark_failed(deployment, run_id)
        stopped = lambda: {j["status"] for j in deployment.aws.jobs(run_id).values()} == {"Stopped"}  # noqa: E731
        try:
            wait_for("the cancelled run's jobs to stop", stopped, timeout=60)
        except TimeoutError:
            pytest.fail(f"jobs: {deployment.aws.jobs(run_id)}\n{diagnose(deployment, run_id)}")
        seconds = round(time.monotonic() - cancelled, 1)
        if triggerer == "watching":  # nothing but the triggers' on_kill could have stopped them
            wait_for("the triggerer to call on_kill on both", lambda: logs().count("invoking on_kill") == 2, timeout=60)
    assert deployment.airflow.watch(run_id, timeout=120).state == "failed"
    assert seconds < 15
    if triggerer == "down":  # nothing but the teardown could have stopped them
        teardown = deployment.airflow.task_log(run_id, "stop_unfinished_jobs")
        assert teardown.count("Stopped training job") == 2, teardown
    return seconds
