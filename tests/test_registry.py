"""The refit model's registration record: what a version holds, and the local registry's numbering."""

from __future__ import annotations

import fsspec

from airflow_smx.core.registry import group_tags, model_metrics, package_request, register_local
from airflow_smx.core.request import parse_request


def request(**overrides):
    return parse_request(
        {
            "name": "churn",
            "input": {"uri": "s3://b/in.csv"},
            "output_uri": "s3://b/out",
            "backend": "local",
            "local": {"command": "train"},
            "metrics": {"objective": "validation:auc"},
            "tags": {"team": "risk"},
            **overrides,
        }
    )


def final(job: str = "crossvalidator-churn-20261201-050000-abcdef-final") -> dict:
    return {
        "TrainingJobName": job,
        "AlgorithmSpecification": {"TrainingImage": "xgb:1"},
        "ModelArtifacts": {"S3ModelArtifacts": f"s3://b/out/models/{job}/output/model.tar.gz"},
        "FinalMetricDataList": [
            {"MetricName": "validation:auc", "Value": 0.91},
            {"MetricName": "train:auc", "Value": 0.99},
        ],
    }


def test_a_version_serves_the_refit_with_its_metrics_and_names_its_run():
    package = package_request(
        request(), final(), "s3://b/out/r/results/model_metrics.json", "PendingManualApproval", "r"
    )
    (container,) = package["InferenceSpecification"]["Containers"]
    assert package["ModelPackageGroupName"] == "crossvalidator-churn" and container["Image"] == "xgb:1"
    assert container["ModelDataUrl"].endswith("-final/output/model.tar.gz")
    assert package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"].endswith("/model_metrics.json")
    assert package["ModelApprovalStatus"] == "PendingManualApproval"
    # a version of a group takes the group's tags (SageMaker refuses its own); the metadata names the run
    assert "Tags" not in package and package["CustomerMetadataProperties"]["cv_run_id"] == "r"
    assert group_tags(request()) == [{"Key": "team", "Value": "risk"}]
    served = package_request(request(registry={"inference_image": "serve:2"}), final(), "u", "Approved", "r")
    assert served["InferenceSpecification"]["Containers"][0]["Image"] == "serve:2"
    # a retry of the same model gets its version back; a refit trained again is a new version
    assert served["ClientToken"] == package["ClientToken"]
    assert (
        package_request(request(), final("x-final-r2"), "u", "Approved", "r")["ClientToken"] != package["ClientToken"]
    )


def test_the_metrics_file_holds_the_estimate_and_the_test_score_only_with_a_hold_out():
    metric = {"n": 5, "mean": 0.9, "std": 0.01, "ci95": [0.88, 0.92], "ci95_corrected": [0.87, 0.93], "min": 0.8}
    result = {
        "summary": {"cv_run_id": "r", "objective": {"metric": "validation:auc"}, "metrics": {"validation:auc": metric}}
    }
    held = model_metrics(result, final(), held_out=True)
    assert held["test"] == {"validation:auc": 0.91} and "min" not in held["cv_estimate"]["validation:auc"]
    assert model_metrics(result, final(), held_out=False)["test"] is None


def test_the_local_registry_numbers_versions_and_gives_a_registered_model_its_version_back(tmp_path):
    fs = fsspec.filesystem("file")
    registry = str(tmp_path / "registry" / "crossvalidator-churn")
    first = package_request(request(), final(), "u", "PendingManualApproval", "run-1")
    assert register_local(fs, registry, first)["ModelPackageVersion"] == 1
    assert register_local(fs, registry, first)["ModelPackageVersion"] == 1  # a retry
    second = package_request(request(), final("crossvalidator-churn-x-final"), "u", "PendingManualApproval", "run-2")
    record = register_local(fs, registry, second)
    assert record["ModelPackageVersion"] == 2 and record["ModelPackageArn"].endswith("/version-00002.json")
    assert "ClientToken" not in record
    assert sorted(p.name for p in (tmp_path / "registry" / "crossvalidator-churn").iterdir()) == [
        "version-00001.json",
        "version-00002.json",
    ]
