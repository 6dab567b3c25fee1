"""Names derived from a request and its run's timestamp. No Airflow import.

SageMaker names (training jobs, trials) must match ``[a-zA-Z0-9](-*[a-zA-Z0-9])*`` and be short
(63 characters for a job); a job name is unique in an account and region forever. The names
keep SMX-Validator's shape, ``crossvalidator-{name}-{YYYYMMDD}-{HHMMSS}-fold{i}``; a name that
does not fit is cut and given a short hash of the whole name, so two long names that share a
beginning still give different jobs.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime

PREFIX = "crossvalidator-"
MAX_JOB_NAME = 63
MAX_GROUP_NAME = 63  # a Model Package Group's name
FINAL = -1  # the fold index of the refit on every record but the hold-out
MAX_TRIAL_NAME = 120
HASH_LENGTH = 8
MAX_ATTEMPTS = 99  # training jobs of one fold in one run
ATTEMPT_ROOM = len(f"-r{MAX_ATTEMPTS}")  # what a fold's first job name leaves free for the others
VALID_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")


def clean_name(name: str) -> str:
    """Letters, digits and single hyphens only: safe in S3 keys and SageMaker resource names."""
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")


def run_key(dag_id: str, run_id: str) -> str:
    """Six hex digits that tell one DAG run from every other. The run's timestamp alone does not:
    whoever triggers a run may choose it (``run_after``), and two names may clean to one
    (``churn xgboost``, ``churn_xgboost``); without this, a run could take over another's folds,
    results and job names."""
    return hashlib.sha256(f"{dag_id}/{run_id}".encode()).hexdigest()[:6]


def timestamp(when: datetime, key: str = "") -> str:
    """``{YYYYMMDD}-{HHMMSS}``, then ``-{key}`` when the run has one."""
    return f"{when:%Y%m%d-%H%M%S}" + (f"-{key}" if key else "")


def cv_run_id(name: str, when: datetime, key: str = "") -> str:
    """``{name}-{YYYYMMDD}-{HHMMSS}-{key}``: the run's folder under the output URI."""
    return f"{clean_name(name)}-{timestamp(when, key)}"


def fold_label(fold: int) -> str:
    """``fold{i}``, or ``final`` for the refit (:data:`FINAL`): in job names, tags and trial components."""
    return "final" if fold == FINAL else f"fold{fold}"


def training_job_name(name: str, when: datetime, fold: int, key: str = "") -> str:
    """``crossvalidator-{name}-{YYYYMMDD}-{HHMMSS}-{key}-fold{fold}`` (``-final`` for the refit): the
    fold's first training job. Valid, and short enough that every attempt's name
    (:func:`attempt_name`) fits 63 characters."""
    return fit_name(PREFIX, name, f"-{timestamp(when, key)}-{fold_label(fold)}", MAX_JOB_NAME - ATTEMPT_ROOM)


def split_job_name(name: str, when: datetime, key: str = "") -> str:
    """``crossvalidator-{name}-{YYYYMMDD}-{HHMMSS}-{key}-split``: the run's split, when a SageMaker
    Processing job makes it (attempts as a fold's: :func:`attempt_name`)."""
    return fit_name(PREFIX, name, f"-{timestamp(when, key)}-split", MAX_JOB_NAME - ATTEMPT_ROOM)


def model_package_group(name: str) -> str:
    """``crossvalidator-{name}``: the Model Package Group that holds every refit model of the name."""
    return fit_name(PREFIX, name, "", MAX_GROUP_NAME)


def attempt_name(first: str, number: int) -> str:
    """The job name of attempt ``number`` of the fold whose first job is ``first``: ``{first}-r{n}``.
    A job name can never be used again, so a fold trained again in its run needs a new one."""
    if not 1 <= number <= MAX_ATTEMPTS:
        raise ValueError(f"{first}: a fold trains at most {MAX_ATTEMPTS} times in one run")
    return first if number == 1 else f"{first}-r{number}"


def trial_name(name: str, when: datetime, key: str = "") -> str:
    """The SageMaker Experiments trial of one CV run: ``crossvalidator-{name}-{YYYYMMDD}-{HHMMSS}-{key}``."""
    return fit_name(PREFIX, name, f"-{timestamp(when, key)}", MAX_TRIAL_NAME)


def fit_name(prefix: str, name: str, suffix: str, limit: int) -> str:
    """``prefix + clean(name) + suffix``, the name cut and hashed if the whole would exceed ``limit``."""
    clean = clean_name(name)
    whole = f"{prefix}{clean}{suffix}"
    if len(whole) <= limit:
        return whole
    digest = hashlib.sha256(name.encode()).hexdigest()[:HASH_LENGTH]
    room = limit - len(prefix) - len(suffix) - len(digest) - 1
    if room < 0:
        raise ValueError(f"no valid name fits {limit} characters with {prefix!r} and {suffix!r}")
    head = clean[:room].rstrip("-")
    return f"{prefix}{head}-{digest}{suffix}" if head else f"{prefix}{digest}{suffix}"
