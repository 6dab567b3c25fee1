"""The local backend: SageMaker's container contract, metrics from output, kill, re-use, and the
demo's scores equal to scikit-learn's cross_validate on the same folds."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tarfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import joblib
import numpy as np
import pytest

from airflow_smx.compat import AirflowFailException
from airflow_smx.core.container import record_uri
from airflow_smx.core.folds import split_dataset
from airflow_smx.core.job_requests import fold_training_config
from airflow_smx.core.request import parse_request
from airflow_smx.operators.local_fold import LocalFoldTrainingOperator

ROOT = Path(__file__).parent.parent
WHEN = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
PROBE = """
import json, os, pathlib, sys
base = pathlib.Path(os.environ["SAGEMAKER_BASE_DIR"])
report = {
    "env": {k: v for k, v in os.environ.items() if k.startswith("SM_") or k == "SAGEMAKER_BASE_DIR"},
    "worker": {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_"))
               and k not in ("PATH", "LANG", "LC_ALL", "TZ", "HOME", "TMPDIR", "LC_CTYPE")},
    "hyperparameters": json.loads((base / "input/config/hyperparameters.json").read_text()),
    "resourceconfig": json.loads((base / "input/config/resourceconfig.json").read_text()),
    "train": sorted(p.name for p in pathlib.Path(os.environ["SM_CHANNEL_TRAIN"]).iterdir()),
    "validation": sorted(p.name for p in pathlib.Path(os.environ["SM_CHANNEL_VALIDATION"]).iterdir()),
    "rows": sum(len(p.read_text().splitlines()) for p in pathlib.Path(os.environ["SM_CHANNEL_TRAIN"]).iterdir()),
}
pathlib.Path(os.environ["REPORT_FILE"]).write_text(json.dumps(report))
print("score=0.5"); print("score=0.75")
(pathlib.Path(os.environ["SM_MODEL_DIR"]) / "weights.txt").write_text("w")
(pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"]) / "evaluation.json").write_text('{"score": 0.75}')
if os.environ.get("FAIL"):
    (base / "output/failure").write_text("ValueError: bad input")
    sys.exit(1)
"""


@pytest.fixture
def deploy(monkeypatch):
    """Turn the local backend on with these named commands, as a deployer does ([smx] local_commands)."""

    def allow(**commands):
        monkeypatch.setenv("AIRFLOW__SMX__LOCAL_COMMANDS", json.dumps(commands))

    return allow


def fold_configs(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("".join(f"{i % 2},{i},{i * 0.5}\n" for i in range(40)))
    request = parse_request(
        {
            "name": "probe",
            "input": {"uri": data.as_uri(), "label": 0},
            "output_uri": (tmp_path / "out").as_uri(),
            "cv": {"strategy": "stratified", "n_splits": 4},
            "backend": "local",
            "training": {
                "AlgorithmSpecification": {"MetricDefinitions": [{"Name": "score", "Regex": "score=([0-9.]+)"}]},
                "HyperParameters": {"alpha": "0.1", "rows": "${num_training_samples}"},
                "StoppingCondition": {"MaxRuntimeInSeconds": 120},
            },
        }
    )
    plan = split_dataset(request.input, request.cv, (tmp_path / "out" / "run" / "folds").as_uri())
    return [fold_training_config(request, plan, f, WHEN, "run") for f in plan.folds]


def operator(config, command):
    return LocalFoldTrainingOperator(task_id="train_fold_local", config=config, command=command, aws_conn_id=None)


def test_the_container_contract_metrics_and_model(tmp_path, deploy, monkeypatch):
    deploy(probe={"command": [sys.executable, "-c", PROBE], "env": {"REPORT_FILE": str(tmp_path / "report.json")}})
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "worker-secret")  # the worker's, not the command's
    config = fold_configs(tmp_path)[1]
    result = operator(config, "probe").execute({})
    report = json.loads((tmp_path / "report.json").read_text())
    env = report["env"]
    assert report["hyperparameters"] == {"alpha": "0.1", "rows": "30"} and report["rows"] == 30
    assert report["resourceconfig"]["current_host"] == "algo-1"
    assert report["train"] == ["part-00000.csv", "part-00002.csv", "part-00003.csv"]  # the manifest, resolved
    assert report["validation"] == ["part-00001.csv"]
    assert env["SM_MODEL_DIR"] == env["SAGEMAKER_BASE_DIR"] + "/model"
    assert json.loads(env["SM_HPS"]) == {"alpha": "0.1", "rows": "30"} and env["SM_HP_ALPHA"] == "0.1"
    assert json.loads(env["SM_CHANNELS"]) == ["train", "validation"]
    assert {"SM_OUTPUT_DATA_DIR", "SM_NUM_CPUS", "SM_CHANNEL_TRAIN", "SM_CHANNEL_VALIDATION"} <= set(env)
    # built from nothing: the deployment's env for the command, never the worker's Airflow or AWS settings
    assert report["worker"] == {"REPORT_FILE": str(tmp_path / "report.json")}
    assert result["TrainingJobStatus"] == "Completed"
    assert [(m["MetricName"], m["Value"]) for m in result["FinalMetricDataList"]] == [("score", 0.75)]
    model = Path(result["ModelArtifacts"]["S3ModelArtifacts"].removeprefix("file://"))
    with tarfile.open(model) as archive:
        assert archive.getnames() == ["weights.txt"]
    with tarfile.open(model.parent / "output.tar.gz") as archive:  # output/data, beside the model as SageMaker puts it
        assert json.load(archive.extractfile("evaluation.json")) == {"score": 0.75}
    assert json.loads(Path(record_uri(config).removeprefix("file://")).read_text()) == result


def test_a_failure_is_final_a_clear_trains_a_new_attempt_and_a_completed_fold_is_reused(tmp_path, deploy):
    env = {"REPORT_FILE": str(tmp_path / "report.json")}
    probe = [sys.executable, "-c", PROBE]
    deploy(
        probe=probe, failing={"command": probe, "env": {**env, "FAIL": "1"}}, exit3=[sys.executable, "-c", "exit(3)"]
    )
    config = fold_configs(tmp_path)[0]
    with pytest.raises(AirflowFailException, match="ValueError: bad input"):
        operator(config, "failing").execute({})
    record = json.loads(Path(record_uri(config).removeprefix("file://")).read_text())
    assert (
        record["TrainingJobStatus"] == "Failed" and record["FailureReason"] == "AlgorithmError: ValueError: bad input"
    )
    deploy(probe={"command": probe, "env": env}, exit3=[sys.executable, "-c", "exit(3)"])
    first = operator(config, "probe").execute({})  # the user clears it: a new attempt trains
    assert first["TrainingJobName"] == f"{config['TrainingJobName']}-r2"
    assert {"Key": "airflow_smx_attempt", "Value": "2"} in first["Tags"]
    again = operator(config, "exit3").execute({})  # re-used, not rerun
    assert again == first and first["TrainingJobStatus"] == "Completed"
    changed = {**config, "Tags": [*config["Tags"], {"Key": "airflow_smx_folds", "Value": "other"}]}
    with pytest.raises(AirflowFailException, match="exit code 3"):  # the folds changed: trains again
        operator(changed, "exit3").execute({})
    assert Path(record_uri({**config, "TrainingJobName": f"{config['TrainingJobName']}-r3"})[7:]).exists()


def test_a_command_the_deployment_does_not_list_never_runs(tmp_path, deploy):
    marker = tmp_path / "marker"
    deploy(probe=[sys.executable, "-c", PROBE])
    with pytest.raises(AirflowFailException, match=r"'touch' is not one of the deployment's commands"):
        operator(fold_configs(tmp_path)[0], "touch").execute({})
    deploy()  # the deployment turned the local backend off since the fold was planned
    with pytest.raises(AirflowFailException, match=r"'probe' is not one of the deployment's commands"):
        operator(fold_configs(tmp_path)[0], "probe").execute({})
    assert not marker.exists()


def test_killing_a_local_fold_ends_its_process_group(tmp_path, deploy):
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time, pathlib;"
        f"c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']);"
        f"pathlib.Path({str(pid_file)!r}).write_text(str(c.pid)); time.sleep(300)"
    )
    deploy(sleeper=[sys.executable, "-c", script])
    task = operator(fold_configs(tmp_path)[0], "sleeper")
    children = []

    def kill_once_the_child_runs():  # the user's kill arrives while execute() runs in the main thread
        if wait_until(pid_file.exists):  # (Airflow 2's operators execute only there)
            children.append(int(pid_file.read_text()))
        task.on_kill()

    killer = threading.Thread(target=kill_once_the_child_runs)
    killer.start()
    with pytest.raises(AirflowFailException, match="exit code -15"):
        task.execute({})
    killer.join(30)
    assert children, "the training script never started its child"
    assert wait_until(lambda: not alive(children[0])), "the script's own child outlived the kill"


def wait_until(condition, timeout: float = 60) -> bool:
    """Wait for an event; the timeout only bounds a test that would otherwise hang."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def alive(pid: int) -> bool:
    """Running, not just a zombie waiting for a parent to reap it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_demo_scores_equal_sklearn_cross_validate_on_the_same_folds(airflow_db, tmp_path, monkeypatch):
    from sklearn.model_selection import StratifiedKFold, cross_validate

    from tests.versions import DagBag

    spec = importlib.util.spec_from_file_location("run_demo", ROOT / "examples" / "run_demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    data = demo.write_dataset(tmp_path / "data" / "breast_cancer.csv")
    monkeypatch.setenv("AIRFLOW__SMX__ALLOWED_PREFIXES", json.dumps([tmp_path.as_uri()]))
    monkeypatch.setenv("AIRFLOW__SMX__AWS_CONN_ID", "")
    monkeypatch.setenv("AIRFLOW__SMX__LOCAL_COMMANDS", demo.local_commands())
    run = DagBag(dag_folder=str(ROOT / "dags")).dags["smx_cross_validation"].test(run_conf=demo.demo_conf(tmp_path))
    assert run.state == "success"
    (result_file,) = tmp_path.glob("runs/*/results/cv_result.json")
    metrics = json.loads(result_file.read_text())["summary"]["metrics"]

    table = np.loadtxt(data, delimiter=",")
    features, labels = table[:, 1:], table[:, 0]
    tests = [test for _, test in StratifiedKFold(5, shuffle=True, random_state=42).split(features, labels)]
    # the train channel is the other folds' parts one after another, each in file order
    folds = [(np.concatenate([t for j, t in enumerate(tests) if j != i]), test) for i, test in enumerate(tests)]
    trainer = importlib.util.spec_from_file_location("train_sklearn", ROOT / "examples" / "train_sklearn.py")
    train = importlib.util.module_from_spec(trainer)
    trainer.loader.exec_module(train)
    expected = cross_validate(train.estimator(), features, labels, cv=folds, scoring=["accuracy", "f1", "roc_auc"])
    for name in ("accuracy", "f1", "roc_auc"):
        ours = [metrics[f"validation:{name}"]["values"][str(i)] for i in range(5)]
        assert np.allclose(ours, expected[f"test_{name}"], rtol=0, atol=1e-9), name

    # the refit, registered locally as version 1: scikit-learn's fit on every record (in part order)
    (version,) = tmp_path.glob("runs/registry/crossvalidator-breast-cancer-logreg/version-*.json")
    record = json.loads(version.read_text())
    assert (version.name, record["ModelApprovalStatus"]) == ("version-00001.json", "PendingManualApproval")
    archive = record["InferenceSpecification"]["Containers"][0]["ModelDataUrl"].removeprefix("file://")
    with tarfile.open(archive) as packed:
        packed.extract("model.joblib", tmp_path / "refit", filter="data")
    refit = joblib.load(tmp_path / "refit" / "model.joblib")
    records = np.concatenate(tests)
    reference = train.estimator().fit(features[records], labels[records])
    assert np.allclose(refit.predict_proba(features), reference.predict_proba(features), rtol=0, atol=1e-12)
