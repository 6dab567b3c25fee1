"""Console links of a fold's training job, of the split's Processing job, and of a run's report."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.providers.amazon.aws.links.base_aws import BASE_AWS_CONSOLE_LINK, BaseAwsLink

TRAINING_JOB_KEY = "smx_training_job"  # both job links read the one XCom the fold task pushes
PROCESSING_JOB_KEY = "smx_processing_job"  # the same for the split's job links


def _log_streams(group: str) -> str:
    """CloudWatch's streams of ``/aws/sagemaker/{group}`` that start with the job's name (SageMaker
    names a job's streams ``{job_name}/algo-{n}-{epoch}``)."""
    return (
        BASE_AWS_CONSOLE_LINK + "/cloudwatch/home?region={region_name}#logsV2:log-groups/log-group/"
        f"$252Faws$252Fsagemaker$252F{group}$3FlogStreamNameFilter$3D{{job_name}}"
    )


class SageMakerTrainingJobLink(BaseAwsLink):
    """The fold's (latest) training job in the SageMaker console."""

    name = "SageMaker training job"
    key = TRAINING_JOB_KEY
    format_str = BASE_AWS_CONSOLE_LINK + "/sagemaker/home?region={region_name}#/jobs/{job_name}"


class SageMakerTrainingLogsLink(BaseAwsLink):
    """The training job's log streams in CloudWatch."""

    name = "Training job logs"
    key = TRAINING_JOB_KEY
    format_str = _log_streams("TrainingJobs")


class SageMakerProcessingJobLink(BaseAwsLink):
    """The split's (latest) Processing job in the SageMaker console, when a job splits."""

    name = "SageMaker processing job"
    key = PROCESSING_JOB_KEY
    format_str = BASE_AWS_CONSOLE_LINK + "/sagemaker/home?region={region_name}#/processing-jobs/{job_name}"


class SageMakerProcessingLogsLink(BaseAwsLink):
    """The split job's log streams in CloudWatch."""

    name = "Processing job logs"
    key = PROCESSING_JOB_KEY
    format_str = _log_streams("ProcessingJobs")


class CrossValidationReportLink(BaseAwsLink):
    """The run's ``cv_report.html`` in the S3 console (open it from there)."""

    name = "CV report"
    key = "smx_cv_report"
    format_str = BASE_AWS_CONSOLE_LINK + "/s3/object/{bucket}?region={region_name}&prefix={object_key}"

    def format_link(self, **kwargs) -> str:
        if "object_key" in kwargs:
            kwargs["object_key"] = quote(kwargs["object_key"], safe="")
        return super().format_link(**kwargs)


def link_report(context: Any, uri: str, aws_conn_id: str | None) -> None:
    """Point ``aggregate_results``'s extra link at the report (S3 only: browsers refuse file:// links)."""
    if not uri.startswith("s3://"):
        return
    bucket, _, object_key = uri.removeprefix("s3://").partition("/")
    hook = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="s3")
    CrossValidationReportLink.persist(
        context=context,
        operator=context["task"],
        region_name=hook.conn_region_name,
        aws_partition=hook.conn_partition,
        bucket=bucket,
        object_key=object_key,
    )
