"""The airflow-smx command, run as a user runs it: a subprocess, exit codes, printed output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_records, write_jsonl

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"


def run(*args: str, module: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "airflow_smx"] if module else [str(Path(sys.executable).parent / "airflow-smx")]
    return subprocess.run([*command, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_check_prints_the_normalized_smx_validator_sample():
    result = run("check", str(EXAMPLES / "smx_validator_sample.json"))
    assert result.returncode == 0, result.stderr
    request = json.loads(result.stdout)
    assert request["backend"] == "sagemaker" and request["cv"]["n_splits"] == 5
    assert request["channels"]["train"]["S3DataType"] == "AugmentedManifestFile"


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.json")))
def test_every_example_passes_check(example):
    result = run("check", str(EXAMPLES / example))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["backend"] in ("sagemaker", "local")


def test_check_lists_every_mistake_and_exits_2(tmp_path):
    conf = tmp_path / "bad.json"
    conf.write_text(
        json.dumps(
            {
                "name": "x",
                "input": {"uri": "s3://b/d.jsonl"},
                "output_uri": "b/out",
                "cv": {"n_splits": 1, "holdout": 2},
            }
        )
    )
    result = run("check", str(conf), module=True)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines()[1:] == [
        "  - cv.holdout: must be < 1.0, got 2",
        "  - cv.n_splits: must be >= 2, got 1",
        "  - output_uri: must start with one of s3://, file://, got 'b/out'",
    ]
    assert run("check", str(tmp_path / "missing.json")).returncode == 2
    (tmp_path / "notjson.json").write_text("{")
    assert "not JSON" in run("check", str(tmp_path / "notjson.json")).stderr


def test_split_with_flags_prints_a_summary(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", make_records(500, seed=1))
    result = run(
        "split", "--input", str(data), "--output", str(tmp_path / "out"), "--format", "jsonl",
        "--label", "class", "--group", "meta.patient", "--strategy", "stratified_group",
        "--n-splits", "4", "--seed", "7", "--holdout", "0.1", "--run-id", "r1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "records:   500" in result.stdout and "MB/s" in result.stdout
    assert "classes:   4: c0=" in result.stdout
    plan_line = next(line for line in result.stdout.splitlines() if line.startswith("plan:"))
    plan_uri = plan_line.split()[-1]
    assert plan_uri == (tmp_path / "out" / "r1" / "folds" / "plan.json").as_uri()
    plan = json.loads(Path(plan_uri.removeprefix("file://")).read_text())
    assert plan["strategy"] == "stratified_group" and plan["random_state"] == 7 and len(plan["folds"]) == 4


def test_split_from_a_conf_file_and_its_errors(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", make_records(60, seed=2))
    conf = {
        "name": "demo",
        "input": {"uri": data.as_uri(), "label": "class"},
        "output_uri": (tmp_path / "out").as_uri(),
        "cv": {"strategy": "stratified", "n_splits": 3, "allow_small_classes": True},
        "backend": "local",
        "local": {"command": "train"},
    }
    (tmp_path / "conf.json").write_text(json.dumps(conf))
    result = run("split", str(tmp_path / "conf.json"), "--run-id", "r2")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "r2" / "folds" / "plan.json").exists()

    conf["cv"] = {"strategy": "stratified", "n_splits": 40}
    (tmp_path / "conf.json").write_text(json.dumps(conf))
    result = run("split", str(tmp_path / "conf.json"), "--run-id", "r3")
    assert result.returncode == 2
    assert "cannot split: cv.n_splits: class 'c" in result.stderr
    assert not (tmp_path / "out" / "r3").exists()
    assert run("split", "--input", str(data)).stderr.strip().endswith("--output: required (or give CONF.json)")


def test_schema_command_prints_the_request_schema():
    result = run("schema")
    assert result.returncode == 0 and json.loads(result.stdout)["title"] == "CVRequest"
