"""Folds trained as SageMaker training jobs."""

from __future__ import annotations

import datetime
from functools import cached_property
from typing import Any

from botocore.exceptions import ClientError

from airflow_smx import settings
from airflow_smx.backends import Backend
from airflow_smx.core.job_requests import FoldJob, run_tag_value
from airflow_smx.core.request import CVRequest
from airflow_smx.core.results import FoldOutcome, clean_description
from airflow_smx.hooks.sagemaker import CrossValidationSageMakerHook
from airflow_smx.operators.sagemaker_fold import SageMakerFoldTrainingOperator


class SageMakerBackend(Backend):
    name = "sagemaker"
    operator = SageMakerFoldTrainingOperator

    @cached_property
    def hook(self) -> CrossValidationSageMakerHook:
        return CrossValidationSageMakerHook(aws_conn_id=self.aws_conn_id)

    def task_arguments(self) -> dict[str, Any]:
        # Creating a job meets ResourceLimitExceeded when the account's instances are busy (also
        # just after a pooled fold ended: apache/airflow#69187): the retry backs off and creates again.
        return {
            "aws_conn_id": self.aws_conn_id,
            "check_interval": int(settings.get("check_interval")),
            "retries": 6,
            "retry_delay": datetime.timedelta(seconds=30),
            "retry_exponential_backoff": 2.0,
            "max_retry_delay": datetime.timedelta(minutes=10),
        }

    def pool_slots(self, request: CVRequest) -> int:
        return request.training.instance_count

    def prepare(self, request: CVRequest, trial: str) -> None:
        """The run's SageMaker Experiments trial, as SMX-Validator kept it."""
        if request.experiment.enabled:
            self.hook.ensure_trial(request.experiment_name, trial, [t.model_dump() for t in request.tags])

    def fold_job(self, request: CVRequest, fold: int, config: dict[str, Any]) -> FoldJob:
        return FoldJob(fold, config)

    def outcome(self, fold: FoldJob) -> FoldOutcome:
        try:
            description = self.hook.describe_training_job_or_none(fold.job_name)
        except ClientError as error:
            return FoldOutcome(fold.fold, fold.job_name, None, error=f"cannot describe the training job: {error}")
        if description is None:
            return FoldOutcome(fold.fold, fold.job_name, None, error="no training job: its task never created it")
        return FoldOutcome(fold.fold, fold.job_name, clean_description(description))

    def stop_unfinished(self, fold: FoldJob, run_id: str) -> bool:
        description = self.hook.describe_training_job_or_none(fold.job_name)
        if description is None or description["TrainingJobStatus"] != "InProgress":
            return False  # never created, or already ended
        if self.hook.training_job_owner(description["TrainingJobArn"]) != run_tag_value(run_id):
            return False  # same name, another run's job: not ours to stop
        return self.hook.stop_training_job(fold.job_name)
