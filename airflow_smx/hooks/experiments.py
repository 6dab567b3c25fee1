"""SageMaker Experiments bookkeeping, as SMX-Validator did: one experiment, one trial per CV run."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

MISSING = ("ResourceNotFound", "ValidationException")


def ensure_trial(client: Any, experiment: str, trial: str, tags: list[dict[str, str]]) -> None:
    """Create the experiment (if missing) and the run's trial (if missing) before any job names them."""
    if not _exists(client.describe_experiment, ExperimentName=experiment):
        client.create_experiment(
            ExperimentName=experiment,
            Description="Cross-validated training runs (airflow-smx)",
            Tags=tags,
        )
    if not _exists(client.describe_trial, TrialName=trial):
        client.create_trial(TrialName=trial, ExperimentName=experiment, Tags=tags)


def _exists(describe: Any, **name: str) -> bool:
    try:
        describe(**name)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in MISSING:
            return False
        raise
    return True
