"""Per-fold CreateTrainingJob requests: names, channels, placeholders, tags, experiment."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from airflow_smx.core.attempts import folds_digest
from airflow_smx.core.folds import split_dataset
from airflow_smx.core.job_requests import fold_training_config
from airflow_smx.core.request import parse_request
from tests.conftest import make_records, write_jsonl

WHEN = datetime(2026, 11, 29, 16, 59, 41, tzinfo=UTC)
EXAMPLES = Path(__file__).parent.parent / "examples"


def split_for(request, tmp_path):
    return split_dataset(
        request.input,
        request.cv,
        (tmp_path / "folds").as_uri(),
        assemble_train=request.channels.train.needs_single_object,
    )


def test_smx_validator_sample_becomes_augmented_manifest_jobs(tmp_path):
    sample = json.loads((EXAMPLES / "smx_validator_sample.json").read_text())
    data = write_jsonl(tmp_path / "input.jsonl", make_records(200, seed=4, n_classes=3))
    sample["job_config"]["input_path"] = data.as_uri()
    sample["job_config"]["output_prefix"] = (tmp_path / "out").as_uri()
    request = parse_request(sample)
    plan = split_for(request, tmp_path)
    configs = [
        fold_training_config(request, plan, f, WHEN, "manual__2026-11-29", "arn:aws:iam::1:role/r") for f in plan.folds
    ]

    first = configs[0]
    assert first["TrainingJobName"] == "crossvalidator-my-project-20261129-165941-fold0"
    assert first["HyperParameters"]["num_classes"] == "3"
    assert first["HyperParameters"]["num_training_samples"] == str(plan.folds[0].n_train) == "160"
    assert first["RoleArn"] == "arn:aws:iam::1:role/r" and first["EnableManagedSpotTraining"] is True
    train, validation = first["InputDataConfig"]
    assert train["DataSource"]["S3DataSource"] == {
        "S3DataType": "AugmentedManifestFile",
        "S3Uri": plan.folds[0].train_file,
        "S3DataDistributionType": "FullyReplicated",
        "AttributeNames": ["source-ref", "class"],
    }
    assert (train["InputMode"], train["RecordWrapperType"]) == ("Pipe", "RecordIO")
    assert validation["DataSource"]["S3DataSource"]["S3Uri"] == plan.folds[0].validation
    assert first["OutputDataConfig"] == {
        "S3OutputPath": (tmp_path / "out").as_uri() + "/my-project-20261129-165941/models"
    }
    assert first["ExperimentConfig"] == {
        "ExperimentName": "my_project-crossvalidated",
        "TrialName": "crossvalidator-my-project-20261129-165941",
        "TrialComponentDisplayName": "TrainingJob-fold0",
    }
    assert first["Tags"] == [
        {"Key": "project", "Value": "my_project"},
        {"Key": "fold_name", "Value": "fold0"},
        {"Key": "crossvalidator_job_name", "Value": "crossvalidator-my-project-20261129-165941"},
        {"Key": "created_by", "Value": "airflow-smx"},
        {"Key": "airflow_run_id", "Value": "manual__2026-11-29"},
        {"Key": "airflow_smx_folds", "Value": folds_digest(plan.identity())},  # a clear re-uses only these folds' jobs
    ]
    assert len({c["TrainingJobName"] for c in configs}) == 5
    assert request.training.HyperParameters["num_classes"] == "${num_classes}"  # the request is untouched


def test_csv_job_reads_the_manifest_and_keeps_its_own_settings(tmp_path):
    data = tmp_path / "train.csv"
    data.write_text("".join(f"{i % 2},{i},{i * 2}\n" for i in range(60)))
    request = parse_request(
        {
            "name": "xgb",
            "input": {"uri": data.as_uri(), "label": 0},
            "output_uri": (tmp_path / "out").as_uri(),
            "cv": {"strategy": "stratified", "n_splits": 3},
            "backend": "sagemaker",
            "experiment": {"enabled": False},
            "training": {
                "AlgorithmSpecification": {"TrainingImage": "xgb:1", "TrainingInputMode": "File"},
                "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 2, "VolumeSizeInGB": 5},
                "HyperParameters": {"num_round": 10, "note": "fold ${fold} of ${num_validation_samples}"},
                "OutputDataConfig": {"S3OutputPath": "s3://elsewhere/models"},
                "RoleArn": "arn:aws:iam::1:role/mine",
            },
            "channels": {"train": {"ChannelName": "train", "S3DataType": "ManifestFile", "ContentType": "text/csv"}},
        }
    )
    plan = split_for(request, tmp_path)
    config = fold_training_config(request, plan, plan.folds[2], WHEN, "r", "arn:aws:iam::1:role/default")
    assert config["HyperParameters"] == {"num_round": "10", "note": "fold 2 of 20"}
    assert config["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == plan.folds[2].train_manifest
    assert config["InputDataConfig"][0]["ContentType"] == "text/csv"
    assert config["RoleArn"] == "arn:aws:iam::1:role/mine"
    assert config["OutputDataConfig"] == {"S3OutputPath": "s3://elsewhere/models"}
    assert "ExperimentConfig" not in config and config["ResourceConfig"]["InstanceCount"] == 2
