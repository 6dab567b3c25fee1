"""What the tests meet differently across Airflow versions (the package's own: airflow_smx/compat.py)."""

from __future__ import annotations

import functools

from packaging.version import Version

from airflow_smx.compat import AIRFLOW_VERSION

PROVIDER_CLI = Version("3.2") <= AIRFLOW_VERSION  # Airflow loads a provider's "cli" commands
# `airflow dags list -l`: parse the DAG folder rather than read the database (Airflow 2 always parses)
PARSE_DAGS = ["--local"] if Version("3") <= AIRFLOW_VERSION else []

try:  # Airflow 3.1+
    from airflow.sdk.exceptions import TaskDeferralError, TaskDeferred
except ImportError:  # Airflow 2, 3.0
    from airflow.exceptions import TaskDeferralError, TaskDeferred

try:  # Airflow 3.2+
    from airflow.dag_processing.dagbag import DagBag
except ImportError:
    from airflow.models.dagbag import DagBag

try:  # Airflow 3
    from airflow.models.xcom import XComModel
except ImportError:  # Airflow 2: the ORM model is XCom itself
    from airflow.models.xcom import XCom as XComModel

try:  # Airflow 3: why a deferred task resumes in its __fail__ method
    from airflow.sdk.bases.operator import TriggerFailureReason

    TRIGGER_FAILURE: object = TriggerFailureReason.TRIGGER_FAILURE
except ImportError:  # Airflow 2: as text
    TRIGGER_FAILURE = "Trigger failure"


def asset_condition(timetable: object) -> object:
    """What an asset-scheduled DAG waits for (Airflow 2 calls assets datasets)."""
    return getattr(timetable, "asset_condition", None) or timetable.dataset_condition


__all__ = [
    "PARSE_DAGS",
    "PROVIDER_CLI",
    "TRIGGER_FAILURE",
    "DagBag",
    "TaskDeferralError",
    "TaskDeferred",
    "XComModel",
    "asset_condition",
]


def share_in_process_api() -> None:
    """dag.test() runs each task against an in-process Execution API. Airflow 3.0 to 3.2 build a new
    one for every task (about 1.5 s of FastAPI and Cadwyn routing each, most of a matrix run's
    time); 3.3 keeps one (``functools.lru_cache`` on ``in_process_api_server``). The tests keep one
    on every version."""
    try:
        from airflow.sdk.execution_time import supervisor
    except ImportError:  # Airflow 2: dag.test() runs tasks in the test's own process
        return
    if not hasattr(supervisor.in_process_api_server, "cache_info"):
        supervisor.in_process_api_server = functools.lru_cache(maxsize=1)(supervisor.in_process_api_server)
