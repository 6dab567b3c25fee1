"""Folds trained by a command of the deployment's, on the worker, under SageMaker's container contract."""

from __future__ import annotations

import datetime
from functools import cached_property
from typing import Any

from airflow_smx import settings
from airflow_smx.backends import Backend
from airflow_smx.core import storage
from airflow_smx.core.container import record_uri
from airflow_smx.core.job_requests import FoldJob
from airflow_smx.core.policy import Policy
from airflow_smx.core.registry import register_local
from airflow_smx.core.request import CVRequest
from airflow_smx.core.results import FoldOutcome
from airflow_smx.hooks.s3fs_options import s3_storage_options
from airflow_smx.operators.local_fold import LocalFoldTrainingOperator, local_attempts


class LocalBackend(Backend):
    name = "local"
    operator = LocalFoldTrainingOperator

    def task_arguments(self) -> dict[str, Any]:
        return {"aws_conn_id": self.aws_conn_id, "retries": 1, "retry_delay": datetime.timedelta(seconds=30)}

    def pool_slots(self, request: CVRequest) -> int:
        return 1

    @cached_property
    def policy(self) -> Policy:
        return settings.policy()

    @cached_property
    def s3_options(self) -> dict[str, Any]:
        return s3_storage_options(self.aws_conn_id)  # one session for every fold's record

    def fold_job(self, request: CVRequest, fold: int, config: dict[str, Any]) -> FoldJob:
        # the command by name: the operator looks it up in the deployment's list itself
        return FoldJob(fold, config, self.policy.command_name(request))

    def outcome(self, fold: FoldJob) -> FoldOutcome:
        """The records the fold's operator keeps beside each attempt's model, failed or not."""
        options = self.s3_options if record_uri(fold.config).startswith("s3://") else {}
        found = local_attempts(fold.config, options)
        if not found:
            return FoldOutcome(fold.fold, fold.job_name, None, error="the fold's process never ran")
        return FoldOutcome.of_attempts(fold.fold, fold.job_name, found)

    def register(self, package: dict[str, Any], group_tags: list[dict[str, str]], output_uri: str) -> dict[str, Any]:
        """A version record under ``{output_uri}/registry/{group}/``: SageMaker's registry, on disk."""
        uri = storage.join(output_uri, "registry", package["ModelPackageGroupName"])
        fs, path = storage.filesystem(uri, self.s3_options if uri.startswith("s3://") else {})
        return register_local(fs, path, package)

    def stop_unfinished(self, fold: FoldJob, run_id: str) -> str | None:
        return None  # a local fold's process ends with its task (on_kill ends its process group)
