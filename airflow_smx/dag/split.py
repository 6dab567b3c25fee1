"""The split task: the run's input into folds, in the worker or as a SageMaker Processing job.

An input of at least ``[smx] offload_bytes`` (a SageMaker request's, not a dry run's), or any
input of a request with ``split_on: sagemaker``, is split by a Processing job (:mod:`airflow_smx.core.folds.offload`); the task only starts it and waits
in the triggerer, as a fold does for its training job, with the same rules: a retry re-attaches
to the running job or re-uses the completed one (never a second job for one split), a user's
clear of a failed split starts a new attempt (``-r2``...) once the last one has stopped (it writes
into the same folds), and killing the task, or its deferral timing out, stops the job. Either way the task returns the same thing: one FoldJob per fold.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

from airflow.providers.amazon.aws.operators.sagemaker import SageMakerProcessingOperator

from airflow_smx import settings
from airflow_smx.backends import backend
from airflow_smx.compat import RETRY_BACKOFF, TRIGGER_FAIL, AirflowException, AirflowFailException, deferral_timed_out
from airflow_smx.core import storage
from airflow_smx.core.attempts import RUNNING, TRANSIENT_REASONS
from airflow_smx.core.dry_run import dry_run_report, dry_run_text
from airflow_smx.core.folds import FoldPlan, SplitError, read_plan, split_dataset
from airflow_smx.core.folds import offload as offloaded
from airflow_smx.core.folds.records import largest_run, open_input
from airflow_smx.core.job_requests import CREATED_BY, RUN_TAG, fold_training_config, run_tag_value
from airflow_smx.core.naming import attempt_name, split_job_name, trial_name
from airflow_smx.core.request import CVRequest
from airflow_smx.hooks.s3fs_options import storage_options_for
from airflow_smx.hooks.sagemaker import CrossValidationSageMakerHook, created
from airflow_smx.links.sagemaker import SageMakerProcessingJobLink, SageMakerProcessingLogsLink
from airflow_smx.operators import fresh_try
from airflow_smx.triggers.sagemaker_fold import SageMakerFoldTrainingTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

DRY_RUN_REPORT = "dry_run.json"
STOPPING_WAIT = 900  # seconds a try waits for the run's stopping split job to end before its retry looks again


class Stored(NamedTuple):
    """An input as listed: each file's stored bytes, in key order."""

    sizes: tuple[int, ...]

    @property
    def bytes(self) -> int:
        return sum(self.sizes)

    @property
    def files(self) -> int:
        return len(self.sizes)


