"""The refit model as a registered version: what is recorded of it, and where. No Airflow.

A version of the Model Package Group ``crossvalidator-{name}`` on SageMaker; with the local
backend, the same record as a file under ``{output_uri}/registry/{group}/``. Its model metrics
(the CV estimate with both intervals, the hold-out score, the gate's decision) are a JSON file
beside the run's result, which the version points to.
"""

from __future__ import annotations

import hashlib
import posixpath
from typing import Any

from airflow_smx.core import storage
from airflow_smx.core.naming import model_package_group
from airflow_smx.core.request import CVRequest

CV_RUN_KEY = "cv_run_id"  # in a version's CustomerMetadataProperties: which run registered it


def test_scores(final: dict[str, Any]) -> dict[str, float]:
    """The refit job's scores on its validation channel, the hold-out: ``validation:*`` metrics."""
    return {
        m["MetricName"]: float(m["Value"])
        for m in final.get("FinalMetricDataList", [])
        if m["MetricName"].startswith("validation")
    }


def model_metrics(result: dict[str, Any], final: dict[str, Any], held_out: bool) -> dict[str, Any]:
    """The version's metrics file: the CV estimate of every metric, the hold-out's, the gate's decision.

    :param result: the run's ``cv_result.json``
    :param final: the refit job's DescribeTrainingJob
    :param held_out: whether the refit validated on a hold-out (else it has no test score)
    """
    summary = result["summary"]
    keys = ("n", "mean", "std", "ci95", "ci95_corrected")
    return {
        "cv_run_id": summary["cv_run_id"],
        "objective": summary.get("objective"),
        "cv_estimate": {name: {k: m[k] for k in keys} for name, m in summary["metrics"].items()},
        "test": test_scores(final) if held_out else None,
        "gate": summary.get("gate"),
        "training_job": final["TrainingJobName"],
    }


def package_request(
    request: CVRequest, final: dict[str, Any], metrics_uri: str, approval_status: str, cv_run_id: str
) -> dict[str, Any]:
    """CreateModelPackage's arguments: a version of the name's group serving the refit's model."""
    algorithm = final.get("AlgorithmSpecification", {})
    image = request.registry.inference_image or algorithm.get("TrainingImage")
    return {
        "ModelPackageGroupName": model_package_group(request.name),
        "ModelPackageDescription": f"Refit of CV run {cv_run_id} on every record but the hold-out",
        "InferenceSpecification": {
            "Containers": [{"Image": image, "ModelDataUrl": final["ModelArtifacts"]["S3ModelArtifacts"]}],
            "SupportedContentTypes": list(request.registry.content_types),
            "SupportedResponseMIMETypes": list(request.registry.response_types),
        },
        "ModelApprovalStatus": approval_status,
        "ModelMetrics": {"ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": metrics_uri}}},
        "CustomerMetadataProperties": {CV_RUN_KEY: cv_run_id, "training_job": final["TrainingJobName"]},
        # the same model registered again (a retry after a lost answer) gets the same version back;
        # a refit trained again (a clear: a new attempt, a new job name) becomes a new version
        "ClientToken": hashlib.sha256(f"{cv_run_id}/{final['TrainingJobName']}".encode()).hexdigest()[:32],
        # no Tags: SageMaker refuses them on a version of a group (the group's apply); the
        # CustomerMetadataProperties name the run
    }


def group_tags(request: CVRequest) -> list[dict[str, str]]:
    """The tags of the name's group, set when the first run of the name creates it."""
    return [t.model_dump() for t in request.tags]


def register_local(fs: Any, registry_path: str, package: dict[str, Any]) -> dict[str, Any]:
    """The local backend's registry: ``version-{n:05d}.json`` files, n counting from 1.

    A model registered already (the same run's same refit job) gets its version back; two runs
    registering at once each get their own number (a file is created only where none is).
    """
    versions = sorted(fs.glob(posixpath.join(registry_path, "version-*.json"))) if fs.exists(registry_path) else []
    for path in versions:
        record = storage.read_json(fs, path)
        if record["CustomerMetadataProperties"] == package["CustomerMetadataProperties"]:
            return record
    number = len(versions) + 1
    while True:
        path = posixpath.join(registry_path, f"version-{number:05d}.json")
        record = {**package, "ModelPackageVersion": number, "ModelPackageArn": f"file://{path}"}
        record.pop("ClientToken")
        try:
            storage.create_json(fs, path, record)
        except FileExistsError:
            number += 1
            continue
        return record


def version_record(package: dict[str, Any]) -> dict[str, Any]:
    """What a run's result says of its registered version (DescribeModelPackage's answer)."""
    return {
        "group": package["ModelPackageGroupName"],
        "version": package["ModelPackageVersion"],
        "arn": package["ModelPackageArn"],
        "approval_status": package["ModelApprovalStatus"],
        "image": package["InferenceSpecification"]["Containers"][0]["Image"],
    }
