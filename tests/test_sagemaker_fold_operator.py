"""SageMakerFoldTrainingOperator against moto: create once, re-attach, stop, back off, clean XCom."""

from __future__ import annotations

import asyncio
import importlib
import json
import threading
import time
from types import SimpleNamespace

import pytest

from airflow_smx.compat import DEFERRAL_TIMEOUT, AirflowException, AirflowFailException
from airflow_smx.operators.sagemaker_fold import SageMakerFoldTrainingOperator
from airflow_smx.triggers.sagemaker_fold import SageMakerFoldTrainingTrigger
from tests.versions import TRIGGER_FAILURE, TaskDeferralError, TaskDeferred

ROLE = "arn:aws:iam::123456789012:role/sagemaker"


FIRST = "crossvalidator-demo-20261129-165941-fold0"


def fold_config(s3, name: str = FIRST, run: str = "run-a", folds: str = "folds-1") -> dict:
    s3.put_object(Bucket="bucket", Key="cv/folds/part-00000.csv", Body=b"1,2\n")
    s3.put_object(Bucket="bucket", Key="cv/folds/fold-00000/train.manifest", Body=b"[]\n")
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": "xgboost:1", "TrainingInputMode": "File"},
        "RoleArn": ROLE,
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "ManifestFile",
                        "S3Uri": "s3://bucket/cv/folds/fold-00000/train.manifest",
                    }
                },
            },
            {
                "ChannelName": "validation",
                "DataSource": {
                    "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bucket/cv/folds/part-00000.csv"}
                },
            },
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://bucket/cv/models"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 7200},
        "Tags": [{"Key": "airflow_run_id", "Value": run}, {"Key": "airflow_smx_folds", "Value": folds}],
    }


def operator(config: dict, **kwargs) -> SageMakerFoldTrainingOperator:
    return SageMakerFoldTrainingOperator(
        task_id="train_fold", config=config, aws_conn_id=None, check_interval=1, **kwargs
    )


def test_creates_defers_with_a_timeout_from_the_stopping_condition_and_returns_clean_json(s3, sagemaker):
    config = fold_config(s3)
    task = operator(config)
    with pytest.raises(TaskDeferred) as deferred:
        task.execute({})
    assert len(sagemaker.creates) == 1
    assert deferred.value.timeout.total_seconds() == 7200 + 3600
    assert deferred.value.trigger.job_name == config["TrainingJobName"]
    trigger = deferred.value.trigger  # amazon before 9.32 names it max_attempts
    assert (getattr(trigger, "attempts", None) or trigger.max_attempts) == 10801  # outlasts the deferral timeout

    sagemaker.finish(config["TrainingJobName"], metrics={"validation:auc": 0.91})
    result = operator(fold_config(s3)).execute_complete({}, {"status": "success"})
    assert json.loads(json.dumps(result)) == result  # JSON-clean
    assert "ResponseMetadata" not in result and result["TrainingJobStatus"] == "Completed"
    assert result["CreationTime"].startswith("20") and "T" in result["CreationTime"]
    assert result["FinalMetricDataList"][0]["MetricName"] == "validation:auc"


@pytest.mark.parametrize(("status", "outcome"), [("InProgress", "defers"), ("Completed", "returns")])
def test_a_retried_task_reattaches_and_never_creates_twice(s3, sagemaker, status, outcome):
    config = fold_config(s3)
    with pytest.raises(TaskDeferred):
        operator(dict(config)).execute({})  # the first try, whose worker then died
    if status != "InProgress":
        sagemaker.finish(FIRST, status=status, metrics={"m": 1.0})
    retry = operator(fold_config(s3))
    if outcome == "defers":
        with pytest.raises(TaskDeferred) as deferred:
            retry.execute({})
        assert deferred.value.trigger.job_name == FIRST
    else:
        assert retry.execute({})["TrainingJobName"] == FIRST
    assert [c["name"] for c in sagemaker.creates] == [FIRST]


def end_first_attempt(s3, sagemaker, status: str, reason: str | None) -> Exception:
    """Train the fold's first attempt to ``status``; what its task raised."""
    with pytest.raises(TaskDeferred):
        operator(fold_config(s3)).execute({})
    sagemaker.finish(FIRST, status=status, reason=reason)
    with pytest.raises(AirflowException) as failed:
        operator(fold_config(s3)).execute_complete({}, {"status": "failed"})
    return failed.value


