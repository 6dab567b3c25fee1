"""Deployment settings: the ``[smx]`` section of Airflow's configuration.

Set them in airflow.cfg, as ``AIRFLOW__SMX__<OPTION>`` environment variables, or as MWAA
configuration options (``smx.allowed_prefixes``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from airflow_smx.core.policy import LocalCommand, Policy

SECTION = "smx"
APPROVAL_STATUSES = ("PendingManualApproval", "Approved")
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
    "role_arns": {
        "description": "JSON list of further execution role ARNs a request may name in training.RoleArn. "
        "Empty (the default): requests use role_arn and may name no other.",
        "default": "[]",
    },
    "instance_types": {
        "description": "JSON list of ml instance types training jobs may use; fnmatch patterns allowed "
        '(["ml.m5.*", "ml.g5.xlarge"]).',
        "default": json.dumps(list(Policy.instance_types)),
    },
    "max_instance_count": {
        "description": "Most ml instances one training job may use (ResourceConfig.InstanceCount).",
        "default": str(Policy.max_instance_count),
    },
    "max_volume_gb": {
        "description": "Largest VolumeSizeInGB of a training instance (or Debugger/Profiler rule instance).",
        "default": str(Policy.max_volume_gb),
    },
    "max_runtime_seconds": {
        "description": "Longest StoppingCondition.MaxRuntimeInSeconds a request may set (a request that sets "
        "none gets SageMaker's default, 86400).",
        "default": str(Policy.max_runtime_seconds),
    },
    "max_instance_hours": {
        "description": "Ceiling on one run's worst case in instance-hours: jobs (the folds and the refit) x "
        "InstanceCount x MaxRuntimeInSeconds, plus the folds' KeepAlivePeriodInSeconds.",
        "default": f"{Policy.max_instance_hours:g}",
    },
    "local_commands": {
        "description": "JSON object naming the commands the local backend may run, e.g. "
        '{"sklearn": {"command": ["/usr/bin/python3", "/opt/train.py"], "env": {}, "workdir": null}} '
        '(or {"sklearn": ["/usr/bin/python3", "/opt/train.py"]}). A request picks one by name. Empty (the '
        "default): no local backend, every request trains on SageMaker. The command gets a minimal "
        "environment (PATH, LANG, LC_ALL, TZ, the SageMaker training variables and its own env), not the "
        "worker's: no Airflow configuration, connections or AWS credentials unless given here.",
        "default": "{}",
    },
    "model_approval_status": {
        "description": "ModelApprovalStatus of the model versions runs register: PendingManualApproval (the "
        "default: someone approves each) or Approved (a deployment that deploys whatever passes the gate). "
        "The deployment's choice: a request cannot approve its own model.",
        "default": "PendingManualApproval",
    },
    "warm_pool_seconds": {
        "description": "When a run has more folds than the pool trains at once, keep each fold's instances warm "
        "this long after it ends (SageMaker's KeepAlivePeriodInSeconds, 0 to 3600), so the next fold starts "
        "on them instead of waiting minutes for new ones. Warm instances bill as running while they wait: "
        "counted in max_instance_hours, and not added where they would exceed it. 0: never. A request opts "
        "out with training.ResourceConfig.KeepAlivePeriodInSeconds: 0; spot training never gets one. The "
        "account needs a warm-pool quota for the instance type.",
        "default": "600",
    },
    "offload_bytes": {
        "description": "Inputs of at least this many bytes (all files of a prefix together) are split by a "
        "SageMaker Processing job, which the split task waits for in the triggerer, instead of in the "
        "worker: the same folds, byte for byte. Needs split_image and split_code_uri. 0 (the default): "
        "no split is sent there by its size; where split_image and split_code_uri are set, a request may "
        "still ask for it (split_on: sagemaker). Dry runs always split in the worker.",
        "default": "0",
    },
    "split_image": {
        "description": "Image of the split's Processing job: a SageMaker scikit-learn image with Python 3.11 or "
        "later, e.g. the region's sagemaker-scikit-learn:1.4-2-cpu-py312.",
        "default": "",
    },
    "split_code_uri": {
        "description": "S3 folder of the wheelhouse the split's Processing job installs from, offline: this "
        "package's wheel and the wheels of its core dependencies at the workers' versions, for the image's "
        "Python (README, 'Splitting on SageMaker').",
        "default": "",
    },
    "split_instance_type": {
        "description": "ml instance type of the split's Processing job.",
        "default": "ml.m5.2xlarge",
    },
    "split_instance_count": {
        "description": "Instances of the split's Processing job for an input of many files: each scans and "
        "writes a run of them, the first joins the parts (at most one instance a file). One file: one instance.",
        "default": "1",
    },
    "split_max_runtime_seconds": {
        "description": "MaxRuntimeInSeconds of the split's Processing job; the task stops it after this.",
        "default": "14400",
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
    "slot_sizes": {
        "description": "JSON list of the pool slots a fold task takes: one fold task per size, and a job of n "
        "instances runs in the smallest that holds n. The default [1] suits single-instance jobs and gives "
        "the plainest graph; [1, 2, 4] also runs jobs of up to 4 instances (their tasks sit in a collapsed "
        "group, skipped by runs that do not need them).",
        "default": "[1]",
    },
    "schedule": {
        "description": "Schedule of smx_cross_validation (cron or preset, e.g. @weekly); empty: manual only.",
        "default": "",
    },
    "check_interval": {
        "description": "Seconds between status checks of training jobs and of the split's Processing job.",
        "default": "60",
    },
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


def policy() -> Policy:
    """The deployment's bounds on requests (read each time: tasks see the configuration they run under)."""
    return Policy(
        allowed_prefixes=tuple(_string_list("allowed_prefixes")),
        role_arn=get("role_arn") or None,
        role_arns=tuple(_string_list("role_arns")),
        instance_types=tuple(_string_list("instance_types")),
        max_instance_count=int(get("max_instance_count")),
        max_volume_gb=int(get("max_volume_gb")),
        max_runtime_seconds=int(get("max_runtime_seconds")),
        max_instance_hours=float(get("max_instance_hours")),
        local_commands=_local_commands(),
        warm_pool_seconds=int(get("warm_pool_seconds")),
    )