@dataclass
class SplitOrder:
    """What one run splits, where to, and how (from check_request's result)."""

    run: dict[str, Any]
    request: CVRequest
    when: datetime.datetime
    folds_uri: str
    options: dict[str, Any] | None

    @classmethod
    def of(cls, run: dict[str, Any]) -> SplitOrder:
        request = CVRequest.model_validate(run["request"])
        folds_uri = storage.join(request.output_uri, run["cv_run_id"], "folds")
        options = storage_options_for(settings.get("aws_conn_id"), request.input.uri, folds_uri)
        return cls(run, request, datetime.datetime.fromisoformat(run["when"]), folds_uri, options)

    @property
    def split_uri(self) -> str:
        """The offloaded split's own folder: its document (``request/``) and a bad input's error."""
        return storage.join(self.request.output_uri, self.run["cv_run_id"], "split")

    @property
    def job_name(self) -> str:
        return split_job_name(self.request.name, self.when, self.run["key"])

    def stored(self) -> Stored:
        """The input's bytes and files, as listed now."""
        try:
            source = open_input(self.request.input.uri, self.request.input.compression, self.options)
        except SplitError as error:  # no such object, an empty prefix: final, as in a split in the worker
            raise AirflowFailException(f"cannot split: {error}") from None
        return Stored(tuple(part.listed_size for part in getattr(source, "parts", [source])))

    def split_here(self) -> FoldPlan:
        try:
            return split_dataset(
                self.request.input,
                self.request.cv,
                self.folds_uri,
                assemble_train=self.request.channels.train.needs_single_object,
                storage_options=self.options,
                write=not self.request.dry_run,
                final=self.request.refit,
            )
        except SplitError as error:
            raise AirflowFailException(f"cannot split: {error}") from None

    def document(self, attempt: str) -> dict[str, Any]:
        return offloaded.document(
            self.request.input,
            self.request.cv,
            self.folds_uri,
            self.split_uri,
            attempt,
            assemble_train=self.request.channels.train.needs_single_object,
            final=self.request.refit,
        )

    def processing_request(self, offload: settings.Offload, stored: Stored) -> dict[str, Any]:
        role = self.request.training.RoleArn or settings.get("role_arn")
        count = min(offload.instance_count, stored.files)  # a file is one instance's at most
        tags = [
            *(t.model_dump() for t in self.request.tags),
            {"Key": "crossvalidator_job_name", "Value": trial_name(self.request.name, self.when, self.run["key"])},
            {"Key": "created_by", "Value": CREATED_BY},
            {"Key": RUN_TAG, "Value": run_tag_value(self.run["run_id"])},
        ]
        return offloaded.processing_request(
            self.job_name,
            storage.join(self.split_uri, "request") + "/",
            code_uri=offload.code_uri,
            image=offload.image,
            role=role,
            instance_type=offload.instance_type,
            instance_count=count,
            share_bytes=largest_run(stored.sizes, count),  # runs are whole files: some larger than the average
            max_volume_gb=settings.policy().max_volume_gb,
            max_runtime=offload.max_runtime,
            tags=tags,
        )

    def fold_jobs(self, plan: FoldPlan) -> list[dict[str, Any]]:
        """One FoldJob per fold (its CreateTrainingJob request: URIs and counts only); none for a
        dry run, which writes its report instead."""
        request, run = self.request, self.run
        role = settings.get("role_arn") or None
        configs = [
            fold_training_config(request, plan, f, self.when, run["run_id"], role, run["key"]) for f in plan.folds
        ]
        if request.dry_run:
            names = [config["TrainingJobName"] for config in configs]
            report = dry_run_report(request, plan, names, run["cv_run_id"])
            _, fs, path = results_folder(request, run)
            storage.write_json(fs, f"{path}/{DRY_RUN_REPORT}", report)
            print(dry_run_text(report))
            return []
        trainer = backend(request.backend, settings.get("aws_conn_id"))
        trainer.prepare(request, trial_name(request.name, self.when, run["key"]))
        return [trainer.fold_job(request, f.index, c).kwargs() for f, c in zip(plan.folds, configs, strict=True)]


def results_folder(request: CVRequest, run: dict[str, Any]) -> tuple[str, Any, str]:
    """Where a run's results go: ``{output_uri}/{cv_run_id}/results``, as (URI, filesystem, path)."""
    uri = storage.join(request.output_uri, run["cv_run_id"], "results")
    fs, path = storage.filesystem(uri, storage_options_for(settings.get("aws_conn_id"), request.output_uri))
    return uri, fs, path


