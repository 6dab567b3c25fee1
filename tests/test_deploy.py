"""Deployment artifacts: the Amazon MWAA bundle and its IAM policy."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from airflow_smx.core.policy import Policy

ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize("airflow", [None, "2.11.2"])
def test_mwaa_bundle_builds_with_one_command(tmp_path, airflow):
    image = airflow or "3.3.1"  # the newest MWAA image is the default
    result = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "mwaa" / "build.py"), "--out", str(tmp_path / "mwaa")]
        + (["--airflow", airflow] if airflow else []),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    with zipfile.ZipFile(tmp_path / "mwaa" / "plugins.zip") as plugins:
        # at the top level, where --find-links and --constraint look
        wheel, constraints = sorted(plugins.namelist(), key=lambda name: name.endswith(".txt"))
        assert wheel.startswith("airflow_smx-") and wheel.endswith(".whl")
        assert plugins.read(constraints) == (ROOT / "constraints" / f"mwaa-{image}.txt").read_bytes()
        plugins.extract(wheel, tmp_path)
    with zipfile.ZipFile(tmp_path / wheel) as package:
        names = package.namelist()
        entry_points = package.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "airflow_smx/dag/graph.py" in names and "airflow_smx/core/folds/split.py" in names
    assert "[apache_airflow_provider]" in entry_points and "airflow-smx = airflow_smx.cli.main:main" in entry_points
    requirements = (tmp_path / "mwaa" / "requirements.txt").read_text().splitlines()
    version = wheel.split("-")[1]
    assert requirements[1:] == [
        f"--constraint /usr/local/airflow/plugins/mwaa-{image}.txt",
        "--find-links /usr/local/airflow/plugins",
        f"airflow-smx=={version}",
    ]
    dag = (tmp_path / "mwaa" / "dags" / "smx_cross_validation.py").read_text()
    assert dag == (ROOT / "dags" / "smx_cross_validation.py").read_text()


def test_mwaa_bundle_refuses_an_image_it_has_no_constraints_for(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "mwaa" / "build.py"), "--airflow", "2.10.3", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "invalid choice: '2.10.3'" in result.stderr


def test_iam_policy_grants_only_what_a_cv_run_needs():
    from airflow_smx import settings

    policy = json.loads((ROOT / "deploy" / "mwaa" / "iam-policy.json").read_text())
    statements = {s["Sid"]: s for s in policy["Statement"]}
    assert all(s["Effect"] == "Allow" for s in statements.values())
    jobs = statements["CrossValidationTrainingJobs"]
    assert set(jobs["Action"]) == {
        "sagemaker:DescribeTrainingJob",
        "sagemaker:StopTrainingJob",
        "sagemaker:AddTags",
        "sagemaker:ListTags",
    }
    assert jobs["Resource"].endswith(":training-job/crossvalidator-*")
    # AWS enforces the [smx] defaults too: instance types and the longest run, both required
    create = statements["CreateTrainingJobsWithinTheDeploymentsBounds"]
    assert create["Action"] == ["sagemaker:CreateTrainingJob"] and create["Resource"] == jobs["Resource"]
    bounds = create["Condition"]
    assert bounds["ForAllValues:StringLike"]["sagemaker:InstanceTypes"] == list(Policy().instance_types)
    assert bounds["NumericLessThanEquals"]["sagemaker:MaxRuntimeInSeconds"] == str(Policy().max_runtime_seconds)
    assert bounds["Null"] == {"sagemaker:InstanceTypes": "false", "sagemaker:MaxRuntimeInSeconds": "false"}
    # the split's Processing job (offload_bytes): its own names, instance type and longest run
    split = statements["CreateSplitJobsWithinTheDeploymentsBounds"]
    assert split["Resource"].endswith(":processing-job/crossvalidator-*")
    assert split["Condition"]["StringEquals"]["sagemaker:InstanceTypes"] == [
        settings.OPTIONS["split_instance_type"]["default"]
    ]
    assert split["Condition"]["NumericLessThanEquals"]["sagemaker:MaxRuntimeInSeconds"] == "14400"
    assert set(statements["CrossValidationSplitJobs"]["Action"]) == {
        "sagemaker:DescribeProcessingJob",
        "sagemaker:StopProcessingJob",
        "sagemaker:AddTags",
    }
    pass_role = statements["PassTheTrainingRolesOnly"]
    assert pass_role["Resource"] == ["${TrainingRoleArn}"]
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    assert statements["ReadInputPrefix"]["Action"] == ["s3:GetObject"]
    registry = statements["RegisterRefitModels"]  # versions of the crossvalidator-{name} groups only; no approval
    assert "sagemaker:UpdateModelPackage" not in registry["Action"]
    assert all(
        ":model-package-group/crossvalidator-" in r or ":model-package/crossvalidator-" in r
        for r in registry["Resource"]
    )
    actions = [a for s in statements.values() for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
    assert not [a for a in actions if a.endswith("*")]  # no wildcard actions
    resources = [
        r for s in statements.values() for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
    ]
    assert "*" not in resources


def policy_of(environment: dict[str, str]):
    """The Policy a deployment configured by these environment variables enforces."""
    from airflow_smx import settings

    smx = {k: v for k, v in environment.items() if k.startswith("AIRFLOW__SMX__")}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in smx.items():
            patch.setenv(key, str(value))
        return settings.policy()


def compose_command() -> list[str] | None:
    """`docker compose` (v2 plugin) or `docker-compose` (v1, Debian's package), whichever exists."""
    import shutil

    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


@pytest.mark.skipif(compose_command() is None, reason="no docker compose client (.ci/run installs one)")
def test_docker_compose_config_is_valid_and_complete():
    import yaml

    result = subprocess.run([*compose_command(), "config"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert {"postgres", "aws", "airflow-init", "api-server", "scheduler", "dag-processor", "triggerer"} == set(services)
    for name in ("api-server", "scheduler", "dag-processor", "triggerer"):
        service = services[name]
        assert service["environment"]["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert service["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
        assert any(
            str(v).endswith(":/opt/airflow/dags:ro") or (isinstance(v, dict) and v.get("target") == "/opt/airflow/dags")
            for v in service["volumes"]
        )
        assert service["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        policy = policy_of(service["environment"])  # the [smx] options parse, and turn the local backend on
        assert policy.default_backend == "local" and policy.allowed_prefixes == ("s3://smx-trial/",)
        (command,) = policy.local_commands.values()
        assert command.argv[-1] == "/opt/airflow-smx/examples/train_sklearn.py"
    assert (
        "COPY --chown=airflow:root examples/train_sklearn.py " + command.argv[-1] in (ROOT / "Dockerfile").read_text()
    )
    assert "airflow smx setup-pool" in " ".join(services["airflow-init"]["command"])
    assert "pip install" in (ROOT / "Dockerfile").read_text()
