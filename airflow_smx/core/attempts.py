"""A fold's training attempts: their names, what a new try of its task does, why a job failed. No Airflow.

A fold may train more than once in a run: a user clears its failed task, or its job failed for
a reason that may not recur (no capacity, an internal error). Each attempt is its own training
job, since a job name can never be used twice: attempt 1 is the fold's name as planned
(SMX-Validator's shape), attempt n is ``{name}-r{n}``. A try finds the fold's latest attempt by
describing names in turn (never by listing the account's jobs) and then:

=========================================  =============================================
latest attempt                              the try
=========================================  =============================================
none                                        creates attempt 1
InProgress, of these folds                  re-attaches to it (an automatic retry after a
                                            worker or triggerer crash)
InProgress, of other folds; Stopping        stops it; creates attempt n + 1
Completed, of these folds                   re-uses it (never pays twice for the same data)
Completed, of other folds                   creates attempt n + 1 (the input changed)
Failed or Stopped, transiently              creates attempt n + 1
Failed or Stopped for good                  creates attempt n + 1 if the try is the first
                                            since the run started or a user cleared the
                                            task; an automatic retry ends as that job did
=========================================  =============================================

"These folds" means the job's ``FOLDS_TAG`` equals the digest of the plan the task was mapped
with (:func:`folds_digest`): the input's checksum and every CV setting. A final failure fails
its task without retries; an automatic retry meets one only when the try that should have
reported it died first (a killed worker, apache/airflow#72716's stale event), and must not pay
for the same failure again.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from airflow_smx.core.naming import MAX_ATTEMPTS, attempt_name

ATTEMPT_TAG = "airflow_smx_attempt"  # "n": which attempt of its fold a job is
FOLDS_TAG = "airflow_smx_folds"  # the digest of the folds it trained on
RUNNING = ("InProgress", "Stopping")


class Step(Enum):
    CREATE = "create"
    ATTACH = "attach"
    REUSE = "reuse"
    REPLACE = "replace"  # stop the latest, then create the next
    REPORT = "report"  # end as the latest ended (a final failure, met by an automatic retry)


def folds_digest(identity: dict[str, Any]) -> str:
    """16 hex digits of a plan's identity (input checksum, strategy, seed, ...): equal, same folds."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def tags_of(config_or_record: dict[str, Any]) -> dict[str, str]:
    """A CreateTrainingJob request's (or a local record's) tags, by key."""
    return {tag["Key"]: tag["Value"] for tag in config_or_record.get("Tags", [])}


def attempt_config(config: dict[str, Any], number: int) -> dict[str, Any]:
    """The CreateTrainingJob request of attempt ``number`` of the fold planned as ``config``."""
    attempt = copy.deepcopy(config)
    attempt["TrainingJobName"] = attempt_name(config["TrainingJobName"], number)
    attempt["Tags"] = [t for t in config.get("Tags", []) if t["Key"] != ATTEMPT_TAG]
    attempt["Tags"].append({"Key": ATTEMPT_TAG, "Value": str(number)})
    return attempt


@dataclass(frozen=True)
class Attempt:
    """One training job of a fold, as its backend found it.

    :param number: 1 for the planned name, n for ``-r{n}``
    :param description: DescribeTrainingJob (or the local backend's record of the same shape)
    :param tags: the job's tags, by key
    """

    number: int
    description: dict[str, Any]
    tags: dict[str, str]

    @property
    def name(self) -> str:
        return self.description["TrainingJobName"]

    @property
    def status(self) -> str:
        return self.description["TrainingJobStatus"]

    def of_folds(self, digest: str) -> bool:
        return self.tags.get(FOLDS_TAG, "") == digest

    def summary(self) -> dict[str, Any]:
        """What ``cv_result.json`` lists of every attempt."""
        ended = self.status in ("Failed", "Stopped")
        reason = (self.description.get("FailureReason") or secondary_status(self.description)) if ended else None
        return {
            "attempt": self.number,
            "job_name": self.name,
            "status": self.status,
            "reason": reason,
            "kind": failure_kind(self.description) if ended else None,
        }