class SplitDatasetOperator(SageMakerProcessingOperator):
    """Split the run's input into folds; return one FoldJob per fold.

    In the worker, or, above ``[smx] offload_bytes``, as a SageMaker Processing job it waits for
    in the triggerer (see the module). It reads the run's checked request from check_request's
    XCom: nothing is templated, as the request is the user's.

    :param check_interval: seconds between the trigger's status checks of a Processing job
    :param timeout_margin: seconds the wait allows beyond the job's MaxRuntimeInSeconds
    """

    template_fields: Sequence[str] = ()
    aws_hook_class = CrossValidationSageMakerHook
    operator_extra_links = (SageMakerProcessingJobLink(), SageMakerProcessingLogsLink())

    def __init__(self, *, check_interval: int = 30, timeout_margin: int = 1800, **kwargs: Any):
        kwargs.setdefault("retries", 3)  # a killed worker or a storage outage fails a try: the retry
        kwargs.setdefault("retry_delay", datetime.timedelta(seconds=15))  # writes the same bytes, or
        kwargs.setdefault("retry_exponential_backoff", RETRY_BACKOFF)  # finds the split done (plan.json)
        super().__init__(config={}, check_interval=check_interval, deferrable=True, print_log=False, **kwargs)
        self.timeout_margin = timeout_margin

    def execute(self, context: Context) -> list[dict[str, Any]]:
        order = SplitOrder.of(context["ti"].xcom_pull(task_ids="check_request"))
        offload = settings.offload()
        stored = _offloaded(order, offload)
        if stored is None:
            return order.fold_jobs(order.split_here())
        self.config = order.processing_request(offload, stored)
        attempts = self.hook.processing_attempts(order.job_name)
        latest = self._settled(attempts[-1]) if attempts else None
        status = latest["ProcessingJobStatus"] if latest else None
        if status == "InProgress":
            self.log.info("Re-attaching to the split's Processing job %s", latest["ProcessingJobName"])
            return self._wait(context, latest["ProcessingJobName"])
        fresh = fresh_try(context, self.retries)
        if status == "Completed" and not fresh and (plan := self._plan(order)) is not None:
            # an automatic retry (its try died after the job ended); a clear splits again, as the
            # input may have changed since: the job then finds unchanged folds in place and keeps them
            self.log.info("Re-using the split of Processing job %s", latest["ProcessingJobName"])
            return order.fold_jobs(plan)
        failed = latest is not None and status != "Completed"
        if failed and not fresh and not _transient(latest):
            self._finish(order, latest)  # a final failure, met by an automatic retry: end as it did
        return self._wait(context, self._start(order, len(attempts) + 1, stored))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        order = SplitOrder.of(context["ti"].xcom_pull(task_ids="check_request"))
        latest = self._latest(order)
        if latest["ProcessingJobStatus"] in RUNNING:
            self._stop(latest["ProcessingJobName"], f"still running when the wait ended ({event})")
            raise AirflowFailException(f"The split's Processing job {latest['ProcessingJobName']} did not end in time")
        return self._finish(order, latest)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        if next_method == TRIGGER_FAIL:
            order = SplitOrder.of(context["ti"].xcom_pull(task_ids="check_request"))
            latest = self._latest(order)
            if latest["ProcessingJobStatus"] not in RUNNING:  # ended though its wait failed: it decides
                return self._finish(order, latest)
            if deferral_timed_out(next_method, next_kwargs):
                self._stop(latest["ProcessingJobName"], "the deferral timed out")
                raise AirflowFailException(f"The split's Processing job {latest['ProcessingJobName']} timed out")
        # the triggerer lost its connection or was throttled: the job may be fine; the retry re-attaches
        return super().resume_execution(next_method, next_kwargs, context)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """None: the job's inputs are the wheelhouse and its document, not the dataset (the stock
        operator would read a description this task does not keep)."""
        return None

    def on_kill(self) -> None:
        name = self.config.get("ProcessingJobName") if self.config else None
        attempts = self.hook.processing_attempts(name) if name else []
        if attempts and attempts[-1]["ProcessingJobStatus"] == "InProgress":
            self._stop(attempts[-1]["ProcessingJobName"], "the task was killed")

    def _start(self, order: SplitOrder, number: int, stored: Stored) -> str:
        fs, path = storage.filesystem(order.split_uri, order.options)
        storage.remove(fs, [path])  # an earlier attempt's document and error
        config = {**self.config, "ProcessingJobName": attempt_name(self.config["ProcessingJobName"], number)}
        document = order.document(config["ProcessingJobName"])
        storage.write_json(fs, f"{path}/request/{offloaded.DOCUMENT.rsplit('/', 1)[1]}", document)
        cluster = config["ProcessingResources"]["ClusterConfig"]
        self.log.info(
            "Splitting %s (%d MB in %d files) in SageMaker Processing job %s on %d x %s",
            order.request.input.uri,
            stored.bytes // 10**6,
            stored.files,
            config["ProcessingJobName"],
            cluster["InstanceCount"],
            cluster["InstanceType"],
        )
        if not created(lambda: self.hook.create_processing_job(config, wait_for_completion=False), "the split's job"):
            # a racing try of this task created it (the name holds the run's key): wait for that one
            self.log.info("Processing job %s exists already; waiting for it", config["ProcessingJobName"])
        return config["ProcessingJobName"]

    def _settled(self, latest: dict[str, Any]) -> dict[str, Any]:
        """``latest`` once it is no longer Stopping: a stopping job may still write into the run's
        folds, which the next attempt is about to write (SageMaker stops a job within minutes)."""
        deadline = time.monotonic() + STOPPING_WAIT
        while latest["ProcessingJobStatus"] == "Stopping":
            if time.monotonic() > deadline:
                raise AirflowException(f"The split's Processing job {latest['ProcessingJobName']} is still stopping")
            self.log.info("Waiting for the split's Processing job %s to stop", latest["ProcessingJobName"])
            time.sleep(min(self.check_interval, 10))
            latest = self.hook.describe_processing_job_or_none(latest["ProcessingJobName"]) or latest
        return latest

    def _wait(self, context: Context, name: str) -> Any:
        SageMakerProcessingJobLink.persist(
            context=context,
            operator=self,
            region_name=self.hook.conn_region_name,
            aws_partition=self.hook.conn_partition,
            job_name=quote(name, safe=""),
        )
        timeout = self.config["StoppingCondition"]["MaxRuntimeInSeconds"] + self.timeout_margin
        self.defer(
            trigger=SageMakerFoldTrainingTrigger.waiting(self, name, timeout, job_type="Processing"),
            method_name="execute_complete",
            timeout=datetime.timedelta(seconds=timeout),
        )

    def _latest(self, order: SplitOrder) -> dict[str, Any]:
        attempts = self.hook.processing_attempts(order.job_name)
        if not attempts:
            raise AirflowException(f"The split's Processing job {order.job_name} has disappeared")
        return attempts[-1]

    def _plan(self, order: SplitOrder) -> FoldPlan | None:
        try:
            return read_plan(order.folds_uri, order.options)
        except FileNotFoundError:
            return None

    def _finish(self, order: SplitOrder, description: dict[str, Any]) -> list[dict[str, Any]]:
        name, status = description["ProcessingJobName"], description["ProcessingJobStatus"]
        fs, path = storage.filesystem(order.split_uri, order.options)
        storage.remove(fs, [f"{path}/{offloaded.WORK}"])  # what a failed job of several instances left
        if status == "Completed":
            plan = self._plan(order)
            if plan is None:
                raise AirflowFailException(f"Processing job {name} completed without a plan in {order.folds_uri}")
            self.log.info("The split's Processing job %s completed: %d folds", name, len(plan.folds))
            return order.fold_jobs(plan)
        fs, path = storage.filesystem(storage.join(order.split_uri, offloaded.ERROR_FILE), order.options)
        if fs.exists(path):  # the input's fault, in the user's terms, as a split in the worker says it
            raise AirflowFailException(f"cannot split: {fs.cat_file(path).decode()}")
        message = f"The split's Processing job {name} {status}: {description.get('FailureReason') or '(no reason)'}"
        if _transient(description):
            raise AirflowException(message)  # the retry starts a new attempt
        raise AirflowFailException(message)

    def _stop(self, name: str, why: str) -> None:
        if self.hook.stop_processing_job(name):
            self.log.warning("Stopped the split's Processing job %s: %s", name, why)


