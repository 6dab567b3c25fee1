"""Faults a deployment meets, and a user's clear, in the real deployment.

Each case ends with the run in the state a user expects, no duplicate training job, and no job
left training without a task watching it. Figures go to build/e2e/artifacts/e2e-report.json.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from airflow_smx.core.folds import split_dataset
from airflow_smx.core.request import parse_request
from tests.e2e.deployment import (
    BUCKET,
    Deployment,
    dataset,
    diagnose,
    record,
    sagemaker_request,
    start_run,
    wait_for,
)

pytestmark = pytest.mark.e2e

ATTEMPT = re.compile(r"fold(\d+)(?:-r(\d+))?$")


def fold_tasks(deployment: Deployment, run_id: str) -> list[dict[str, Any]]:
    return [ti for ti in deployment.airflow.task_instances(run_id) if ti["task_id"] == "train_fold"]


def task(deployment: Deployment, run_id: str, task_id: str) -> dict[str, Any]:
    return next(ti for ti in deployment.airflow.task_instances(run_id) if ti["task_id"] == task_id)


def jobs_by_fold(deployment: Deployment, run_id: str) -> dict[int, list[tuple[int, str]]]:
    """Each fold's training jobs as (attempt, status), in attempt order."""
    folds: dict[int, list[tuple[int, str]]] = {}
    for name, job in deployment.aws.jobs(run_id).items():
        fold, attempt = ATTEMPT.search(name).groups()
        folds.setdefault(int(fold), []).append((int(attempt or 1), job["status"]))
    return {fold: sorted(attempts) for fold, attempts in sorted(folds.items())}


def finish(deployment: Deployment, run_id: str, expected: str = "success", timeout: float = 600) -> dict[str, Any]:
    """Wait for the run's end; check no job trains unwatched and none was made twice; the figures."""
    watched = deployment.airflow.watch(run_id, timeout=timeout)
    assert watched.state == expected, diagnose(deployment, run_id)
    jobs = deployment.aws.jobs(run_id)
    folds = jobs_by_fold(deployment, run_id)
    running = [name for name, job in jobs.items() if job["status"] in ("InProgress", "Stopping")]
    # a duplicate: a second completed job of one fold on the same folds (paid for twice)
    completed = Counter(
        (ATTEMPT.search(name).group(1), job["tags"]["airflow_smx_folds"])
        for name, job in jobs.items()
        if job["status"] == "Completed"
    )
    duplicates = sum(n - 1 for n in completed.values())
    assert running == [] and duplicates == 0, folds
    return {
        "state": watched.state,
        "seconds": round(watched.seconds, 1),
        "training_jobs": sum(map(len, folds.values())),
        "duplicate_jobs": duplicates,
        "jobs_left_running": len(running),
        # tries beyond the first, of every task (a stale executor event, apache/airflow#72716, adds some)
        "task_retries": sum(ti["try_number"] - 1 for ti in deployment.airflow.task_instances(run_id)),
    }


def wait_deferred(deployment: Deployment, run_id: str, n: int) -> None:
    deferred = lambda: [ti["state"] for ti in fold_tasks(deployment, run_id)].count("deferred") >= n  # noqa: E731
    wait_for(f"{n} folds to defer", deferred, timeout=180)
    in_progress = lambda: [j["status"] for j in deployment.aws.jobs(run_id).values()].count("InProgress") >= n  # noqa: E731
    wait_for(f"{n} jobs to train", in_progress, timeout=60)


@pytest.mark.parametrize("component", ["triggerer", "scheduler"])
def test_a_component_killed_mid_run_and_restarted_loses_and_duplicates_nothing(
    deployment: Deployment, component: str
) -> None:
    """SIGKILL (the component and its children: a lost machine) while folds wait in the triggerer."""
    run_id = start_run(deployment, sagemaker_request(f"e2e-crash-{component}", n_splits=3, seconds=15))
    wait_deferred(deployment, run_id, 2)
    deployment.airflow.crash(component)
    figures = finish(deployment, run_id)
    assert figures["training_jobs"] == 3
    tries = {ti["map_index"]: ti["try_number"] for ti in fold_tasks(deployment, run_id)}
    record(f"{component} killed mid-run", **figures, fold_tries=tries)


