"""The deployment's bounds on a request, each tested with the attack it stops (no Airflow needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_smx.core.form import form_fields, request_from_form
from airflow_smx.core.policy import LocalCommand, Policy, WorstCase
from airflow_smx.core.request import RequestError, in_user_terms, parse_request

EXAMPLES = Path(__file__).parent.parent / "examples"
ROLE = "arn:aws:iam::123456789012:role/smx-training"
DEPLOYMENT = Policy(allowed_prefixes=("s3://bucket/cv",), role_arn=ROLE)


def sagemaker_request(**training) -> dict:
    return {
        "name": "churn",
        "input": {"uri": "s3://bucket/cv/data/train.csv"},
        "output_uri": "s3://bucket/cv/runs",
        "backend": "sagemaker",
        "training": {
            "AlgorithmSpecification": {"TrainingImage": "xgboost:1", "TrainingInputMode": "File"},
            "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 10},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            **training,
        },
    }


def problems(conf: dict, policy: Policy = DEPLOYMENT) -> list[str]:
    return policy.problems(parse_request(conf, default_backend=policy.default_backend))


def test_a_request_within_the_bounds_passes():
    assert problems(sagemaker_request()) == []


def test_every_s3_location_anywhere_in_the_request_is_held_to_the_prefixes():
    conf = sagemaker_request(
        OutputDataConfig={"S3OutputPath": "s3://attacker/models"},
        CheckpointConfig={"S3Uri": "s3://other-bucket/checkpoints"},
        TensorBoardOutputConfig={"S3OutputPath": "s3://bucket/cv-other/tb"},  # a sibling, not under the prefix
        HyperParameters={"pretrained": "--weights=s3://other-bucket/w.tar.gz", "ok": "s3://bucket/cv/w.tar.gz"},
    )
    listed = "([smx] allowed_prefixes: s3://bucket/cv)"
    assert problems(conf) == [
        f"training.HyperParameters.pretrained: s3://other-bucket/w.tar.gz is outside the allowed prefixes {listed}",
        f"training.OutputDataConfig.S3OutputPath: s3://attacker/models is outside the allowed prefixes {listed}",
        f"training.CheckpointConfig.S3Uri: s3://other-bucket/checkpoints is outside the allowed prefixes {listed}",
        f"training.TensorBoardOutputConfig.S3OutputPath: s3://bucket/cv-other/tb is outside the allowed prefixes {listed}",
    ]


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("s3://bucket/cv/../secrets/x", "must not contain . or .. path segments"),
        ("s3://bucket/cv/%2e%2e/secrets/x", "must not contain . or .. path segments"),
        ("S3://other-bucket/x", "must be a whole s3:// URI"),
        ("s3a://other-bucket/x", "must be a whole s3:// URI"),
        ("https://other-bucket.s3.us-east-1.amazonaws.com/x", "must be a whole s3:// URI"),
        ("https://s3.amazonaws.com/evil/x", "must be a whole s3:// URI"),
        ("s3://bucket/cv,other/x", "is outside the allowed prefixes"),  # a comma does not end a URI
        ("s3://bucket/cv other/x", "must be a whole s3:// URI"),  # nor does whitespace, in a location
        ("s3://bucket/cv/a,/../../x", "must not contain . or .. path segments"),
        ("/tmp/pwned", "must be a whole s3:// URI"),
    ],
)
def test_a_uri_that_could_escape_its_prefix_is_refused(uri, why):
    found = problems(sagemaker_request(CheckpointConfig={"S3Uri": uri}))
    assert len(found) == 1 and found[0].startswith("training.CheckpointConfig.S3Uri: ") and why in found[0], found


def test_a_local_path_cannot_climb_out_of_its_prefix(tmp_path):
    allowed = tmp_path / "allowed"
    policy = Policy(allowed_prefixes=(allowed.as_uri(),), local_commands={"train": LocalCommand(("true",))})
    conf = {
        "name": "x",
        "input": {"uri": f"{allowed.as_uri()}/../../etc/passwd"},
        "output_uri": f"{allowed.as_uri()}/out",
    }
    assert problems(conf, policy) == [
        f"input.uri: {allowed.as_uri()}/../../etc/passwd must not contain . or .. path segments"
    ]


def test_a_request_may_pass_only_a_role_the_deployment_lists():
    admin = "arn:aws:iam::123456789012:role/admin"
    assert problems(sagemaker_request(RoleArn=admin)) == [
        f"training.RoleArn: {admin} is not a role this deployment allows ([smx] role_arn, role_arns: {ROLE})"
    ]
    other = "arn:aws:iam::123456789012:role/team-b"
    assert problems(sagemaker_request(RoleArn=other), Policy(**{**vars(DEPLOYMENT), "role_arns": (other,)})) == []
    assert problems(sagemaker_request(), Policy(allowed_prefixes=DEPLOYMENT.allowed_prefixes)) == [
        "training.RoleArn: required (or set the deployment's [smx] role_arn)"
    ]


def test_spend_is_bounded_by_type_count_runtime_and_the_worst_case():
    big = {"InstanceType": "ml.p4d.24xlarge", "InstanceCount": 8, "VolumeSizeInGB": 10}
    assert problems(sagemaker_request(ResourceConfig=big, StoppingCondition={"MaxRuntimeInSeconds": 172800})) == [
        "training.ResourceConfig.InstanceType: ml.p4d.24xlarge is not allowed ([smx] instance_types: "
        "ml.m5.large, ml.m5.xlarge, ml.m5.2xlarge, ml.m5.4xlarge, ml.c5.xlarge, ml.c5.2xlarge, ml.c5.4xlarge)",
        "training.ResourceConfig.InstanceCount: 8 is above [smx] max_instance_count 4",
        "training.StoppingCondition.MaxRuntimeInSeconds: 172800 is above [smx] max_runtime_seconds 86400",
    ]
    generous = Policy(**{**vars(DEPLOYMENT), "instance_types": ("ml.p4d.*",), "max_instance_hours": 200})
    conf = sagemaker_request(ResourceConfig={**big, "InstanceCount": 4}, StoppingCondition={})
    conf["cv"] = {"n_splits": 10}
    assert problems(conf, generous) == [
        "training: worst case 11 jobs x 4 x ml.p4d.24xlarge x 24 h = 1056 instance-hours, "
        "above [smx] max_instance_hours 200"
    ]
    strict = Policy(**{**vars(DEPLOYMENT), "max_runtime_seconds": 7200})
    assert problems(sagemaker_request(StoppingCondition={}), strict) == [
        "training.StoppingCondition.MaxRuntimeInSeconds: not set, so SageMaker's default 86400 is above "
        "[smx] max_runtime_seconds 7200"
    ]


def test_free_text_is_searched_for_every_storage_uri_but_may_hold_other_urls():
    refused = sagemaker_request(
        HyperParameters={"data": "s3://bucket/cv/x,s3://evil/y", "weights": "https://evil.s3.amazonaws.com/w"}
    )
    assert problems(refused) == [
        "training.HyperParameters.data: s3://evil/y is outside the allowed prefixes ([smx] allowed_prefixes: s3://bucket/cv)",
        "training.HyperParameters.weights: https://evil.s3.amazonaws.com... is an https URL of S3: give it as s3://bucket/key",
    ]
    ordinary = sagemaker_request(
        HyperParameters={
            "model_id": "hf://bert-base-uncased",
            "tokenizer": "https://huggingface.co/bert",
            "step": "a:/b",
        },
        Environment={"PIP_INDEX_URL": "https://pypi.example.com/simple", "HTTPS_PROXY": "http://proxy:3128"},
        AlgorithmSpecification={
            "TrainingImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/x@sha256:" + "a" * 64,
            "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": "acc", "Regex": "acc:/?([0-9.]+)"}],
        },
    )
    ordinary["tags"] = [{"Key": "docs", "Value": "https://wiki.example.com/cv"}]
    assert problems(ordinary) == []


def test_numbers_the_bounds_are_computed_from_must_be_whole():
    conf = sagemaker_request(StoppingCondition={"MaxRuntimeInSeconds": "1e9"})
    conf["training"]["ResourceConfig"] = {
        "InstanceType": "ml.m5.large",
        "VolumeSizeInGB": 5.0,
        "KeepAlivePeriodInSeconds": -1,
    }
    with pytest.raises(RequestError) as caught:
        parse_request(conf)
    assert caught.value.problems == [
        "training.ResourceConfig.KeepAlivePeriodInSeconds: must be a whole number >= 0, got -1",
        "training.ResourceConfig.VolumeSizeInGB: must be a whole number >= 1, got 5.0",
        "training.StoppingCondition.MaxRuntimeInSeconds: must be a whole number >= 1, got '1e9'",
    ]


def test_rule_evaluator_instances_count_in_the_worst_case():
    rules = [
        {"RuleConfigurationName": f"r{i}", "RuleEvaluatorImage": "x", "InstanceType": "ml.m5.xlarge"} for i in range(20)
    ]
    conf = sagemaker_request(DebugRuleConfigurations=rules)
    assert problems(conf) == [
        "training: worst case 6 jobs x (1 x ml.m5.xlarge + 20 rule instances) x 1 h = 126 instance-hours, "
        "above [smx] max_instance_hours 100"
    ]


def test_rule_evaluator_instances_and_volumes_are_bounded_too():
    rule = {
        "RuleConfigurationName": "r",
        "RuleEvaluatorImage": "x",
        "InstanceType": "ml.p5.48xlarge",
        "VolumeSizeInGB": 16384,
    }
    resources = {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 16384}
    assert sorted(problems(sagemaker_request(ResourceConfig=resources, ProfilerRuleConfigurations=[rule]))) == [
        "training.ProfilerRuleConfigurations.0.InstanceType: ml.p5.48xlarge is not allowed ([smx] instance_types: "
        "ml.m5.large, ml.m5.xlarge, ml.m5.2xlarge, ml.m5.4xlarge, ml.c5.xlarge, ml.c5.2xlarge, ml.c5.4xlarge)",
        "training.ProfilerRuleConfigurations.0.VolumeSizeInGB: 16384 is above [smx] max_volume_gb 100",
        "training.ResourceConfig.VolumeSizeInGB: 16384 is above [smx] max_volume_gb 100",
    ]


def test_a_warm_pool_counts_in_the_worst_case():
    warm = {"InstanceType": "ml.m5.xlarge", "InstanceCount": 4, "KeepAlivePeriodInSeconds": 3600}
    conf = sagemaker_request(ResourceConfig=warm, StoppingCondition={"MaxRuntimeInSeconds": 18000})
    # 6 jobs train 5 h; the 5 folds' instances then idle an hour (the refit, last, keeps none)
    assert problems(conf) == [
        "training: worst case 6 jobs x 4 x ml.m5.xlarge x 5 h + 5 warm pools x 4 x 1 h = 140 instance-hours, "
        "above [smx] max_instance_hours 100"
    ]


def warmed(conf: dict, pool_slots: int = 2, policy: Policy = DEPLOYMENT) -> dict:
    """The request's ResourceConfig after the deployment's warm pool default."""
    request = parse_request(conf, default_backend=policy.default_backend)
    return policy.with_warm_pool(request, pool_slots).training.ResourceConfig


def test_jobs_that_outnumber_the_pool_keep_their_instances_warm_for_the_next_fold():
    ten = {**sagemaker_request(), "cv": {"n_splits": 10}}
    assert warmed(ten)["KeepAlivePeriodInSeconds"] == 600  # 10 folds, a pool of 2
    assert (
        warmed(ten, policy=Policy(allowed_prefixes=("s3://bucket/cv",), warm_pool_seconds=120))[
            "KeepAlivePeriodInSeconds"
        ]
        == 120
    )
    # ... and the worst case counts the folds' idle time: 11 jobs x 1 h + 10 folds x 10 min
    warm = DEPLOYMENT.with_warm_pool(parse_request({**ten, "refit": True}), 2)
    assert str(WorstCase.of(warm)) == (
        "worst case 11 jobs x 1 x ml.m5.xlarge x 1 h + 10 warm pools x 1 x 0.166667 h = 12.6667 instance-hours"
    )


def test_no_warm_pool_where_it_could_not_serve_or_was_declined():
    three = {**sagemaker_request(), "cv": {"n_splits": 3}, "refit": False}
    assert "KeepAlivePeriodInSeconds" not in warmed(three, pool_slots=3)  # every job starts at once
    assert "KeepAlivePeriodInSeconds" in warmed(three, pool_slots=2)
    declined = sagemaker_request(ResourceConfig={"InstanceType": "ml.m5.xlarge", "KeepAlivePeriodInSeconds": 0})
    assert warmed(declined)["KeepAlivePeriodInSeconds"] == 0  # the request's own choice
    spot = sagemaker_request(EnableManagedSpotTraining=True, StoppingCondition={"MaxWaitTimeInSeconds": 7200})
    assert "KeepAlivePeriodInSeconds" not in warmed(spot)  # SageMaker keeps no warm pool for spot
    off = Policy(allowed_prefixes=("s3://bucket/cv",), warm_pool_seconds=0)
    assert "KeepAlivePeriodInSeconds" not in warmed(sagemaker_request(), policy=off)
    # 4 jobs x 4 instances x 1 h fit in 17 instance-hours; the folds' 3 x 4 x 10 min idle would not
    tight = Policy(allowed_prefixes=("s3://bucket/cv",), max_instance_hours=17)
    four = sagemaker_request(ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 4})
    within = {**four, "cv": {"n_splits": 3}, "refit": True}
    assert WorstCase.of(parse_request(within)).instance_hours == 16
    assert "KeepAlivePeriodInSeconds" not in warmed(within, pool_slots=8, policy=tight)
    assert warmed(within, pool_slots=8)["KeepAlivePeriodInSeconds"] == 600  # the default 100 leaves room


def test_a_warm_pool_sagemaker_would_refuse_is_refused_before_any_job():
    long = sagemaker_request(ResourceConfig={"InstanceType": "ml.m5.xlarge", "KeepAlivePeriodInSeconds": 7200})
    assert problems(long) == ["training.ResourceConfig.KeepAlivePeriodInSeconds: 7200 is above SageMaker's 3600"]
    spot = sagemaker_request(
        EnableManagedSpotTraining=True,
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "KeepAlivePeriodInSeconds": 60},
        StoppingCondition={"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200},
    )
    assert problems(spot) == [
        "training.ResourceConfig.KeepAlivePeriodInSeconds: managed spot training keeps no warm pool; set 0 or "
        "turn EnableManagedSpotTraining off"
    ]
    with pytest.raises(ValueError, match=r"\[smx\] warm_pool_seconds must be 0 to 3600, got 86400"):
        Policy(warm_pool_seconds=86400)


def test_the_local_backend_is_the_deployments_choice():
    local = {"name": "x", "input": {"uri": "s3://bucket/cv/in.csv"}, "output_uri": "s3://bucket/cv/out"}
    assert problems({**local, "backend": "local", "local": {"command": "train"}}) == [
        "backend: local is not enabled on this deployment ([smx] local_commands is empty); use sagemaker"
    ]
    with pytest.raises(RequestError, match=r"local\.command: must be the name of a command the deployment lists"):
        parse_request({**local, "backend": "local", "local": {"command": ["sh", "-c", "touch /tmp/pwned"]}})
    with pytest.raises(RequestError, match=r"local.env: unknown field[\s\S]*local.workdir: unknown field"):
        parse_request({**local, "local": {"command": "train", "env": {"LD_PRELOAD": "x.so"}, "workdir": "/"}})

    deployment = Policy(allowed_prefixes=("s3://bucket/cv",), local_commands={"train": LocalCommand(("true",))})
    assert parse_request(local, default_backend=deployment.default_backend).backend == "local"
    assert problems(local, deployment) == []  # the one listed command
    assert problems({**local, "local": {"command": "sh"}}, deployment) == [
        "local.command: 'sh' is not one of the deployment's commands ([smx] local_commands: train)"
    ]
    # PYTHONWARNINGS=...antigravity with BROWSER set runs a shell command in any Python child
    injected = {**local, "training": {"Environment": {"PYTHONWARNINGS": "all::antigravity.x", "BROWSER": "sh -c id"}}}
    assert problems(injected, deployment) == [
        "training.Environment: not passed to local commands (environment variables can make a process run "
        "other code); the deployment sets them in [smx] local_commands"
    ]


def test_jobs_cannot_claim_another_runs_ownership_tag():
    with pytest.raises(RequestError, match=r"tags\.0\.Key: airflow_run_id is set on every job by airflow-smx"):
        parse_request({**sagemaker_request(), "tags": [{"Key": "airflow_run_id", "Value": "someone-elses-run"}]})


def test_smx_validator_input_hears_about_problems_in_its_own_field_names():
    sample = json.loads((EXAMPLES / "smx_validator_sample.json").read_text())
    del sample["job_config"]["input_path"]
    with pytest.raises(RequestError) as caught:
        parse_request(sample)
    assert caught.value.problems == ["job_config.input_path: required"]

    sample = json.loads((EXAMPLES / "smx_validator_sample.json").read_text())
    sample["job_config"]["output_prefix"] = "s3://elsewhere/out"
    request = parse_request(sample)
    deployment = Policy(allowed_prefixes=("s3://bucket",), role_arn=ROLE, instance_types=("ml.p3.*",))
    assert in_user_terms(deployment.problems(request), sample) == [
        "job_config.output_prefix: s3://elsewhere/out is outside the allowed prefixes ([smx] allowed_prefixes: s3://bucket)"
    ]


@pytest.mark.parametrize(
    "deployment",
    [
        pytest.param(Policy(allowed_prefixes=("s3://team-bucket/cv/",), role_arn=ROLE), id="sagemaker"),
        pytest.param(
            Policy(
                allowed_prefixes=("s3://b/x", "s3://b/y"), role_arn=ROLE, instance_types=("ml.g5.*", "ml.c6i.large")
            ),
            id="sagemaker-patterns",
        ),
        pytest.param(
            Policy(allowed_prefixes=("file:///srv/cv",), local_commands={"sklearn": LocalCommand(("python3", "t.py"))}),
            id="local",
        ),
    ],
)
def test_the_forms_defaults_run_on_every_deployment(deployment):
    fields = form_fields(None, deployment)
    defaults = request_from_form({name: field["default"] for name, field in fields.items()})
    request = parse_request(defaults, default_backend=deployment.default_backend)
    assert deployment.problems(request) == [] and request.backend == deployment.default_backend
    assert fields["backend"]["description"].endswith(f"This deployment runs: {', '.join(deployment.backends)}.")


def test_a_fresh_install_refuses_until_the_deployer_sets_prefixes_and_a_role():
    fields = form_fields(None, Policy())
    assert fields["backend"]["default"] == "sagemaker"
    request = parse_request(request_from_form({name: field["default"] for name, field in fields.items()}))
    assert [p.split(":")[0] for p in Policy().problems(request)] == ["input.uri", "output_uri", "training.RoleArn"]


@pytest.mark.parametrize("prefix", ["s3://", "s3:///", "file://relative/x", "s3://bucket/../x", "gs://bucket"])
def test_a_deployment_prefix_that_would_allow_everything_is_refused(prefix):
    with pytest.raises(ValueError, match="allowed_prefixes"):
        Policy(allowed_prefixes=(prefix,))