def _offloaded(order: SplitOrder, offload: settings.Offload) -> Stored | None:
    """The input's size if a Processing job splits it, else None (the worker does)."""
    request = order.request
    if request.dry_run or request.backend != "sagemaker" or request.split_on == "worker":
        return None
    if request.split_on == "auto" and not offload.threshold:
        return None  # no listing of the input for a deployment that never offloads
    stored = order.stored()
    return stored if request.split_on == "sagemaker" or offload.wanted(stored.bytes) else None


def stop_unfinished_split(run: dict[str, Any], aws_conn_id: str | None) -> str | None:
    """The teardown's part: stop the run's split job if it still runs with no task waiting for it
    (a run cancelled while its split was deferred, before Airflow 3.3 calls a trigger's on_kill).
    Its name, if it was stopped."""
    order = SplitOrder.of(run)
    if order.request.backend != "sagemaker":
        return None
    hook = CrossValidationSageMakerHook(aws_conn_id=aws_conn_id)
    attempts = hook.processing_attempts(order.job_name)
    latest = attempts[-1] if attempts else None
    if (
        latest
        and latest["ProcessingJobStatus"] == "InProgress"
        and hook.stop_processing_job(latest["ProcessingJobName"])
    ):
        return latest["ProcessingJobName"]
    return None


def _transient(description: dict[str, Any]) -> bool:
    return (description.get("FailureReason") or "").strip().startswith(TRANSIENT_REASONS)