def model_approval_status() -> str:
    status = get("model_approval_status")
    if status not in APPROVAL_STATUSES:
        raise ValueError(
            f"[{SECTION}] model_approval_status must be one of {', '.join(APPROVAL_STATUSES)}, got {status!r}"
        )
    return status


@dataclass(frozen=True)
class Offload:
    """Where a split runs: above ``threshold`` bytes (0: never), as a Processing job of this shape."""

    threshold: int
    image: str
    code_uri: str
    instance_type: str
    max_runtime: int
    instance_count: int = 1

    @property
    def ready(self) -> bool:
        """Whether the deployment has set up the job (its image and wheelhouse)."""
        return bool(self.image) and self.code_uri.startswith("s3://")

    def wanted(self, input_bytes: int) -> bool:
        return 0 < self.threshold <= input_bytes


def offload() -> Offload:
    found = Offload(
        threshold=int(get("offload_bytes")),
        image=get("split_image"),
        code_uri=get("split_code_uri"),
        instance_type=get("split_instance_type"),
        max_runtime=int(get("split_max_runtime_seconds")),
        instance_count=max(1, int(get("split_instance_count"))),
    )
    if found.threshold > 0 and not found.ready:
        raise ValueError(f"[{SECTION}] offload_bytes is set: split_image and split_code_uri (s3://...) must be too")
    return found


def slot_sizes() -> list[int]:
    sizes = _json("slot_sizes")
    if not (isinstance(sizes, list) and sizes and all(isinstance(s, int) and s >= 1 for s in sizes)):
        raise ValueError(f"[{SECTION}] slot_sizes must be a JSON list of integers >= 1, got {sizes!r}")
    return sizes


def _json(option: str) -> Any:
    try:
        return json.loads(get(option) or OPTIONS[option]["default"])
    except json.JSONDecodeError as error:
        raise ValueError(f"[{SECTION}] {option} is not valid JSON: {error}") from None


def _string_list(option: str) -> list[str]:
    value = _json(option)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"[{SECTION}] {option} must be a JSON list of strings, got {value!r}")
    return value


def _local_commands() -> dict[str, LocalCommand]:
    value = _json("local_commands")
    if not isinstance(value, dict):
        raise ValueError(f"[{SECTION}] local_commands must be a JSON object of named commands, got {value!r}")
    return {name: _local_command(name, spec) for name, spec in value.items()}


def _local_command(name: str, spec: Any) -> LocalCommand:
    if isinstance(spec, list):
        spec = {"command": spec}
    argv, env = spec.get("command") if isinstance(spec, dict) else None, (spec or {}).get("env") or {}
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise ValueError(f"[{SECTION}] local_commands.{name}: command must be a non-empty JSON list of strings")
    if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
        raise ValueError(f"[{SECTION}] local_commands.{name}: env must be a JSON object of strings")
    return LocalCommand(argv=tuple(argv), env=env, workdir=spec.get("workdir"))


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
            # Airflow formats provider defaults with str.format (for {AIRFLOW_HOME} and the like)
            "default": spec["default"].replace("{", "{{").replace("}", "}}"),
        }
        for name, spec in OPTIONS.items()
    }
    return {SECTION: {"description": "airflow-smx: cross-validated training", "options": options}}
