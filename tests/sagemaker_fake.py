"""moto's SageMaker, filled in where it falls short of the real service.

moto completes every training job at creation, has no StopTrainingJob, silently overwrites a
job created twice, and answers DescribeExperiment for a missing experiment with an HTTP 500. The
fake records every create and stop, starts jobs InProgress, refuses a second job of one name
(ResourceInUse), lets a test drive a job to its end with metrics and billing, and can refuse
creates (of either kind) with ResourceLimitExceeded. Processing jobs (moto completes them at once, doing nothing)
start InProgress and, where a test asks, run on this machine as their container would
(:meth:`FakeSageMaker.run_locally`). It patches moto's backend and responses classes, so it works
through moto's server as well.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import boto3
from moto.sagemaker import models, responses

try:  # moto 5.2
    from moto.core.exceptions import ServiceException
except ImportError:
    ServiceException = type(None)
from moto.sagemaker.exceptions import ResourceInUseException, ResourceNotFound, SagemakerClientError, ValidationError

from airflow_smx.core.folds.offload import CONTAINER


def _aws_error(code: str, message: str) -> type[Exception]:
    """An AWS error class by code. moto 5.2 reads the code from the class; the 5.0 and 5.1 that
    MWAA's images pin take it as an argument of their JSON error (their ``code`` is the HTTP status)."""
    if issubclass(SagemakerClientError, ServiceException):
        return type(
            code,
            (SagemakerClientError,),
            {"code": code, "__init__": lambda self: SagemakerClientError.__init__(self, message)},
        )
    from moto.core.exceptions import JsonRESTError as base

    return type(code, (base,), {"__init__": lambda self: base.__init__(self, code, message)})


def _empty_result() -> Any:
    """An action's empty answer: moto 5.2 serializes an ActionResult; 5.0 and 5.1 take the JSON text."""
    return responses.ActionResult({}) if hasattr(responses, "ActionResult") else "{}"


LimitExceeded = _aws_error(
    "ResourceLimitExceeded", "The account-level service limit 'ml.m5.large for training job usage' is 1 Instances"
)
Throttled = _aws_error("ThrottlingException", "Rate exceeded")


