"""Deployment settings: the ``[smx]`` section of Airflow's configuration.

Set them in airflow.cfg, as ``AIRFLOW__SMX__<OPTION>`` environment variables, or as MWAA
configuration options (``smx.allowed_prefixes``).
"""

from __future__ import annotations

import json
from typing import Any

SECTION = "smx"
OPTIONS: dict[str, dict[str, Any]] = {
    "allowed_prefixes": {
        "description": "JSON list of URI prefixes requests may read and write, e.g. "
        '["s3://my-bucket/cv/"]. Empty (the default): every request is refused until it is set.',
        "default": "[]",
    },
    "role_arn": {
        "description": "SageMaker execution role for requests that do not name one (training.RoleArn).",
        "default": "",
    },
    "aws_conn_id": {"description": "Airflow connection for SageMaker and S3.", "default": "aws_default"},
    "pool": {
        "description": "Pool bounding the ml instances of all CV runs; each fold takes InstanceCount slots. "
        "Create it with: airflow smx setup-pool",
        "default": "sagemaker_ml_instances",
    },
    "pool_slots": {
        "description": "Size of the pool that `airflow smx setup-pool` creates: ml instances training at once.",
        "default": "4",
    },
    "schedule": {
        "description": "Schedule of smx_cross_validation (cron or preset, e.g. @weekly); empty: manual only.",
        "default": "",
    },
    "check_interval": {"description": "Seconds between training job status checks.", "default": "60"},
    "request_file": {
        "description": "Path of a request JSON (ours or SMX-Validator's) for runs without a conf: scheduled "
        "runs, and the DAG smx_cross_validation_on_data, created when this is set, which retrains whenever "
        "the Asset of the request's input URI is updated.",
        "default": "",
    },
}


def get(option: str) -> str:
    from airflow.configuration import conf

    return conf.get(SECTION, option, fallback=OPTIONS[option]["default"])


def allowed_prefixes() -> list[str]:
    value = json.loads(get("allowed_prefixes") or "[]")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"[{SECTION}] allowed_prefixes must be a JSON list of strings, got {value!r}")
    return value


def stored_request() -> dict[str, Any] | None:
    """The request of ``[smx] request_file``, or None when it is not set."""
    path = get("request_file")
    if not path:
        return None
    with open(path) as handle:
        return json.load(handle)


def provider_config() -> dict[str, Any]:
    """The section as the provider declares it (``airflow config list`` shows it)."""
    options = {
        name: {
            "description": spec["description"],
            "version_added": "0.1.0",
            "type": "string",
            "example": None,
            "default": spec["default"],
        }
        for name, spec in OPTIONS.items()
    }
    return {SECTION: {"description": "airflow-smx: cross-validated training", "options": options}}