@pytest.mark.parametrize(
    ("status", "reason"),
    [("Failed", "AlgorithmError: ValueError: bad label"), ("Failed", "ClientError: no such key"), ("Stopped", None)],
)
def test_a_final_failure_spends_no_retry_and_a_clear_trains_a_new_attempt(s3, sagemaker, status, reason):
    failed = end_first_attempt(s3, sagemaker, status, reason)
    assert isinstance(failed, AirflowFailException)  # Airflow does not retry it
    assert "final" in str(failed) and (reason or "Stopped") in str(failed)

    with pytest.raises(TaskDeferred) as deferred:  # the user clears the task: its next try
        operator(fold_config(s3)).execute({})
    second = f"{FIRST}-r2"
    assert deferred.value.trigger.job_name == second
    assert [c["name"] for c in sagemaker.creates] == [FIRST, second]
    attempt_tags = {t["Key"]: t["Value"] for t in sagemaker.creates[1]["tags"]}
    assert attempt_tags["airflow_smx_attempt"] == "2" and attempt_tags["airflow_run_id"] == "run-a"

    sagemaker.finish(second, metrics={"acc": 0.9})
    result = operator(fold_config(s3)).execute_complete({}, {"status": "success"})
    assert result["TrainingJobName"] == second and result["TrainingJobStatus"] == "Completed"


def test_an_automatic_retry_never_retrains_a_final_failure_its_dead_try_did_not_report(s3, sagemaker):
    """The try waiting on the job died (a lost worker, apache/airflow#72716's stale event) after
    the job failed for good: Airflow's retry ends as the job did, paying for no second job."""
    with pytest.raises(TaskDeferred):
        operator(fold_config(s3), retries=6).execute({})
    sagemaker.finish(FIRST, status="Failed", reason="AlgorithmError: bad label")
    retry = {"ti": SimpleNamespace(try_number=2, max_tries=6)}
    with pytest.raises(AirflowFailException, match="AlgorithmError"):
        operator(fold_config(s3), retries=6).execute(retry)
    assert len(sagemaker.creates) == 1
    cleared = {"ti": SimpleNamespace(try_number=3, max_tries=8)}  # the user clears it after try 2
    with pytest.raises(TaskDeferred):
        operator(fold_config(s3), retries=6).execute(cleared)
    assert len(sagemaker.creates) == 2


@pytest.mark.parametrize(
    "reason",
    [
        "CapacityError: Unable to provision requested ML compute capacity. Please retry using a different ML instance type.",
        "InternalServerError: We encountered an internal error. Please try again.",
    ],
)
def test_a_transient_failure_is_retrained_by_the_tasks_own_retry(s3, sagemaker, reason):
    failed = end_first_attempt(s3, sagemaker, "Failed", reason)
    assert not isinstance(failed, AirflowFailException) and "transient" in str(failed)
    with pytest.raises(TaskDeferred) as deferred:  # Airflow's automatic retry
        operator(fold_config(s3), retries=6).execute({"ti": SimpleNamespace(try_number=2, max_tries=6)})
    assert deferred.value.trigger.job_name == f"{FIRST}-r2"


def test_spot_capacity_beyond_max_wait_is_transient_and_max_runtime_is_not(s3, sagemaker):
    with pytest.raises(TaskDeferred):
        operator(fold_config(s3)).execute({})
    job = sagemaker.job(FIRST)
    job.training_job_status, job.secondary_status = "Stopped", "MaxWaitTimeExceeded"
    with pytest.raises(AirflowException, match="transient") as failed:
        operator(fold_config(s3)).execute_complete({}, {})
    assert not isinstance(failed.value, AirflowFailException)

    with pytest.raises(TaskDeferred):
        operator(fold_config(s3)).execute({})
    job = sagemaker.job(f"{FIRST}-r2")
    job.training_job_status, job.secondary_status = "Stopped", "MaxRuntimeExceeded"
    with pytest.raises(AirflowFailException, match="final"):
        operator(fold_config(s3)).execute_complete({}, {})


