"""Shared fixtures: generated datasets and an S3 endpoint (moto's server, in this process)."""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Airflow reads its configuration when first imported: give the tests their own home first."""
    home = tempfile.mkdtemp(prefix="airflow-smx-tests-")
    os.environ.update(
        {
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": os.path.join(os.path.dirname(os.path.dirname(__file__)), "dags"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        }
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The end-to-end deployments run last (pytest would start with tests/e2e/): a broken unit shows
    in minutes, and CI builds the version matrix's venvs alongside the quick tests, not the
    deployments, whose schedulers and API servers must not starve for CPU."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)


def make_records(n: int, seed: int, n_classes: int = 4, n_groups: int = 30, int_groups: bool = False) -> list[dict]:
    """Records with imbalanced labels and uneven groups; ``id`` is the record's position."""
    rng = random.Random(seed)
    weights = [2.0**-i for i in range(n_classes)]
    labels = [f"c{i}" for i in range(n_classes)]
    group_weights = [rng.paretovariate(1.5) for _ in range(n_groups)]
    records = []
    for i in range(n):
        group = rng.choices(range(n_groups), weights=group_weights)[0]
        records.append(
            {
                "id": i,
                "class": rng.choices(labels, weights=weights)[0],
                "meta": {"patient": group if int_groups else f"p{group}"},
                "text": "é" * rng.randint(0, 3) + "x" * rng.randint(1, 40),
            }
        )
    return records


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def jsonl_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "data.jsonl", make_records(400, seed=3))


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 (and SageMaker) over HTTP on a free loopback port, for s3fs and boto3 alike."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    # moto 5.0 (pinned by MWAA's 2.11.2 image) has no get_host_and_port(): ask its werkzeug server
    host, port = server._server.server_address[:2]
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> object:
    """A fresh moto (every service reset) with a bucket named ``bucket``; credentials and endpoint in the environment."""
    import boto3
    import fsspec

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    fsspec.filesystem("s3").clear_instance_cache()
    urllib.request.urlopen(urllib.request.Request(f"{s3_endpoint}/moto-api/reset", method="POST")).close()
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="bucket")
    return client


@pytest.fixture
def sagemaker(s3, monkeypatch):
    """moto's SageMaker with jobs that stay InProgress until a test finishes them, and a working StopTrainingJob."""
    from tests.sagemaker_fake import FakeSageMaker

    return FakeSageMaker(monkeypatch)


@pytest.fixture
def printed(capfd, caplog):
    """What a run has shown its user since the last call: stdout, stderr and the log records, as
    text (Airflow 3.0's dag.test() prints a failed task's error in colour: ESC[1m2ESC[0m for 2)."""

    def read() -> str:
        captured = capfd.readouterr()
        text = captured.out + captured.err + caplog.text
        caplog.clear()
        return re.sub(r"\x1b\[[0-9;]*m", "", text)

    return read


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """This session's Airflow metadata database (SQLite under the tests' AIRFLOW_HOME), migrated."""
    import subprocess
    import sys

    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, timeout=300)
    # what a deployment's DAG processor does before any run: records the DAGs and activates their
    # assets (Airflow 3.0's dag.test() does neither, and then refuses the run's outlet asset)
    subprocess.run([str(airflow), "dags", "reserialize"], check=True, capture_output=True, timeout=300)
    from tests.versions import share_in_process_api

    share_in_process_api()


@pytest.fixture
def run_dag(airflow_db, sagemaker, s3, monkeypatch):
    """Run smx_cross_validation with a conf through dag.test(), SageMaker played by a Simulator thread."""
    from tests.dag_harness import ACCURACY, ROLE, ROOT, Simulator

    for key, value in {
        "AIRFLOW__SMX__ALLOWED_PREFIXES": '["s3://bucket/data", "s3://bucket/out"]',
        "AIRFLOW__SMX__ROLE_ARN": ROLE,
        "AIRFLOW__SMX__AWS_CONN_ID": "",
        "AIRFLOW__SMX__CHECK_INTERVAL": "1",
        "AIRFLOW__SMX__INSTANCE_TYPES": '["ml.m5.*", "ml.p3.2xlarge"]',  # SMX-Validator's sample uses a p3
    }.items():
        monkeypatch.setenv(key, value)
    body = "".join(json.dumps({"id": i, "class": f"c{i % 3}", "x": i * 0.5}) + "\n" for i in range(200))
    s3.put_object(Bucket="bucket", Key="data/train.jsonl", Body=body.encode())
    simulators = []

    def run(conf, outcomes=lambda fold: {"metrics": {"validation:accuracy": ACCURACY[fold]}}):
        from tests.versions import DagBag

        dag = DagBag(dag_folder=str(ROOT / "dags")).dags["smx_cross_validation"]
        for previous in simulators:  # one SageMaker at a time: a test's later run has outcomes of its own
            previous.running = False
            previous.join()
        simulator = Simulator(sagemaker, outcomes)
        simulators.append(simulator)
        simulator.start()
        return dag.test(run_conf=conf)

    yield run
    for simulator in simulators:
        simulator.running = False
