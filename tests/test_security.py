"""A conf is untrusted input: the three attacks of a user who may only trigger, through the DAG.

Each runs ``dag.test()`` against moto with the deployment configured by ``[smx]`` options, as a
deployer would: template rendering of conf data (to read connections and Variables), a command
on the worker (through the local backend), and storage outside the allowed prefixes.
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import boto3
import pytest

from tests.dag_harness import ROOT, Simulator, conf, states

LOGIN, PASSWORD, TOKEN = "AKIASMXLOGIN00000001", "conn-password-6b1f0e", "variable-token-93ad2c"
SECRETS = (LOGIN, PASSWORD, TOKEN)
TEMPLATES = {
    "password": "{{ conn.aws_smx.password }}",
    "token": "{{ var.value.secret_token }}",
    "login": "{{ conn.aws_smx.login }}",
}


@pytest.fixture
def secrets(s3_endpoint, monkeypatch):
    """An AWS connection with credentials (used for S3 and SageMaker) and a secret Variable."""
    connection = {
        "conn_type": "aws",
        "login": LOGIN,
        "password": PASSWORD,
        "extra": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_AWS_SMX", json.dumps(connection))
    monkeypatch.setenv("AIRFLOW_VAR_SECRET_TOKEN", TOKEN)
    monkeypatch.setenv("AIRFLOW__SMX__AWS_CONN_ID", "aws_smx")


def templated_conf() -> dict:
    request = conf(cv={"n_splits": 2})
    request["training"]["HyperParameters"] = {"a": TEMPLATES["password"], "b": TEMPLATES["token"]}
    request["tags"] = [{"Key": "owner", "Value": TEMPLATES["login"]}]
    return request


def everything_the_run_left(run, s3, sagemaker, printed) -> str:
    """XCom values, the SageMaker jobs and model versions as described, every object written under
    out/, what the run printed and the task logs."""
    from airflow.utils.session import create_session

    from tests.versions import XComModel

    with create_session() as session:
        xcoms = session.query(XComModel).filter(XComModel.run_id == run.run_id).all()
        texts = [json.dumps(x.value, default=str) for x in xcoms]
    assert {x.task_id for x in xcoms} >= {"check_request", "split_dataset", "train_fold", "aggregate_results"}
    client = boto3.client("sagemaker")
    for create in sagemaker.creates:
        texts.append(json.dumps(client.describe_training_job(TrainingJobName=create["name"]), default=str))
        arn = client.describe_training_job(TrainingJobName=create["name"])["TrainingJobArn"]
        texts.append(json.dumps(client.list_tags(ResourceArn=arn)))
    for group in client.list_model_package_groups()["ModelPackageGroupSummaryList"]:  # the registered model
        listed = client.list_model_packages(
            ModelPackageGroupName=group["ModelPackageGroupName"], ModelPackageType="Versioned"
        )
        for package in listed["ModelPackageSummaryList"]:
            described = client.describe_model_package(ModelPackageName=package["ModelPackageArn"])
            texts.append(json.dumps(described, default=str))
    for item in s3.list_objects_v2(Bucket="bucket", Prefix="out/")["Contents"]:
        texts.append(s3.get_object(Bucket="bucket", Key=item["Key"])["Body"].read().decode("utf-8", "replace"))
    return without_masking_requests("\n".join([*texts, printed(), task_logs()]))


def without_masking_requests(text: str) -> str:
    """Airflow 3.0's task runner logs, at debug level and in dag.test() only, the very request that
    registers a connection's password for masking (``MaskSecret(value=...)``); its own, whatever
    the conf, so not what this test looks for."""
    return "\n".join(line for line in text.splitlines() if "msg=MaskSecret(value=" not in line)


def task_logs() -> str:
    home = Path(__import__("os").environ["AIRFLOW_HOME"])
    return "\n".join(p.read_text(errors="replace") for p in home.rglob("*.log"))


def test_conf_templates_reach_sagemaker_as_text_and_no_secret_leaks(run_dag, sagemaker, s3, secrets, printed):
    run = run_dag(templated_conf())
    assert run.state == "success", states(run)
    assert len(sagemaker.creates) == 3  # 2 folds and the refit
    for create in sagemaker.creates:
        assert create["hyper_parameters"] == {"a": TEMPLATES["password"], "b": TEMPLATES["token"]}
        assert {"Key": "owner", "Value": TEMPLATES["login"]} in create["tags"]
    left = everything_the_run_left(run, s3, sagemaker, printed)
    assert TEMPLATES["password"] in left  # the search covers what the run wrote
    assert [secret for secret in SECRETS if secret in left] == []


def test_a_stored_request_is_not_a_template_either(run_dag, sagemaker, s3, secrets, tmp_path, monkeypatch, printed):
    from tests.versions import DagBag

    (tmp_path / "request.json").write_text(json.dumps(templated_conf()))
    monkeypatch.setenv("AIRFLOW__SMX__REQUEST_FILE", str(tmp_path / "request.json"))
    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["smx_cross_validation_on_data"]
    simulator = Simulator(sagemaker, lambda fold: {"metrics": {"validation:accuracy": 0.9}})
    simulator.start()
    try:
        run = dag.test()  # no conf: the stored request, as when its Asset triggers it
    finally:
        simulator.running = False
    assert run.state == "success", states(run)
    assert {c["hyper_parameters"]["a"] for c in sagemaker.creates} == {TEMPLATES["password"]}
    left = everything_the_run_left(run, s3, sagemaker, printed)
    assert [secret for secret in SECRETS if secret in left] == []


def local_conf(tmp_path, **local) -> dict:
    data = tmp_path / "data.csv"
    data.write_text("".join(f"{i % 2},{i}\n" for i in range(40)))
    return {
        "name": "local",
        "input": {"uri": data.as_uri(), "label": 0},
        "output_uri": (tmp_path / "out").as_uri(),
        "cv": {"strategy": "stratified", "n_splits": 2},
        **local,
    }


@pytest.fixture
def local_deployment(airflow_db, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__SMX__ALLOWED_PREFIXES", json.dumps([tmp_path.as_uri()]))
    monkeypatch.setenv("AIRFLOW__SMX__AWS_CONN_ID", "")

    def run(request, commands=None):
        from tests.versions import DagBag

        monkeypatch.setenv("AIRFLOW__SMX__LOCAL_COMMANDS", json.dumps(commands or {}))
        dag = DagBag(dag_folder=str(ROOT / "dags")).dags["smx_cross_validation"]
        return dag.test(run_conf=request)

    return run


def test_a_conf_cannot_run_a_command_on_the_worker(local_deployment, tmp_path, printed):
    marker = tmp_path / "pwned"
    shell = ["sh", "-c", f"touch {marker}"]
    # the deployment has no local backend: a conf asking for one is refused, naming the option
    run = local_deployment(local_conf(tmp_path, backend="local", local={"command": "train"}))
    assert run.state == "failed" and states(run)[("check_request", -1)] == "failed"
    assert "backend: local is not enabled on this deployment ([smx] local_commands is empty)" in printed()
    # where it is on, a conf names one of the deployment's commands; a command line, an unlisted
    # name, and environment variables that make Python run a shell command are all refused
    allowed = {"train": [sys.executable, str(ROOT / "examples" / "train_sklearn.py")]}
    attacks = [
        {"local": {"command": shell}},
        {"local": {"command": "sh"}},
        {"local": {"command": "train", "env": {"BROWSER": " ".join(shell)}}},
        {"training": {"Environment": {"PYTHONWARNINGS": "all::antigravity.x", "BROWSER": f"{' '.join(shell)} #%s"}}},
    ]
    for attack in attacks:
        run = local_deployment(local_conf(tmp_path, backend="local", **attack), allowed)
        assert run.state == "failed" and states(run)[("check_request", -1)] == "failed", attack
    output = printed()
    assert "local.command: must be the name of a command the deployment lists in [smx] local_commands" in output
    assert "local.command: 'sh' is not one of the deployment's commands ([smx] local_commands: train)" in output
    assert "local.env: unknown field" in output
    assert "training.Environment: not passed to local commands" in output
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_a_listed_command_runs_without_the_workers_credentials(local_deployment, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "worker-secret-key")
    monkeypatch.setenv("AIRFLOW_CONN_AWS_SMX", json.dumps({"conn_type": "aws", "password": PASSWORD}))
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import json, os, pathlib\n"
        "(pathlib.Path(os.environ['SM_MODEL_DIR']) / 'env.json').write_text(json.dumps(dict(os.environ)))\n"
        "print('validation:accuracy=0.5')\n"
    )
    request = local_conf(tmp_path, backend="local", local={"command": "probe"})
    request["training"] = {
        "AlgorithmSpecification": {"MetricDefinitions": [{"Name": "acc", "Regex": "accuracy=([0-9.]+)"}]},
        "StoppingCondition": {"MaxRuntimeInSeconds": 300},
    }
    run = local_deployment(request, {"probe": {"command": [sys.executable, str(probe)], "env": {"TEAM": "ml"}}})
    assert run.state == "success", states(run)
    (model,) = sorted((tmp_path / "out").rglob("*-fold0/output/model.tar.gz"))
    with tarfile.open(model) as archive:
        env = json.load(archive.extractfile("env.json"))
    assert env["TEAM"] == "ml" and "SM_CHANNEL_TRAIN" in env
    leaked = [k for k in env if k.startswith(("AWS_", "AIRFLOW")) or PASSWORD in env[k] or "worker-secret" in env[k]]
    assert leaked == []


def test_a_conf_cannot_write_outside_the_allowed_prefixes(run_dag, sagemaker, s3, printed):
    attacks = {
        "training.OutputDataConfig.S3OutputPath": {"OutputDataConfig": {"S3OutputPath": "s3://attacker/models"}},
        "training.CheckpointConfig.S3Uri": {"CheckpointConfig": {"S3Uri": "s3://other-bucket/checkpoints"}},
        "training.RoleArn": {"RoleArn": "arn:aws:iam::123456789012:role/admin"},
        "training.ResourceConfig.InstanceType": {
            "ResourceConfig": {"InstanceType": "ml.p4d.24xlarge", "InstanceCount": 1, "VolumeSizeInGB": 5}
        },
    }
    for field, training in attacks.items():
        request = conf(cv={"n_splits": 3})
        request["training"].update(training)
        run = run_dag(request)
        assert run.state == "failed" and states(run)[("check_request", -1)] == "failed", field
        assert f"  - {field}: " in printed(), field
    assert sagemaker.creates == []
    assert "Contents" not in s3.list_objects_v2(Bucket="bucket", Prefix="out/")


def test_no_operator_of_the_package_renders_templates():
    """Every operator here receives user data: none may declare a templated field (future ones too)."""
    import importlib
    import inspect
    import pkgutil

    import airflow_smx.operators
    from airflow_smx.compat import BaseOperator

    operators = [
        cls
        for info in pkgutil.iter_modules(airflow_smx.operators.__path__)
        for _, cls in inspect.getmembers(importlib.import_module(f"airflow_smx.operators.{info.name}"), inspect.isclass)
        if issubclass(cls, BaseOperator) and cls.__module__.startswith("airflow_smx.")
    ]
    assert len(operators) >= 2
    assert {cls.__name__: tuple(cls.template_fields) for cls in operators if cls.template_fields} == {}