def local_split(tmp_path: Path, conf: dict[str, Any]) -> dict[str, bytes]:
    """The parts an uninterrupted split of the e2e data writes, by name."""
    data, folds = tmp_path / "train.csv", tmp_path / "folds"
    data.write_bytes(dataset())
    request = parse_request({**conf, "input": {**conf["input"], "uri": data.as_uri()}})
    assemble = request.channels.train.needs_single_object
    split_dataset(request.input, request.cv, folds.as_uri(), assemble_train=assemble)
    return {p.relative_to(folds).as_posix(): p.read_bytes() for p in folds.rglob("*.csv")}


def split_objects(deployment: Deployment, prefix: str) -> dict[str, bytes]:
    return {
        key.removeprefix(prefix): deployment.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        for key in deployment.keys(prefix)
    }


def folds_prefix(deployment: Deployment, run_id: str, name: str) -> str:
    run = deployment.airflow.xcom(run_id, "check_request")
    return f"runs/{name}/{run['cv_run_id']}/folds/"


def test_a_split_killed_mid_write_is_redone_byte_for_byte_with_no_stray_object(
    deployment: Deployment, tmp_path: Path
) -> None:
    name = "e2e-split-kill"
    conf = sagemaker_request(name, n_splits=5, seconds=2)
    deployment.aws.faults(seconds=120, s3_delay=1.0, s3_prefix=f"runs/{name}/")  # a slow store: time to kill
    run_id = start_run(deployment, conf)
    written = lambda: [k for k in deployment.keys(f"runs/{name}/") if "/folds/" in k]  # noqa: E731
    before = wait_for("the split to write its first object", written, timeout=120, interval=0.2)
    split = task(deployment, run_id, "split_dataset")
    deployment.airflow.kill_task(split["id"])
    deployment.aws.faults(seconds=0)
    prefix = folds_prefix(deployment, run_id, name)
    assert "plan.json" not in split_objects(deployment, prefix), "killed too late: the split had finished"

    figures = finish(deployment, run_id)
    assert task(deployment, run_id, "split_dataset")["try_number"] == 2
    objects = split_objects(deployment, prefix)
    plan = json.loads(objects["plan.json"])
    referenced = {"plan.json"}
    for fold in plan["folds"]:
        for uri in [fold["validation"], fold["train_manifest"], fold["train_file"], *fold["train_parts"]]:
            if uri:
                referenced.add(uri.removeprefix(f"s3://{BUCKET}/{prefix}"))
    assert set(objects) == referenced  # no stray object
    parts = local_split(tmp_path, conf)
    assert {k: v for k, v in objects.items() if k.endswith(".csv")} == parts  # byte for byte
    uploads = deployment.s3.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get("Uploads", [])
    record(
        "split killed mid-write",
        **figures,
        objects_before_kill=len(before),
        objects_after=len(objects),
        stray_objects=len(set(objects) - referenced),
        unfinished_multipart_uploads=len(uploads),
        parts_equal_to_an_uninterrupted_split=True,
    )


def test_a_throttling_storm_is_weathered(deployment: Deployment) -> None:
    """A third of SageMaker's training-job calls answer ThrottlingException for a minute."""
    before = deployment.aws.injected()["sagemaker_throttled"]
    deployment.aws.faults(seconds=60, sagemaker_throttle=1 / 3)
    run_id = start_run(deployment, sagemaker_request("e2e-throttled", n_splits=5))
    figures = finish(deployment, run_id)
    throttled = deployment.aws.injected()["sagemaker_throttled"] - before
    assert figures["training_jobs"] == 5 and throttled > 0
    record("throttling storm", **figures, calls_throttled=throttled)


def test_s3_slowdowns_during_the_split_change_nothing(deployment: Deployment, tmp_path: Path) -> None:
    """S3 answers 503 SlowDown to the first read and the first write of every object (the input,
    every part, manifest and the plan), and to a tenth of the others."""
    name = "e2e-slowdown"
    conf = sagemaker_request(name, n_splits=5, seconds=2)
    before = deployment.aws.injected()["s3_slowdown"]
    deployment.aws.faults(seconds=120, s3_slowdown_first=True, s3_slowdown=0.1, s3_prefix="")
    run_id = start_run(deployment, conf)
    wait_for("the split to end", lambda: task(deployment, run_id, "split_dataset")["state"] == "success", 300)
    slowed = deployment.aws.injected()["s3_slowdown"] - before
    deployment.aws.faults(seconds=0)
    figures = finish(deployment, run_id)
    objects = split_objects(deployment, folds_prefix(deployment, run_id, name))
    assert {k: v for k, v in objects.items() if k.endswith(".csv")} == local_split(tmp_path, conf)
    assert slowed >= len(objects)  # every object's write at least
    record("S3 SlowDown during the split", **figures, s3_calls_slowed=slowed)


