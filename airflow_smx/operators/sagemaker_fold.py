"""One fold's SageMaker training job: the amazon provider's operator, made safe to retry and kill."""

from __future__ import annotations

import datetime
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import quote

from airflow.providers.amazon.aws.operators.sagemaker import SageMakerTrainingOperator

from airflow_smx.compat import TRIGGER_FAIL, AirflowException, AirflowFailException, deferral_timed_out
from airflow_smx.core.attempts import (
    FOLDS_TAG,
    RUNNING,
    Attempt,
    Step,
    attempt_config,
    failure_kind,
    is_transient,
    next_step,
    owner_problem,
    secondary_status,
    tags_of,
)
from airflow_smx.core.job_requests import RUN_TAG, SAGEMAKER_DEFAULT_RUNTIME
from airflow_smx.core.results import clean_description
from airflow_smx.hooks.sagemaker import CrossValidationSageMakerHook, created
from airflow_smx.links.sagemaker import SageMakerTrainingJobLink, SageMakerTrainingLogsLink
from airflow_smx.operators import fresh_try
from airflow_smx.triggers.sagemaker_fold import SageMakerFoldTrainingTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context


class SageMakerFoldTrainingOperator(SageMakerTrainingOperator):
    """Train one cross-validation fold on SageMaker; re-attach to its job when retried.

    Differences from the stock operator, each fixing a way it loses money, results or secrets:

    - No field is a Jinja template: the config comes from whoever triggered the run, and
      rendering it would hand them the deployment's connections and Variables.

    - A fold's jobs are its attempts: the planned name, then ``-r2``, ``-r3``... (names derive
      from the DAG run, not the clock). Each try finds the latest attempt and re-attaches to it
      while it trains, re-uses it when it completed on the same folds, and otherwise trains a
      new attempt (:mod:`airflow_smx.core.attempts` has the table). So a retry after a crash
      never creates a second job, and a user's clear of a failed fold retrains it. A job of the
      same name started by another Airflow run (``airflow_run_id`` tag) is refused.
    - Killing the task stops the job: ``on_kill`` while running, the trigger's ``on_kill``
      while deferred, and a deferral timeout stops it before failing.
    - Deferrable by default, with a timeout from the job's own StoppingCondition plus
      ``timeout_margin`` (the stock waiter gives up after about 30 minutes). A timeout is final.
    - ``Stopped`` is a failure. A job that failed for a transient reason (capacity, an internal
      error, spot capacity beyond MaxWait) fails the try, and the retry trains a new attempt;
      any other failure fails the task at once, keeping its retries for what they can fix.
      Throttling and ResourceLimitExceeded on create fail the try without holding the worker
      (give the task retries with exponential backoff: the DAG does).
    - The result (XCom) is the JSON-clean DescribeTrainingJob, also kept for OpenLineage.

    :param config: the fold's CreateTrainingJob request (``TrainingJobName`` included)
    :param fold: the fold's index, for logs and the UI label
    :param check_interval: seconds between status checks (the default suits hours-long jobs)
    :param timeout_margin: seconds allowed beyond the StoppingCondition (queueing, provisioning, upload)
    :param deferrable: wait in the triggerer instead of a worker slot
    """

    # Nothing is rendered by Jinja: the config is the user's request (a conf is untrusted input),
    # and "{{ conn.aws_default.password }}" in a hyperparameter must reach SageMaker as that text.
    template_fields: Sequence[str] = ()
    aws_hook_class = CrossValidationSageMakerHook
    operator_extra_links = (SageMakerTrainingJobLink(), SageMakerTrainingLogsLink())

    def __init__(
        self,
        *,
        config: dict,
        fold: int = 0,
        check_interval: int = 60,
        timeout_margin: int = 3600,
        deferrable: bool = True,
        print_log: bool = False,
        **kwargs: Any,
    ):
        super().__init__(
            config=config,
            check_interval=check_interval,
            deferrable=deferrable,
            print_log=print_log,
            check_if_job_exists=False,
            **kwargs,
        )
        self.fold = fold
        self.timeout_margin = timeout_margin

    @property
    def job_name(self) -> str:
        """The fold's first training job name (later attempts add ``-r{n}``)."""
        return self.config["TrainingJobName"]

    @property
    def timeout_seconds(self) -> int:
        """How long the job may take: its StoppingCondition (spot: the wait time) plus the margin."""
        stopping = self.config.get("StoppingCondition", {})
        limit = stopping.get("MaxRuntimeInSeconds", SAGEMAKER_DEFAULT_RUNTIME)
        if self.config.get("EnableManagedSpotTraining"):
            limit = stopping.get("MaxWaitTimeInSeconds", limit)
        return int(limit) + self.timeout_margin

    @property
    def folds(self) -> str:
        """The digest of the folds this task was planned with (the split tags every config)."""
        return tags_of(self.config).get(FOLDS_TAG, "")

    def execute(self, context: Context) -> dict[str, Any]:
        self.preprocess_config()
        latest = self._latest()
        step, number = next_step(latest, self.folds, fresh_try(context, self.retries))
        if step is Step.REUSE:
            self.log.info("Fold %d: re-using completed training job %s (same folds)", self.fold, latest.name)
        elif step is Step.ATTACH:
            self.log.info("Fold %d: re-attaching to training job %s (%s)", self.fold, latest.name, latest.status)
        if step in (Step.REPORT, Step.REUSE, Step.ATTACH):
            description = latest.description
        else:
            if step is Step.REPLACE:
                self._stop(latest.name, f"it is {latest.status} on other folds than this run's")
            description = self._start(number)
        self._link_job(context, description["TrainingJobName"])
        if description["TrainingJobStatus"] in RUNNING:
            description = self._wait(description)
        return self._finish(description)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        latest = self._latest()  # the job this task waited for: only this fold's task creates its attempts
        if latest is None:
            raise AirflowException(f"Training job {self.job_name} has disappeared")
        if latest.status in RUNNING:
            self._timed_out(latest.name, f"still {latest.status} when the wait ended ({event})")
        return self._finish(latest.description)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        if next_method == TRIGGER_FAIL:
            latest = self._latest()
            if latest is not None and latest.status not in RUNNING:
                # the job ended though its wait failed (older amazon triggers raise on a failed job):
                # its own outcome decides, so a final failure spends no retry
                return self._finish(latest.description)
            if latest is not None and deferral_timed_out(next_method, next_kwargs):
                self._timed_out(latest.name, "the deferral timed out")
        # any other trigger failure (the triggerer lost its connection, throttling): the job may be
        # training well, so it is left alone and the task's retry re-attaches to it
        return super().resume_execution(next_method, next_kwargs, context)

    def on_kill(self) -> None:
        latest = self.hook.latest_attempt(self.job_name)
        if latest is not None and latest.status == "InProgress" and not owner_problem(latest, self.config, RUN_TAG):
            self._stop(latest.name, "the task was killed")

    def _latest(self) -> Attempt | None:
        latest = self.hook.latest_attempt(self.job_name)
        if latest is not None:
            self._check_owner(latest)
        return latest

    def _start(self, number: int) -> dict[str, Any]:
        """Create attempt ``number``; its description. A racing create of the same job is adopted."""
        config = attempt_config(self.config, number)
        name = config["TrainingJobName"]
        self.log.info("Fold %d: creating training job %s (attempt %d)", self.fold, name, number)
        create = lambda: self.hook.create_training_job(config, wait_for_completion=False, print_log=False)  # noqa: E731
        if not created(create, f"fold {self.fold}'s {name}"):
            # the name is taken: adopt the job only if it is this fold's, of this run and these folds
            latest = self._latest()
            if latest is None or latest.name != name or not latest.of_folds(self.folds):
                raise AirflowException(f"Fold {self.fold}: {name} exists but is not this fold's attempt")
            return latest.description
        description = self.hook.describe_training_job_or_none(name)
        if description is None:
            raise AirflowException(f"Training job {name} was created but cannot be described")
        return description

    def _link_job(self, context: Context, name: str) -> None:
        """Point the task's extra links at the job it reports (the latest attempt)."""
        SageMakerTrainingJobLink.persist(
            context=context,
            operator=self,
            region_name=self.hook.conn_region_name,
            aws_partition=self.hook.conn_partition,
            job_name=quote(name, safe=""),
        )

    def _check_owner(self, latest: Attempt) -> None:
        problem = owner_problem(latest, self.config, RUN_TAG)
        if problem:
            raise AirflowFailException(problem)

    def _wait(self, description: dict[str, Any]) -> dict[str, Any]:
        name = description["TrainingJobName"]
        if self.deferrable:
            self.defer(
                trigger=SageMakerFoldTrainingTrigger.waiting(self, name, self.timeout_seconds),
                method_name="execute_complete",
                timeout=datetime.timedelta(seconds=self.timeout_seconds),
            )
        deadline = time.monotonic() + self.timeout_seconds
        while description["TrainingJobStatus"] in RUNNING:
            if time.monotonic() > deadline:
                self._timed_out(name, f"no end after {self.timeout_seconds} s")
            time.sleep(self.check_interval)
            description = self.hook.describe_training_job_or_none(name) or description
        return description

    def _finish(self, description: dict[str, Any]) -> dict[str, Any]:
        status, name = description["TrainingJobStatus"], description["TrainingJobName"]
        if status != "Completed":
            reason = description.get("FailureReason") or secondary_status(description) or "(no reason given)"
            message = f"Fold {self.fold}: training job {name} {status} ({failure_kind(description)}): {reason}"
            if is_transient(description):  # the task's retry trains a new attempt
                raise AirflowException(message)
            raise AirflowFailException(message)  # final: retries would fail the same way (a clear retrains)
        self.log.info("Fold %d: training job %s completed", self.fold, name)
        self.serialized_training_data = clean_description(description)  # read by the OpenLineage facets
        return self.serialized_training_data

    def _timed_out(self, name: str, why: str) -> NoReturn:
        """Stop a job that outlived its StoppingCondition and the margin; final, as a retry would wait as long."""
        self._stop(name, why)
        raise AirflowFailException(f"Training job {name} did not finish in time ({why}); it was stopped")

    def _stop(self, name: str, why: str) -> None:
        if self.hook.stop_training_job(name):
            self.log.warning("Fold %d: stopped training job %s: %s", self.fold, name, why)
        else:
            self.log.info("Fold %d: training job %s had already ended (%s)", self.fold, name, why)
