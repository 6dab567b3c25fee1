"""Where a fold trains: one module per backend, behind one interface.

A backend names the operator that trains a fold and its task arguments, finds a fold's outcome
in DescribeTrainingJob's shape whatever became of its task (the aggregation), stops a fold's
job that is still running once its task is over (the run's teardown), and registers the refit
model. The split plans folds as
:class:`~airflow_smx.core.job_requests.FoldJob` records; nothing else compares backend names.

May import Airflow, ``hooks``, ``operators`` and ``airflow_smx.core``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from airflow_smx.core.job_requests import FoldJob
from airflow_smx.core.request import CVRequest
from airflow_smx.core.results import FoldOutcome


class Backend(ABC):
    """One way of training folds.

    :param aws_conn_id: the connection for SageMaker and S3
    """

    name: ClassVar[str]

    def __init__(self, aws_conn_id: str | None):
        self.aws_conn_id = aws_conn_id

    @property
    @abstractmethod
    def operator(self) -> type:
        """The operator class one mapped task per fold runs."""

    @abstractmethod
    def task_arguments(self) -> dict[str, Any]:
        """Its ``partial()`` arguments beyond task id and pool (retries, polling)."""

    @abstractmethod
    def pool_slots(self, request: CVRequest) -> int:
        """Pool slots each fold of ``request`` takes."""

    def prepare(self, request: CVRequest, trial: str) -> None:  # noqa: B027 (most backends need nothing)
        """What must exist before the folds train (the split calls it once per run)."""

    @abstractmethod
    def fold_job(self, request: CVRequest, fold: int, config: dict[str, Any]) -> FoldJob:
        """The record of one fold's job: what its task is mapped with."""

    @abstractmethod
    def outcome(self, fold: FoldJob) -> FoldOutcome:
        """What became of the fold's jobs (every attempt), read from where they left it (not from XCom)."""

    @abstractmethod
    def register(self, package: dict[str, Any], group_tags: list[dict[str, str]], output_uri: str) -> dict[str, Any]:
        """Register the refit model: CreateModelPackage's ``package`` as a new version of its
        group (created with ``group_tags`` if missing); the version as DescribeModelPackage
        shows it (the same one again for a model registered already)."""

    @abstractmethod
    def stop_unfinished(self, fold: FoldJob, run_id: str) -> str | None:
        """Stop the fold's job if it still runs and belongs to ``run_id``; the name of the job stopped."""


def backend(name: str, aws_conn_id: str | None) -> Backend:
    """The backend called ``name`` ("sagemaker" or "local")."""
    from airflow_smx.backends.local import LocalBackend
    from airflow_smx.backends.sagemaker import SageMakerBackend

    return {b.name: b for b in (SageMakerBackend, LocalBackend)}[name](aws_conn_id)
