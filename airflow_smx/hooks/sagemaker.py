"""The SageMaker calls a cross-validation run makes beyond the amazon provider's hook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook
from botocore.exceptions import ClientError

from airflow_smx.compat import AirflowException
from airflow_smx.core.attempts import Attempt, find_attempts

# SageMaker answers ValidationException "Requested resource not found" for a missing training job
MISSING = ("ValidationException", "ResourceNotFound")
# A Create*Job refused for now, not for good: the task's retry, after its backoff, creates again
RETRYABLE_CREATE_ERRORS = {"ThrottlingException", "ResourceLimitExceeded"}


def error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def created(create: Callable[[], Any], what: str) -> bool:
    """Call ``create`` (a Create*Job); False if a job of that name exists already (ResourceInUse).

    A throttled or limit-refused create fails this try only (``AirflowException``, not final): the
    task's retry, after its backoff, creates again.
    """
    try:
        create()
    except ClientError as error:
        code = error_code(error)
        if code in RETRYABLE_CREATE_ERRORS:
            raise AirflowException(f"{code} creating {what}: {error}") from None
        if code != "ResourceInUse":
            raise
        return False
    return True


def already_ended(error: ClientError) -> bool:
    """StopTrainingJob's answer for a job that is no longer InProgress (or Stopping)."""
    return error_code(error) == "ValidationException"


def _or_none(describe: Callable[[str], dict[str, Any]], job_name: str) -> dict[str, Any] | None:
    try:
        return describe(job_name)
    except ClientError as error:
        if error_code(error) in MISSING:
            return None
        raise


def _stopped(stop: Callable[..., Any], **job_name: str) -> bool:
    """Whether ``stop`` stopped the job: False if it had already ended (SageMaker refuses then)."""
    try:
        stop(**job_name)
    except ClientError as error:
        if not already_ended(error):
            raise
        return False
    return True


class CrossValidationSageMakerHook(SageMakerHook):
    """``SageMakerHook`` plus describe-or-None, a job's tags, a fold's attempts, a stop that tolerates
    an ended job, and the Experiments trial of a run: what the fold operator, the aggregation and
    the run's teardown share."""

    def describe_training_job_or_none(self, job_name: str) -> dict[str, Any] | None:
        """DescribeTrainingJob, or None when there is no such job (never by paging ListTrainingJobs)."""
        return _or_none(self.describe_training_job, job_name)

    def describe_processing_job_or_none(self, job_name: str) -> dict[str, Any] | None:
        """DescribeProcessingJob, or None when there is no such job."""
        return _or_none(self.describe_processing_job, job_name)

    def processing_attempts(self, first: str) -> list[dict[str, Any]]:
        """DescribeProcessingJob of every attempt of the split whose first job is ``first``, in order."""
        return find_attempts(first, self.describe_processing_job_or_none)

    def stop_processing_job(self, job_name: str) -> bool:
        """Stop a processing job; False if it had already ended."""
        return _stopped(self.conn.stop_processing_job, ProcessingJobName=job_name)

    def training_job_tags(self, job_arn: str) -> dict[str, str]:
        """A training job's tags, by key (a job holds at most 50: one page)."""
        return {tag["Key"]: tag["Value"] for tag in self.conn.list_tags(ResourceArn=job_arn).get("Tags", [])}

    def attempts(self, first: str) -> list[dict[str, Any]]:
        """DescribeTrainingJob of every attempt of the fold whose first job is ``first``, in order."""
        return find_attempts(first, self.describe_training_job_or_none)

    def latest_attempt(self, first: str) -> Attempt | None:
        """The fold's latest training job with its tags, or None if it has none yet."""
        found = self.attempts(first)
        if not found:
            return None
        return Attempt(len(found), found[-1], self.training_job_tags(found[-1]["TrainingJobArn"]))

    def stop_training_job(self, job_name: str) -> bool:
        """Stop a training job; False if it had already ended."""
        return _stopped(self.conn.stop_training_job, TrainingJobName=job_name)

    def ensure_trial(self, experiment: str, trial: str, tags: list[dict[str, str]]) -> None:
        """Create the experiment and the run's trial if missing, before any job names them (as
        SMX-Validator did: one experiment, one trial per CV run)."""
        if not self._exists(self.conn.describe_experiment, ExperimentName=experiment):
            self.conn.create_experiment(
                ExperimentName=experiment, Description="Cross-validated training runs (airflow-smx)", Tags=tags
            )
        if not self._exists(self.conn.describe_trial, TrialName=trial):
            self.conn.create_trial(TrialName=trial, ExperimentName=experiment, Tags=tags)

    def register_model_package(self, package: dict[str, Any], group_tags: list[dict[str, str]]) -> dict[str, Any]:
        """Create ``package`` as a new version of its group (the group too, if missing); the
        version as DescribeModelPackage shows it. Its ``ClientToken`` makes a retry of the same
        run's call return the same version (moto ignores it: there, a retry adds one)."""
        group = package["ModelPackageGroupName"]
        if not self._exists(self.conn.describe_model_package_group, ModelPackageGroupName=group):
            try:
                self.conn.create_model_package_group(
                    ModelPackageGroupName=group,
                    ModelPackageGroupDescription="Models refit by cross-validated runs (airflow-smx)",
                    Tags=group_tags,
                )
            except ClientError as error:  # another run created it a moment ago
                if "already exists" not in str(error):
                    raise
        arn = self.conn.create_model_package(**package)["ModelPackageArn"]
        return self.conn.describe_model_package(ModelPackageName=arn)

    @staticmethod
    def _exists(describe: Any, **name: str) -> bool:
        try:
            describe(**name)
        except ClientError as error:
            if error_code(error) in MISSING:
                return False
            raise
        return True
