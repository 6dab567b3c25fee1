"""The DAG in a real deployment: triggered over REST, folds deferred to the triggerer, the pool obeyed.

Figures (trigger-to-success time, most jobs at once against the pool) go to
build/e2e/artifacts/e2e-report.json and the test output.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from tests.e2e.checks import cancel_stops_jobs, mark_failed, run_within_pool, succeeds
from tests.e2e.deployment import (
    BUCKET,
    DAG_ID,
    MULTI_DAG_ID,
    POOL_SLOTS,
    Deployment,
    Watched,
    diagnose,
    record,
    sagemaker_request,
    start_run,
)

pytestmark = pytest.mark.e2e

PLAIN_GRAPH = {
    *("check_request", "split_dataset", "train_fold", "aggregate_results"),
    *("refit_job", "train_final", "register_model", "stop_unfinished_jobs"),
}


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
    conf = sagemaker_request(name, n_splits=n_splits, instances=instances, refit=dag_id == DAG_ID)
    _, watched, figures = run_within_pool(deployment, conf, dag_id, instances, most_jobs)
    if dag_id == DAG_ID:  # a plain SageMaker deployment's graph: every task ran, none was skipped
        assert set(watched.seen) == PLAIN_GRAPH
    record(name, **figures)


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


@pytest.mark.parametrize("triggerer", ["watching", "down"])
def test_cancelling_a_run_stops_its_training_jobs(deployment: Deployment, triggerer: str) -> None:
    """Marking a run failed stops its jobs within seconds: the triggers' on_kill when the triggerer
    is watching them, and the run's teardown whatever the triggerer does (here: down)."""
    conf = sagemaker_request(f"e2e-cancel-{triggerer}", n_splits=2, seconds=3600)
    record(f"cancel, triggerer {triggerer}", seconds_to_stop_jobs=cancel_stops_jobs(deployment, conf, triggerer))


def test_retraining_registers_a_version_only_when_the_gate_lets_the_model_through(deployment: Deployment) -> None:
    """Three runs of one request over REST, each against the last promoted: the first registers
    version 1; a worse model (every score 0.05 lower, margin 0.01) is stopped by the gate and
    registers nothing; a better one (0.02 higher) registers version 2, with its hold-out score."""
    sagemaker = boto3.client(
        "sagemaker",
        endpoint_url=deployment.aws.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    group = "crossvalidator-e2e-retrain"

    def versions() -> list[int]:
        listed = sagemaker.list_model_packages(ModelPackageGroupName=group, ModelPackageType="Versioned")
        return sorted(p["ModelPackageVersion"] for p in listed["ModelPackageSummaryList"])

    def results() -> set[str]:
        return {k for k in deployment.keys("runs/e2e-retrain/") if k.endswith("/results/cv_result.json")}

    def run(offset: float) -> tuple[str, Watched, dict[str, Any]]:
        """A run of a model ``offset`` better than the endpoint's usual; its result's summary."""
        conf = sagemaker_request("e2e-retrain", n_splits=3, seconds=2, refit=True)
        conf["cv"]["holdout"] = 0.2
        conf["gate"] = {"baseline": "latest", "margin": 0.01}
        conf["training"]["HyperParameters"]["e2e_score_offset"] = str(offset)
        before = results()
        run_id = start_run(deployment, conf)
        watched = deployment.airflow.watch(run_id)
        (key,) = results() - before
        return run_id, watched, json.loads(deployment.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())["summary"]

    first_id, first, summary = run(0.0)
    assert first.state == "success", diagnose(deployment, first_id)
    assert summary["gate"]["passed"] and summary["gate"]["baseline"] is None and versions() == [1]
    assert summary["model"]["version"] == 1 and summary["model"]["approval_status"] == "PendingManualApproval"
    # the refit validates on the hold-out: its scores are the test scores
    assert summary["model"]["test"] == {"validation:accuracy": 0.80, "validation:auc": 0.90}
    first_cv_run = summary["cv_run_id"]

    worse_id, worse, summary = run(-0.05)
    assert worse.state == "failed" and "failed" in worse.seen["aggregate_results"], worse.seen
    (check,) = summary["gate"]["checks"]
    assert summary["promoted"] is False and summary["gate"]["baseline"] == first_cv_run
    # every fold 0.05 worse on the same folds: no spread to test, so the margin alone decides
    assert check["passed"] is False and check["difference"] == pytest.approx(-0.05)
    assert "model" not in summary and versions() == [1]
    assert [name for name in deployment.aws.jobs(worse_id) if name.endswith("-final")] == []  # nothing refit

    better_id, better, summary = run(0.02)
    assert better.state == "success", diagnose(deployment, better_id)
    assert summary["gate"]["baseline"] == first_cv_run and summary["model"]["version"] == 2 and versions() == [1, 2]
    record(
        "retraining: version 1, a worse model stopped, version 2",
        seconds=[round(w.seconds, 1) for w in (first, worse, better)],
        test_scores=summary["model"]["test"],
    )


def test_warm_pools_spare_later_folds_the_wait_for_instances(deployment: Deployment) -> None:
    """10 folds on a pool of 2, every job waiting PROVISION seconds for new instances (SageMaker's
    minutes, shortened): a request that opts out of warm pools waits in each of its 5 waves; with
    the deployment's default, only the first wave waits, and each later fold starts on the warm
    instances of one that ended. Trigger-to-result of both go to the report (and bench/README.md)."""
    provision, figures = 8, {}
    for label, keep_alive in (("opted out", 0), ("warm pools", None)):
        conf = sagemaker_request("e2e-cold" if keep_alive == 0 else "e2e-warm", n_splits=10, seconds=2)
        conf["training"]["HyperParameters"]["e2e_provision_seconds"] = str(provision)
        # a volume no other test's jobs have: their warm pools (still available) cannot match
        conf["training"]["ResourceConfig"]["VolumeSizeInGB"] = 11
        if keep_alive is not None:
            conf["training"]["ResourceConfig"]["KeepAlivePeriodInSeconds"] = keep_alive
        run_id, watched = succeeds(deployment, conf, "train_fold")
        jobs = deployment.aws.jobs(run_id)
        assert len(jobs) == 10 and deployment.aws.peak(run_id)["instances"] <= POOL_SLOTS
        started_on = [job["started_on"] for job in jobs.values()]
        figures[label] = {
            "trigger_to_result_seconds": round(watched.seconds, 1),
            "jobs_on_new_instances": started_on.count("new instances"),
        }
        if keep_alive is None:  # each reused pool was left by another job of this run
            assert set(started_on) - {"new instances"} <= set(jobs), started_on
    assert figures["opted out"]["jobs_on_new_instances"] == 10
    assert figures["warm pools"]["jobs_on_new_instances"] == POOL_SLOTS  # the first wave only
    record("warm pools, 10 folds on a pool of 2", provision_seconds=provision, train_seconds=2, **figures)