class FakeSageMaker:
    def __init__(self, monkeypatch: Any):
        self.creates: list[dict[str, Any]] = []
        self.stops: list[str] = []
        self.describes: dict[str, int] = {}  # Describe{Training,Processing}Job calls per job: a test waits on them
        self.refuse_creates = 0
        self.before_create: Any = None  # called with the job name before a create: a racing client
        self.fault: Any = None  # called with the operation's name before each training-job call: may raise
        self.lock = threading.Lock()
        self.processing_creates: list[dict[str, Any]] = []
        self.processing_requests: dict[str, dict[str, Any]] = {}  # CreateProcessingJob as sent, by name
        self.run_processing = False  # True: a created Processing job runs here, as its container would
        self.processing_logs: dict[str, str] = {}
        self.harness_errors: list[BaseException] = []
        original_create = models.SageMakerModelBackend.create_training_job
        fake = self

        def create_training_job(backend, training_job_name, *args, **kwargs):
            fake.call("CreateTrainingJob")
            if fake.before_create is not None:
                fake.before_create(training_job_name)
            with fake.lock:
                fake.creates.append({"name": training_job_name, **kwargs})
                if fake.refuse_creates:
                    fake.refuse_creates -= 1
                    raise LimitExceeded()
                if training_job_name in backend.training_jobs:
                    raise ResourceInUseException(message=f"Training job {training_job_name} already exists")
            result = original_create(backend, training_job_name, *args, **kwargs)
            job = backend.training_jobs[training_job_name]
            job.training_job_status, job.secondary_status = "InProgress", "Training"
            job.final_metric_data_list = []
            fake.backend = backend
            return result

        def stop_training_job(backend, training_job_name):
            fake.call("StopTrainingJob")
            job = backend.training_jobs.get(training_job_name)
            if job is None:
                raise ValidationError(message="Requested resource not found.")
            if job.training_job_status != "InProgress":
                raise ValidationError(
                    message=f"The request was rejected because the training job is in status {job.training_job_status}."
                )
            with fake.lock:
                fake.stops.append(training_job_name)
            job.training_job_status, job.secondary_status = "Stopped", "Stopped"

        def stop_response(self):
            self.sagemaker_backend.stop_training_job(self._get_param("TrainingJobName"))
            return _empty_result()

        original_describe_job = models.SageMakerModelBackend.describe_training_job

        def describe_training_job(backend, training_job_name):
            fake.call("DescribeTrainingJob")
            with fake.lock:
                fake.describes[training_job_name] = fake.describes.get(training_job_name, 0) + 1
            return original_describe_job(backend, training_job_name)

        original_list_tags = models.SageMakerModelBackend.list_tags

        def list_tags(backend, *args, **kwargs):
            fake.call("ListTags")
            return original_list_tags(backend, *args, **kwargs)

        original_describe_experiment = models.SageMakerModelBackend.describe_experiment

        def describe_experiment(backend, experiment_name):
            if experiment_name not in backend.experiments:  # moto raises a KeyError (HTTP 500)
                raise ResourceNotFound(message=f"Experiment '{experiment_name}' does not exist.")
            return original_describe_experiment(backend, experiment_name)

        original_create_processing = models.SageMakerModelBackend.create_processing_job

        def create_processing_job(backend, **kwargs):
            processing_job_name = kwargs["processing_job_name"]
            with fake.lock:
                fake.processing_creates.append({"name": processing_job_name, **kwargs})
                if fake.refuse_creates:
                    fake.refuse_creates -= 1
                    raise LimitExceeded()
                if processing_job_name in backend.processing_jobs:
                    raise ResourceInUseException(message=f"Processing job {processing_job_name} already exists")
            job = original_create_processing(backend, **kwargs)
            job.processing_job_status, job.processing_end_time = "InProgress", None
            fake.backend = backend
            if fake.run_processing:
                threading.Thread(target=fake.run_or_fail, args=(job,), daemon=True).start()
            return job

        original_describe_processing = models.SageMakerModelBackend.describe_processing_job

        def describe_processing_job(backend, processing_job_name):
            with fake.lock:
                fake.describes[processing_job_name] = fake.describes.get(processing_job_name, 0) + 1
            return original_describe_processing(backend, processing_job_name)

        def stop_processing_job(backend, processing_job_name):
            job = backend.processing_jobs.get(processing_job_name)
            if job is None:
                raise ValidationError(message="Requested resource not found.")
            if job.processing_job_status != "InProgress":
                raise ValidationError(message=f"The processing job is in status {job.processing_job_status}.")
            with fake.lock:
                fake.stops.append(processing_job_name)
            job.processing_job_status = "Stopped"

        def stop_processing_response(self):
            self.sagemaker_backend.stop_processing_job(self._get_param("ProcessingJobName"))
            return _empty_result()

        original_create_processing_response = responses.SageMakerResponse.create_processing_job

        def create_processing_response(self):  # moto drops ProcessingResources and Environment: keep the request
            request = json.loads(self.body)
            with fake.lock:
                fake.processing_requests[request["ProcessingJobName"]] = request
            return original_create_processing_response(self)

        monkeypatch.setattr(responses.SageMakerResponse, "create_processing_job", create_processing_response)
        monkeypatch.setattr(models.SageMakerModelBackend, "create_processing_job", create_processing_job)
        monkeypatch.setattr(models.SageMakerModelBackend, "describe_processing_job", describe_processing_job)
        monkeypatch.setattr(models.SageMakerModelBackend, "stop_processing_job", stop_processing_job, raising=False)
        monkeypatch.setattr(responses.SageMakerResponse, "stop_processing_job", stop_processing_response, raising=False)
        monkeypatch.setattr(models.SageMakerModelBackend, "list_tags", list_tags)
        monkeypatch.setattr(models.SageMakerModelBackend, "describe_experiment", describe_experiment)
        monkeypatch.setattr(models.SageMakerModelBackend, "describe_training_job", describe_training_job)
        monkeypatch.setattr(models.SageMakerModelBackend, "create_training_job", create_training_job)
        monkeypatch.setattr(models.SageMakerModelBackend, "stop_training_job", stop_training_job, raising=False)
        monkeypatch.setattr(responses.SageMakerResponse, "stop_training_job", stop_response, raising=False)

    def run_or_fail(self, job: Any) -> None:
        """run_locally on the server's side: a failure of the harness itself fails the job (and is
        kept for the test to see) rather than leave it InProgress for the DAG to wait on."""
        try:
            self.run_locally(job)
        except BaseException as error:
            self.harness_errors.append(error)
            job.failure_reason, job.processing_job_status = f"the test harness failed: {error!r}", "Failed"

    def run_locally(self, job: Any) -> None:
        """Run a Processing job as SageMaker would, on this machine: for each of its instances, a
        temporary folder standing for that container's /opt/ml, holding its inputs (downloaded to
        where the container expects them) and SageMaker's resource config naming the hosts; then
        every instance's command at once, the job ending Completed if all exit 0, else Failed. The
        container's own first step, installing the package from the wheelhouse, is checked, not
        run: this interpreter has it installed already."""
        entrypoint, arguments = (
            job.app_specification["ContainerEntrypoint"],
            job.app_specification["ContainerArguments"],
        )
        assert entrypoint[:2] == ["/bin/sh", "-c"] and "pip install --quiet --no-index --find-links" in entrypoint[2]
        cluster = self.processing_requests[job.processing_job_name]["ProcessingResources"]["ClusterConfig"]
        hosts = [f"algo-{i + 1}" for i in range(cluster["InstanceCount"])]
        with tempfile.TemporaryDirectory() as scratch:
            running = [self._start_instance(job, arguments, Path(scratch) / host, host, hosts) for host in hosts]
            try:
                codes = [process.wait(timeout=300) for process, _ in running]
            finally:  # a host waiting in vain for another fails the test, not hangs it
                for process, _ in running:
                    process.kill()
            logs = [f"[{host}]\n{log.read_text()}" for host, (_, log) in zip(hosts, running, strict=True)]
        self.processing_logs[job.processing_job_name] = "\n".join(logs)
        if job.processing_job_status != "InProgress":  # stopped meanwhile
            return
        failed = next((code for code in codes if code), 0)
        if failed:
            job.failure_reason = f"AlgorithmError: See job logs for more information (exit code {failed})"
        job.processing_job_status = "Failed" if failed else "Completed"

    def _start_instance(
        self, job: Any, arguments: list[str], home: Path, host: str, hosts: list[str]
    ) -> tuple[subprocess.Popen, Path]:
        """One instance's container: ``home`` stands for its /opt/ml."""
        root = home / "processing"
        local = lambda path: path.replace(CONTAINER, str(root))  # noqa: E731
        s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
        for given in job.processing_inputs:
            bucket, _, prefix = given["S3Input"]["S3Uri"].removeprefix("s3://").partition("/")
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    target = Path(local(given["S3Input"]["LocalPath"])) / item["Key"][len(prefix) :].lstrip("/")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    s3.download_file(bucket, item["Key"], str(target))
        (home / "config").mkdir(parents=True)
        (home / "config" / "resourceconfig.json").write_text(json.dumps({"current_host": host, "hosts": hosts}))
        command = [sys.executable if a == "python3" else local(a) for a in arguments]
        log = home / "output.log"
        with log.open("w") as out:  # a file, not a pipe: a host blocked on a full pipe would stall the others
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
        return process, log

    def call(self, operation: str) -> None:
        if self.fault is not None:
            self.fault(operation)

    def job(self, name: str) -> Any:
        return self.backend.training_jobs[name]

    def finish(
        self,
        name: str,
        status: str = "Completed",
        metrics: dict[str, float] | None = None,
        reason: str | None = None,
        billable: int = 120,
        training: int = 150,
    ) -> None:
        """Drive a job to its end, as SageMaker would report it."""
        job = self.job(name)
        job.training_job_status = job.secondary_status = status
        job.final_metric_data_list = [
            {"MetricName": k, "Value": v, "Timestamp": job.training_end_time} for k, v in (metrics or {}).items()
        ]
        job.billable_time_in_seconds = billable
        job.training_time_in_seconds = training
        if reason:
            job.failure_reason = reason
