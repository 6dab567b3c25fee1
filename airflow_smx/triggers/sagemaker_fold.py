"""A SageMaker job trigger (training or processing) that stops its job when the user kills the deferred task."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger
from airflow.triggers.base import TriggerEvent
from botocore.exceptions import ClientError

from airflow_smx.compat import LEGACY_SAGEMAKER_TRIGGER, AirflowException, sagemaker_trigger_arguments, trigger_hook
from airflow_smx.hooks.sagemaker import already_ended


class SageMakerFoldTrainingTrigger(SageMakerTrigger):
    """Waits for a fold's training job; on a user kill (clear, mark failed) it stops the job.

    The stock trigger lets the job run on after the task is gone: spend nobody sees. Airflow
    calls ``on_kill`` only on a user's action, not on a triggerer restart or a timeout (the
    operator stops the job on a timeout when the task resumes).

    Before amazon 9.32 the stock trigger serializes under its own class path and raises when the
    job fails; this one keeps its own path and reports a failed job as 9.32 does (the operator
    then ends as the job did). ``on_kill`` needs Airflow 3.3 (before, the run's teardown stops a
    cancelled fold's job).

    The split's Processing job is waited for (and stopped) the same way.

    :param job_name: the job to wait for
    :param job_type: ``Training`` (a fold) or ``Processing`` (the split)
    """

    def __init__(self, job_name: str, job_type: str = "Training", **kwargs):
        super().__init__(job_name=job_name, job_type=job_type, **sagemaker_trigger_arguments(kwargs))

    @classmethod
    def waiting(
        cls, operator: Any, job_name: str, timeout: int, job_type: str = "Training"
    ) -> SageMakerFoldTrainingTrigger:
        """The trigger that waits up to ``timeout`` seconds for ``job_name``, checking every
        ``operator.check_interval`` seconds, with the operator's AWS connection."""
        return cls(
            job_name=job_name,
            job_type=job_type,
            waiter_delay=operator.check_interval,
            waiter_max_attempts=math.ceil(timeout / operator.check_interval) + 1,
            aws_conn_id=operator.aws_conn_id,
            region_name=operator.region_name,
            verify=operator.verify,
            botocore_config=operator.botocore_config,
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, arguments = super().serialize()
        return f"{type(self).__module__}.{type(self).__qualname__}", arguments

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            async for event in super().run():
                yield event
        except AirflowException as error:
            if not LEGACY_SAGEMAKER_TRIGGER:
                raise
            # amazon before 9.32 raises when the job failed: report it, as 9.32 does, so the task
            # resumes and ends as its job did instead of failing its try in the triggerer
            yield TriggerEvent({"status": "error", "message": str(error), "job_name": self.job_name})

    async def on_kill(self) -> None:
        kind = self.job_type.lower()
        async with await trigger_hook(self).get_async_conn() as client:
            try:
                await getattr(client, f"stop_{kind}_job")(**{f"{self.job_type}JobName": self.job_name})
                self.log.info("Stopped %s job %s", kind, self.job_name)
            except ClientError as error:
                if not already_ended(error):
                    raise
                self.log.info("%s job %s had already ended: %s", self.job_type, self.job_name, error)
