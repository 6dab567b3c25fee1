"""Names derived from a request: the CV run id (storage prefix). No Airflow import."""

from __future__ import annotations

import re
from datetime import datetime


def clean_name(name: str) -> str:
    """Letters, digits and single hyphens only: safe in S3 keys and SageMaker resource names."""
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")


def cv_run_id(name: str, when: datetime) -> str:
    """``{name}-{YYYYMMDD}-{HHMMSS}``: the run's folder under the output URI."""
    return f"{clean_name(name)}-{when:%Y%m%d-%H%M%S}"