def test_a_completed_fold_is_reused_on_the_same_folds_and_retrained_on_new_ones(s3, sagemaker):
    with pytest.raises(TaskDeferred):
        operator(fold_config(s3)).execute({})
    sagemaker.finish(FIRST, metrics={"acc": 0.5})
    assert operator(fold_config(s3)).execute({})["TrainingJobName"] == FIRST  # cleared, same data: re-used
    with pytest.raises(TaskDeferred) as deferred:  # the input changed and the run was cleared
        operator(fold_config(s3, folds="folds-2")).execute({})
    assert deferred.value.trigger.job_name == f"{FIRST}-r2"
    assert len(sagemaker.creates) == 2


def test_a_job_still_training_on_other_folds_is_stopped_and_replaced(s3, sagemaker):
    with pytest.raises(TaskDeferred):
        operator(fold_config(s3)).execute({})
    with pytest.raises(TaskDeferred) as deferred:
        operator(fold_config(s3, folds="folds-2")).execute({})
    assert sagemaker.stops == [FIRST]
    assert deferred.value.trigger.job_name == f"{FIRST}-r2"


def test_a_job_of_another_run_with_the_same_name_is_not_adopted(s3, sagemaker):
    with pytest.raises(TaskDeferred):
        operator(fold_config(s3, run="run-a")).execute({})
    with pytest.raises(AirflowException, match="belongs to Airflow run 'run-a', not 'run-b'"):
        operator(fold_config(s3, run="run-b")).execute({})
    assert len(sagemaker.creates) == 1


def racing_create(sagemaker, config):
    """Another client creates ``config``'s job just before ours (print_log=False: the hook would
    otherwise sleep its 30 s check_interval once after creating)."""

    def create(name):
        sagemaker.before_create = None
        operator(config).hook.create_training_job(config, wait_for_completion=False, print_log=False)

    return create


def test_a_job_another_run_creates_first_in_a_race_is_not_adopted(s3, sagemaker):
    """CreateTrainingJob answers ResourceInUse: the owner is checked there too."""

    sagemaker.before_create = racing_create(sagemaker, fold_config(s3, run="run-b"))
    with pytest.raises(AirflowFailException, match="belongs to Airflow run 'run-b', not 'run-a'"):
        operator(fold_config(s3, run="run-a")).execute({})
    assert [c["name"] for c in sagemaker.creates] == [FIRST, FIRST]  # theirs, then ours refused


def test_our_own_job_created_in_a_race_is_adopted(s3, sagemaker):
    sagemaker.before_create = racing_create(sagemaker, fold_config(s3))
    with pytest.raises(TaskDeferred) as deferred:
        operator(fold_config(s3)).execute({})
    assert deferred.value.trigger.job_name == FIRST


def test_killing_the_task_stops_its_job(s3, sagemaker):
    config = fold_config(s3)
    task = operator(config)
    with pytest.raises(TaskDeferred):
        task.execute({})
    task.on_kill()
    assert sagemaker.stops == [config["TrainingJobName"]]
    assert sagemaker.job(config["TrainingJobName"]).training_job_status == "Stopped"
    task.on_kill()  # an ended job: tolerated
    assert sagemaker.stops == [config["TrainingJobName"]]


def test_a_deferral_timeout_stops_the_job_and_fails_for_good(s3, sagemaker):
    config = fold_config(s3)
    with pytest.raises(TaskDeferred):
        operator(config).execute({})
    with pytest.raises(AirflowFailException, match="did not finish in time"):
        operator(fold_config(s3)).resume_execution("__fail__", {"error": DEFERRAL_TIMEOUT}, {})
    assert sagemaker.stops == [config["TrainingJobName"]]


def test_a_failed_wait_on_an_ended_job_ends_as_the_job_did(s3, sagemaker):
    """Older amazon triggers raise when the job fails: the job's own failure decides, final or not."""
    with pytest.raises(TaskDeferred):
        operator(fold_config(s3)).execute({})
    sagemaker.finish(FIRST, status="Failed", reason="AlgorithmError: bad label")
    with pytest.raises(AirflowFailException, match="AlgorithmError"):
        operator(fold_config(s3)).resume_execution("__fail__", {"error": TRIGGER_FAILURE}, {})