def find_attempts(first: str, lookup: Callable[[str], dict[str, Any] | None]) -> list[dict[str, Any]]:
    """Every attempt of the fold whose first job is ``first``, in order, looked up by name
    (attempts are made in turn: one lookup per attempt, plus one)."""
    found = []
    for number in range(1, MAX_ATTEMPTS + 1):
        description = lookup(attempt_name(first, number))
        if description is None:
            break
        found.append(description)
    return found


def owner_problem(latest: Attempt, config: dict[str, Any], run_tag: str) -> str | None:
    """Why ``latest`` is not this task's to re-attach, re-use or replace: another Airflow run made it."""
    ours, theirs = tags_of(config).get(run_tag), latest.tags.get(run_tag)
    if ours is None or theirs == ours:
        return None
    return (
        f"A training job named {latest.name} already exists and belongs to Airflow run {theirs!r}, "
        f"not {ours!r}: refusing to re-attach. Give this run another name or timestamp."
    )


def next_step(latest: Attempt | None, digest: str, fresh: bool = True) -> tuple[Step, int]:
    """What a try of the fold's task does, and with which attempt number (see the module's table).

    :param fresh: the try is the first since the run started or a user cleared the task
        (:func:`first_since_clear`), not an automatic retry
    """
    if latest is None:
        return Step.CREATE, 1
    if latest.status == "InProgress" and latest.of_folds(digest):
        return Step.ATTACH, latest.number
    if latest.status in RUNNING:
        return Step.REPLACE, latest.number + 1
    if latest.status == "Completed" and latest.of_folds(digest):
        return Step.REUSE, latest.number
    if latest.status != "Completed" and not fresh and not is_transient(latest.description):
        return Step.REPORT, latest.number
    return Step.CREATE, latest.number + 1


def first_since_clear(try_number: int, max_tries: int, retries: int) -> bool:
    """Whether a task's try is its first since its run started or it was cleared: a clear sets
    ``max_tries`` to the last try number plus the task's retries (Airflow's own reckoning)."""
    return try_number <= max_tries - retries + 1


# Why a job failed, from SageMaker's FailureReason prefix and secondary status. Transient: the
# same request may well succeed later, so the task's retries train a new attempt. Anything else
# is final (the task fails without spending its retries; a user's clear still retrains it): an
# unknown reason costs a job each retry, so it is not guessed transient.
TRANSIENT_REASONS = (
    "CapacityError",  # "Unable to provision requested ML compute capacity"
    "InsufficientCapacityError",
    "InternalServerError",  # "We encountered an internal error. Please try again."
    "InternalFailure",
    "ServiceUnavailable",
    "ThrottlingException",
)
# Final, among others: AlgorithmError (the training code failed: it would fail again on the same
# data), ClientError (the request, data, image or permissions are wrong), and a Stopped job whose
# secondary status is MaxRuntimeExceeded (too slow for its limit) or Stopped (stopped on purpose).
TRANSIENT_SECONDARY = ("MaxWaitTimeExceeded",)  # spot capacity did not come back within MaxWait


def is_transient(description: dict[str, Any]) -> bool:
    """Whether an ended, unsuccessful job may succeed if trained again as it was."""
    if description.get("TrainingJobStatus") == "Stopped":
        return secondary_status(description) in TRANSIENT_SECONDARY
    reason = (description.get("FailureReason") or "").strip()
    return reason.startswith(TRANSIENT_REASONS)


def secondary_status(description: dict[str, Any]) -> str:
    """Where the job ended: SecondaryStatus, else the last of its SecondaryStatusTransitions."""
    transitions = description.get("SecondaryStatusTransitions") or [{}]
    return description.get("SecondaryStatus") or transitions[-1].get("Status", "")


def failure_kind(description: dict[str, Any]) -> str:
    """``transient`` or ``final``, for logs and the result."""
    return "transient" if is_transient(description) else "final"
