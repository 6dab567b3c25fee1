"""The fold training operators, one per backend: ``sagemaker_fold`` (a subclass of the amazon
provider's ``SageMakerTrainingOperator``) and ``local_fold``. They receive user data, so none
declares a templated field. May import Airflow, the amazon provider, ``hooks``, ``triggers``
and ``airflow_smx.core``."""

from __future__ import annotations

from typing import Any

from airflow_smx.core.attempts import first_since_clear


def fresh_try(context: Any, retries: int | None) -> bool:
    """Whether this try of a fold task is its first since the run started or a user cleared it
    (else an automatic retry). Without a task instance (an operator run by hand), it is."""
    ti = context.get("ti") if hasattr(context, "get") else None
    if ti is None:
        return True
    return first_since_clear(ti.try_number, ti.max_tries, retries or 0)