def test_clearing_a_failed_fold_retrains_that_fold_alone(deployment: Deployment) -> None:
    """Fold 1's job fails (AlgorithmError): no retry is spent on it; the user's clear retrains it."""
    conf = sagemaker_request("e2e-clear-failed", n_splits=3, seconds=2)
    conf["training"]["HyperParameters"]["e2e_fail_fold"] = "1"  # the endpoint fails fold 1's first job
    run_id = start_run(deployment, conf)
    finish(deployment, run_id, expected="failed")
    assert {ti["map_index"]: ti["state"] for ti in fold_tasks(deployment, run_id)} == {
        0: "success",
        1: "failed",
        2: "success",
    }
    # final: no retry trained it again (a retry forced by apache/airflow#72716 reports it, no more)
    assert jobs_by_fold(deployment, run_id)[1] == [(1, "Failed")]

    cleared = deployment.airflow.clear(run_id, only_failed=True)  # as a user's script would
    figures = finish(deployment, run_id)
    assert jobs_by_fold(deployment, run_id) == {
        0: [(1, "Completed")],
        1: [(1, "Failed"), (2, "Completed")],
        2: [(1, "Completed")],
    }
    summary = deployment.airflow.xcom(run_id, "aggregate_results")
    fold1 = next(f for f in summary["attempts"] if f["fold"] == 1)
    assert [(a["status"], a["kind"]) for a in fold1["attempts"]] == [("Failed", "final"), ("Completed", None)]
    assert fold1["counts"].endswith("-fold1-r2") and summary["succeeded"] == 3
    record(
        "clear a failed fold",
        **figures,
        cleared=sorted({f"{ti['task_id']}[{ti['map_index']}]" for ti in cleared}),
        retrained_folds=[1],
    )


def test_clearing_a_finished_run_retrains_only_what_changed(deployment: Deployment) -> None:
    """Clear the whole run: with its data unchanged nothing trains again; after the input changed,
    every fold does (its folds are new)."""
    name = "e2e-clear-run"
    key = f"inputs/{name}.csv"
    deployment.s3.put_object(Bucket=BUCKET, Key=key, Body=dataset())
    conf = sagemaker_request(name, n_splits=2, seconds=2)
    conf["input"]["uri"] = f"s3://{BUCKET}/{key}"
    run_id = start_run(deployment, conf)
    finish(deployment, run_id)
    # (not == 1: Airflow 3.3's LocalExecutor can report a resumed fold's success before the fold
    # itself does, and the scheduler then retries it; the retry re-uses the job, as a clear does)
    tries = {ti["map_index"]: ti["try_number"] for ti in fold_tasks(deployment, run_id)}

    deployment.airflow.clear(run_id, only_failed=False)
    unchanged = finish(deployment, run_id)
    assert jobs_by_fold(deployment, run_id) == {0: [(1, "Completed")], 1: [(1, "Completed")]}
    cleared = {ti["map_index"]: ti["try_number"] for ti in fold_tasks(deployment, run_id)}
    assert all(cleared[fold] > tries[fold] for fold in tries), (tries, cleared)  # they ran, and re-used

    deployment.s3.put_object(Bucket=BUCKET, Key=key, Body=dataset(seed=6))
    deployment.airflow.clear(run_id, only_failed=False)
    changed = finish(deployment, run_id)
    assert jobs_by_fold(deployment, run_id) == {
        0: [(1, "Completed"), (2, "Completed")],
        1: [(1, "Completed"), (2, "Completed")],
    }
    record(
        "clear a finished run",
        unchanged_data={**unchanged, "jobs_trained_by_the_clear": 0},
        changed_data={**changed, "jobs_trained_by_the_clear": 2},
    )