def test_a_failed_trigger_leaves_the_job_training_for_the_retry_to_reattach(s3, sagemaker):
    with pytest.raises(TaskDeferred):
        operator(fold_config(s3)).execute({})
    with pytest.raises(TaskDeferralError):
        operator(fold_config(s3)).resume_execution("__fail__", {"error": TRIGGER_FAILURE}, {})
    assert sagemaker.stops == []
    with pytest.raises(TaskDeferred) as deferred:
        operator(fold_config(s3)).execute({})
    assert deferred.value.trigger.job_name == FIRST and len(sagemaker.creates) == 1


def test_killing_the_deferred_task_stops_the_job_from_the_triggerer(s3, sagemaker):
    config = fold_config(s3)
    with pytest.raises(TaskDeferred) as deferred:
        operator(config).execute({})
    asyncio.run(deferred.value.trigger.on_kill())
    assert sagemaker.stops == [config["TrainingJobName"]]


def test_the_triggerer_runs_this_trigger_and_it_reports_a_failed_job(s3, sagemaker):
    """On every amazon version: the stock trigger before 9.32 serializes as itself and raises when
    the job fails (then on_kill would not be ours, and the try would fail in the triggerer)."""
    config = fold_config(s3)
    task = operator(config)
    with pytest.raises(TaskDeferred) as deferred:
        task.execute({})
    classpath, arguments = deferred.value.trigger.serialize()
    module, name = classpath.rsplit(".", 1)
    trigger = getattr(importlib.import_module(module), name)(**arguments)  # as the triggerer rebuilds it
    assert type(trigger) is SageMakerFoldTrainingTrigger and trigger.serialize() == (classpath, arguments)
    sagemaker.finish(config["TrainingJobName"], status="Failed", reason="AlgorithmError: bad label")
    event = asyncio.run(anext(trigger.run()))
    assert event.payload["status"] in ("failed", "error")  # 9.32+ names the status; before, "error"
    with pytest.raises(AirflowFailException, match="AlgorithmError: bad label"):
        task.execute_complete({}, event.payload)


def test_instance_limits_fail_the_try_for_airflow_to_retry_with_backoff(s3, sagemaker):
    sagemaker.refuse_creates = 2
    for _ in range(2):  # each try gives its worker back at once; Airflow's retry (with backoff) tries again
        with pytest.raises(AirflowException, match="ResourceLimitExceeded") as failed:
            operator(fold_config(s3)).execute({})
        assert not isinstance(failed.value, AirflowFailException)  # retryable
    with pytest.raises(TaskDeferred):
        operator(fold_config(s3)).execute({})
    assert len(sagemaker.creates) == 3


def test_waits_in_the_worker_when_not_deferrable(s3, sagemaker):
    config = fold_config(s3)
    name = config["TrainingJobName"]

    def finish_once_polled():  # the event: the operator polls its running job from the worker
        while sagemaker.describes.get(name, 0) < 3:
            time.sleep(0.05)
        sagemaker.finish(name, metrics={"acc": 0.5})

    threading.Thread(target=finish_once_polled, daemon=True).start()
    result = operator(config, deferrable=False).execute({})
    assert result["TrainingJobStatus"] == "Completed" and result["FinalMetricDataList"][0]["Value"] == 0.5


def test_a_completed_fold_gives_openlineage_its_datasets(s3, sagemaker):
    """The OpenLineage provider asks the operator for its facets once the task succeeded."""
    pytest.importorskip("airflow.providers.openlineage", reason="a deployment without the OpenLineage provider")
    from airflow.providers.openlineage.extractors.manager import ExtractorManager

    config = fold_config(s3)
    task = operator(config)
    with pytest.raises(TaskDeferred):
        task.execute({})
    sagemaker.finish(config["TrainingJobName"], metrics={"acc": 0.5})
    task.execute_complete({}, {"status": "success"})
    lineage = ExtractorManager().get_extractor_class(task)(task).extract_on_complete(None)
    assert [f"{d.namespace}/{d.name}" for d in lineage.inputs] == [
        "s3://bucket/cv/folds/fold-00000/train.manifest",
        "s3://bucket/cv/folds/part-00000.csv",
    ]
    assert [d.namespace for d in lineage.outputs] == ["s3://bucket"]
