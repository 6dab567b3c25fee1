"""One fold's SageMaker training job: the amazon provider's operator, made safe to retry and kill."""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.operators.sagemaker import SageMakerTrainingOperator
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException
from botocore.exceptions import ClientError

from airflow_smx.core.job_requests import RUN_TAG, SAGEMAKER_DEFAULT_RUNTIME
from airflow_smx.core.results import clean_description
from airflow_smx.hooks.sagemaker import CrossValidationSageMakerHook, error_code
from airflow_smx.triggers.sagemaker_fold import SageMakerFoldTrainingTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

RETRYABLE_CREATE_ERRORS = {"ThrottlingException", "ResourceLimitExceeded"}  # the task's retry creates again
RUNNING = {"InProgress", "Stopping"}
TRIGGER_FAIL = "__fail__"


class SageMakerFoldTrainingOperator(SageMakerTrainingOperator):
    """Train one cross-validation fold on SageMaker; re-attach to its job when retried.

    Differences from the stock operator, each fixing a way it loses money, results or secrets:

    - No field is a Jinja template: the config comes from whoever triggered the run, and
      rendering it would hand them the deployment's connections and Variables.

    - The job name is fixed by the config (derived from the DAG run, not the clock). A retried
      task finds its job and re-attaches: InProgress keeps waiting, Completed returns its
      result, Failed or Stopped fails with SageMaker's reason. It never creates a second job,
      and refuses a same-named job started by another Airflow run (``airflow_run_id`` tag).
    - Killing the task stops the job: ``on_kill`` while running, the trigger's ``on_kill``
      while deferred, and a deferral timeout stops it before failing.
    - Deferrable by default, with a timeout from the job's own StoppingCondition plus
      ``timeout_margin`` (the stock waiter gives up after about 30 minutes).
    - ``Stopped`` is a failure. Throttling and ResourceLimitExceeded on create fail the try
      without holding the worker (give the task retries with exponential backoff: the DAG does);
      a failed job fails the task for good (a retry would only re-attach to it).
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
        return self.config["TrainingJobName"]

    @property
    def timeout_seconds(self) -> int:
        """How long the job may take: its StoppingCondition (spot: the wait time) plus the margin."""
        stopping = self.config.get("StoppingCondition", {})
        limit = stopping.get("MaxRuntimeInSeconds", SAGEMAKER_DEFAULT_RUNTIME)
        if self.config.get("EnableManagedSpotTraining"):
            limit = stopping.get("MaxWaitTimeInSeconds", limit)
        return int(limit) + self.timeout_margin

    def execute(self, context: Context) -> dict[str, Any]:
        self.preprocess_config()
        description = self._describe()
        if description is None and self._create():
            description = self._describe()
            if description is None:
                raise AirflowException(f"Training job {self.job_name} was created but cannot be described")
        else:  # it existed, or a racing create made it first: only this run's job is ours
            description = description or self._describe()
            if description is None:
                raise AirflowException(f"Training job {self.job_name} exists but cannot be described")
            self._check_owner(description)
            self.log.info(
                "Fold %d: re-attaching to training job %s (%s)",
                self.fold,
                self.job_name,
                description["TrainingJobStatus"],
            )
        if description["TrainingJobStatus"] in RUNNING:
            description = self._wait(description)
        return self._finish(description)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        description = self._describe()
        if description is None:
            raise AirflowException(f"Training job {self.job_name} has disappeared")
        if description["TrainingJobStatus"] in RUNNING:
            self._stop(f"still {description['TrainingJobStatus']} when the wait ended ({event})")
            raise AirflowException(f"Training job {self.job_name} did not finish in time; it was stopped")
        return self._finish(description)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        if next_method == TRIGGER_FAIL:  # the deferral timed out or its trigger failed
            self._stop(f"the deferred wait failed: {(next_kwargs or {}).get('error')}")
        return super().resume_execution(next_method, next_kwargs, context)

    def on_kill(self) -> None:
        self._stop("the task was killed")

    def _describe(self) -> dict[str, Any] | None:
        return self.hook.describe_training_job_or_none(self.job_name)

    def _create(self) -> bool:
        """Create the fold's job; False if a job of that name already exists (ResourceInUse)."""
        self.log.info("Fold %d: creating training job %s", self.fold, self.job_name)
        try:
            self.hook.create_training_job(self.config, wait_for_completion=False, print_log=False)
        except ClientError as error:
            code = error_code(error)
            if code == "ResourceInUse":
                return False
            if code in RETRYABLE_CREATE_ERRORS:  # fail this try only: its retry, after a backoff, creates
                raise AirflowException(f"Fold {self.fold}: {code} creating {self.job_name}: {error}") from None
            raise
        return True

    def _check_owner(self, description: dict[str, Any]) -> None:
        ours = next((t["Value"] for t in self.config.get("Tags", []) if t["Key"] == RUN_TAG), None)
        if ours is None:
            return
        theirs = self.hook.training_job_owner(description["TrainingJobArn"])
        if theirs != ours:
            raise AirflowFailException(
                f"A training job named {self.job_name} already exists and belongs to Airflow run {theirs!r}, "
                f"not {ours!r}: refusing to re-attach. Give this run another name or timestamp."
            )

    def _wait(self, description: dict[str, Any]) -> dict[str, Any]:
        if self.deferrable:
            self.defer(
                trigger=SageMakerFoldTrainingTrigger(
                    job_name=self.job_name,
                    waiter_delay=self.check_interval,
                    waiter_max_attempts=math.ceil(self.timeout_seconds / self.check_interval) + 1,
                    aws_conn_id=self.aws_conn_id,
                    region_name=self.region_name,
                    verify=self.verify,
                    botocore_config=self.botocore_config,
                ),
                method_name="execute_complete",
                timeout=datetime.timedelta(seconds=self.timeout_seconds),
            )
        deadline = time.monotonic() + self.timeout_seconds
        while description["TrainingJobStatus"] in RUNNING:
            if time.monotonic() > deadline:
                self._stop(f"no end after {self.timeout_seconds} s")
                raise AirflowException(f"Training job {self.job_name} did not finish in time; it was stopped")
            time.sleep(self.check_interval)
            description = self._describe() or description
        return description

    def _finish(self, description: dict[str, Any]) -> dict[str, Any]:
        status = description["TrainingJobStatus"]
        if status != "Completed":  # final: a retry would only re-attach to the same ended job
            reason = description.get("FailureReason", "(no reason given)")
            raise AirflowFailException(f"Fold {self.fold}: training job {self.job_name} {status}: {reason}")
        self.log.info("Fold %d: training job %s completed", self.fold, self.job_name)
        self.serialized_training_data = clean_description(description)  # read by the OpenLineage facets
        return self.serialized_training_data

    def _stop(self, why: str) -> None:
        if self.hook.stop_training_job(self.job_name):
            self.log.warning("Fold %d: stopped training job %s: %s", self.fold, self.job_name, why)
        else:
            self.log.info("Fold %d: training job %s had already ended (%s)", self.fold, self.job_name, why)
