"""Every difference between the Airflow versions airflow-smx meets, in one place.

The rest of the package imports Airflow's DAG-authoring names from here and reads as if there
were one version. Where they live (checked against the wheels of Amazon MWAA's images):

- Airflow 3.1 and later: ``airflow.sdk`` has them all.
- Airflow 3.0: ``airflow.sdk`` lacks ``TriggerRule`` and exports no ``literal``; the exceptions
  are ``airflow.exceptions``' (common-compat 1.7 has no ``sdk`` module to hide this); a task's
  ``retry_exponential_backoff`` is a flag, not a multiplier.
- Airflow 2.x: no ``airflow.sdk``; an Asset is a ``Dataset``, which has a URI but no name, and a
  deferral timeout reaches the operator as a string, not a ``TriggerFailureReason``.
- amazon provider before 9.32: ``SageMakerTrigger(poke_interval, max_attempts, aws_conn_id)``, a
  trigger that serializes under its own class path (a subclass would run as the stock trigger)
  and raises, rather than reports, when the job fails; from 9.32 it is an ``AwsBaseWaiterTrigger``.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from airflow import __version__ as _airflow_version
from packaging.version import Version

AIRFLOW_VERSION = Version(Version(_airflow_version).base_version)
AMAZON_VERSION = Version(version("apache-airflow-providers-amazon"))
# retry_exponential_backoff: a multiplier from Airflow 3.1 on, a flag (doubling) before
RETRY_BACKOFF: float | bool = 2.0 if Version("3.1") <= AIRFLOW_VERSION else True

try:  # Airflow 3: the Task SDK
    from airflow.sdk import DAG, Asset, BaseOperator, Param, TaskGroup, task
except ImportError:  # Airflow 2
    from airflow.datasets import Dataset as Asset
    from airflow.decorators import task
    from airflow.models.baseoperator import BaseOperator
    from airflow.models.dag import DAG
    from airflow.models.param import Param
    from airflow.utils.task_group import TaskGroup

try:  # Airflow 3.1+
    from airflow.sdk import TriggerRule, literal
except ImportError:
    from airflow.utils.trigger_rule import TriggerRule

    try:  # Airflow 3.0
        from airflow.sdk.definitions.template import literal
    except ImportError:  # Airflow 2
        from airflow.utils.template import literal

try:  # Airflow 3.1+: what a task raises is the Task SDK's
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
except ImportError:
    from airflow.exceptions import AirflowException, AirflowFailException

try:  # Airflow 3
    from airflow.sdk.bases.operator import TriggerFailureReason

    DEFERRAL_TIMEOUT: Any = TriggerFailureReason.TRIGGER_TIMEOUT
except ImportError:  # Airflow 2 sends the reason as text
    DEFERRAL_TIMEOUT = "Trigger/execution timeout"

TRIGGER_FAIL = "__fail__"  # the method a task resumes in when its trigger failed or timed out

__all__ = [
    "DAG",
    "LEGACY_SAGEMAKER_TRIGGER",
    "RETRY_BACKOFF",
    "AirflowException",
    "AirflowFailException",
    "Asset",
    "BaseOperator",
    "Param",
    "TaskGroup",
    "TriggerRule",
    "asset",
    "deferral_timed_out",
    "literal",
    "sagemaker_trigger_arguments",
    "task",
    "trigger_hook",
]


def asset(uri: str, name: str | None = None) -> Any:
    """An Asset; on Airflow 2 a Dataset, which is known by its URI alone (the name is dropped)."""
    try:
        return Asset(uri=uri, name=name) if name else Asset(uri=uri)
    except TypeError:  # Dataset(uri) has no name
        return Asset(uri=uri)


def deferral_timed_out(next_method: str, next_kwargs: dict[str, Any] | None) -> bool:
    """Whether a task resumes because its deferral timed out (not because its trigger failed)."""
    return next_method == TRIGGER_FAIL and (next_kwargs or {}).get("error") == DEFERRAL_TIMEOUT


LEGACY_SAGEMAKER_TRIGGER = Version("9.32") > AMAZON_VERSION


def sagemaker_trigger_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """``SageMakerTrigger``'s keyword arguments, given in 9.32's names (waiter_delay,
    waiter_max_attempts, aws_conn_id, region_name, verify, botocore_config), for this amazon
    (arguments already in the older names, as the older trigger serializes them, pass as they are)."""
    if not LEGACY_SAGEMAKER_TRIGGER or "poke_interval" in arguments:
        return arguments
    return {
        "poke_interval": arguments["waiter_delay"],
        "max_attempts": arguments["waiter_max_attempts"],
        "aws_conn_id": arguments.get("aws_conn_id"),
    }


def trigger_hook(trigger: Any) -> Any:
    """A SageMaker trigger's hook: a method from amazon 9.32 on, a cached property before."""
    return trigger.hook() if callable(trigger.hook) else trigger.hook
