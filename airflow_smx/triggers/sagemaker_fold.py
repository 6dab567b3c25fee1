"""A SageMaker training trigger that stops its job when the user kills the deferred task."""

from __future__ import annotations

from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger
from botocore.exceptions import ClientError

from airflow_smx.compat import sagemaker_trigger_arguments, trigger_hook
from airflow_smx.hooks.sagemaker import already_ended


class SageMakerFoldTrainingTrigger(SageMakerTrigger):
    """Waits for a fold's training job; on a user kill (clear, mark failed) it stops the job.

    The stock trigger lets the job run on after the task is gone: spend nobody sees. Airflow
    calls ``on_kill`` only on a user's action, not on a triggerer restart or a timeout (the
    operator stops the job on a timeout when the task resumes).

    Before amazon 9.32 the stock trigger serializes as itself, so this one runs as the stock
    trigger there; ``on_kill`` needs Airflow 3.3 anyway (elsewhere the run's teardown stops a
    cancelled fold's job).

    :param job_name: the training job to wait for
    """

    def __init__(self, job_name: str, job_type: str = "Training", **kwargs):
        super().__init__(job_name=job_name, job_type=job_type, **sagemaker_trigger_arguments(kwargs))

    async def on_kill(self) -> None:
        async with await trigger_hook(self).get_async_conn() as client:
            try:
                await client.stop_training_job(TrainingJobName=self.job_name)
                self.log.info("Stopped training job %s", self.job_name)
            except ClientError as error:
                if not already_ended(error):
                    raise
                self.log.info("Training job %s had already ended: %s", self.job_name, error)
