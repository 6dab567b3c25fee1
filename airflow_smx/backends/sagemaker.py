"""Folds trained as SageMaker training jobs."""

from __future__ import annotations

import datetime
from functools import cached_property
from typing import Any

from airflow_smx import settings
from airflow_smx.backends import Backend
from airflow_smx.compat import RETRY_BACKOFF
from airflow_smx.core.job_requests import RUN_TAG, FoldJob, run_tag_value
from airflow_smx.core.request import CVRequest
from airflow_smx.core.results import FoldOutcome
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
            "retry_exponential_backoff": RETRY_BACKOFF,
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
        # a describe that fails (throttled past botocore's retries) raises: the aggregation's retry
        # asks again, rather than count a fold that may well have trained as failed
        return FoldOutcome.of_attempts(fold.fold, fold.job_name, self.hook.attempts(fold.job_name))

    def register(self, package: dict[str, Any], group_tags: list[dict[str, str]], output_uri: str) -> dict[str, Any]:
        return self.hook.register_model_package(package, group_tags)

    def stop_unfinished(self, fold: FoldJob, run_id: str) -> str | None:
        latest = self.hook.latest_attempt(fold.job_name)  # only the latest attempt can still train
        if latest is None or latest.status != "InProgress":
            return None  # never created, or already ended
        if latest.tags.get(RUN_TAG) != run_tag_value(run_id):
            return None  # same name, another run's job: not ours to stop
        return latest.name if self.hook.stop_training_job(latest.name) else None
