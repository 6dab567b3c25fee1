"""Describing a training job, who owns it, and stopping it: shared by the fold operator and the run's teardown."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from airflow_smx.training import RUN_TAG


def error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def describe(hook: Any, job_name: str) -> dict[str, Any] | None:
    """DescribeTrainingJob through a SageMakerHook, or None when there is no such job."""
    try:
        return hook.describe_training_job(job_name)
    except ClientError as error:
        if error_code(error) in ("ValidationException", "ResourceNotFound"):
            return None  # SageMaker answers ValidationException "Requested resource not found"
        raise


def owner(client: Any, job_arn: str) -> str | None:
    """The Airflow run id a training job was created by, or None for a job we did not tag."""
    tags = client.list_tags(ResourceArn=job_arn).get("Tags", [])
    return next((tag["Value"] for tag in tags if tag["Key"] == RUN_TAG), None)


def stop(client: Any, job_name: str) -> bool:
    """Stop a training job; False if it had already ended (SageMaker answers ValidationException)."""
    try:
        client.stop_training_job(TrainingJobName=job_name)
    except ClientError as error:
        if error_code(error) != "ValidationException":
            raise
        return False
    return True
