"""SageMakerFoldTrainingOperator against moto: create once, re-attach, stop, back off, clean XCom."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException
from airflow.sdk.bases.operator import TriggerFailureReason
from airflow.sdk.exceptions import TaskDeferralTimeout, TaskDeferred

from airflow_smx.operators.sagemaker_fold import SageMakerFoldTrainingOperator

ROLE = "arn:aws:iam::123456789012:role/sagemaker"


def fold_config(s3, name: str = "crossvalidator-demo-20261129-165941-fold0", run: str = "run-a") -> dict:
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
        "Tags": [{"Key": "airflow_run_id", "Value": run}],
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
    assert deferred.value.trigger.attempts == 10801  # the waiter outlasts the deferral timeout

    sagemaker.finish(config["TrainingJobName"], metrics={"validation:auc": 0.91})
    result = operator(fold_config(s3)).execute_complete({}, {"status": "success"})
    assert json.loads(json.dumps(result)) == result  # JSON-clean
    assert "ResponseMetadata" not in result and result["TrainingJobStatus"] == "Completed"
    assert result["CreationTime"].startswith("20") and "T" in result["CreationTime"]
    assert result["FinalMetricDataList"][0]["MetricName"] == "validation:auc"


@pytest.mark.parametrize(
    ("status", "reason", "outcome"),
    [
        ("InProgress", None, "defers"),
        ("Completed", None, "returns"),
        ("Failed", "AlgorithmError: ValueError: bad label", "AlgorithmError: ValueError: bad label"),
        ("Stopped", None, "Stopped"),
    ],
)
def test_a_retried_task_reattaches_and_never_creates_twice(s3, sagemaker, status, reason, outcome):
    config = fold_config(s3)
    with pytest.raises(TaskDeferred):
        operator(dict(config)).execute({})  # the first try, whose worker then died
    if status != "InProgress":
        sagemaker.finish(config["TrainingJobName"], status=status, reason=reason, metrics={"m": 1.0})
    retry = operator(fold_config(s3))
    if outcome == "defers":
        with pytest.raises(TaskDeferred):
            retry.execute({})
    elif outcome == "returns":
        assert retry.execute({})["TrainingJobStatus"] == "Completed"
    else:
        with pytest.raises(AirflowException, match=outcome):
            retry.execute({})
    assert len(sagemaker.creates) == 1


def test_a_job_of_another_run_with_the_same_name_is_not_adopted(s3, sagemaker):
    with pytest.raises(TaskDeferred):
        operator(fold_config(s3, run="run-a")).execute({})
    with pytest.raises(AirflowException, match="belongs to Airflow run 'run-a', not 'run-b'"):
        operator(fold_config(s3, run="run-b")).execute({})
    assert len(sagemaker.creates) == 1


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


def test_a_deferral_timeout_stops_the_job_before_failing(s3, sagemaker):
    config = fold_config(s3)
    with pytest.raises(TaskDeferred):
        operator(config).execute({})
    with pytest.raises(TaskDeferralTimeout):
        operator(fold_config(s3)).resume_execution("__fail__", {"error": TriggerFailureReason.TRIGGER_TIMEOUT}, {})
    assert sagemaker.stops == [config["TrainingJobName"]]


def test_killing_the_deferred_task_stops_the_job_from_the_triggerer(s3, sagemaker):
    config = fold_config(s3)
    with pytest.raises(TaskDeferred) as deferred:
        operator(config).execute({})
    asyncio.run(deferred.value.trigger.on_kill())
    assert sagemaker.stops == [config["TrainingJobName"]]


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
