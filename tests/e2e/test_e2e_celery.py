"""The DAG under CeleryExecutor, as Amazon MWAA runs it (Redis stands in for MWAA's SQS broker):
tasks run in a Celery worker's pool processes, and must defer, fork split workers and tear down
there as they do under LocalExecutor. Figures go to build/e2e/artifacts/e2e-report.json.
"""

from __future__ import annotations

import copy
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.checks import cancel_stops_jobs, run_within_pool, succeeds
from tests.e2e.deployment import AwsEndpoint, Deployment, dataset, deploy, record, sagemaker_request

pytestmark = pytest.mark.e2e

# The local backend's command: it reports how many records its validation channel holds, so the
# folds' figures add up to the dataset's records only if every record reached exactly one fold.
COUNT_RECORDS = """
import os, pathlib
found = pathlib.Path(os.environ["SM_CHANNEL_VALIDATION"]).rglob("*")
print("validation:records=%d" % sum(f.read_bytes().count(b"\\n") for f in found if f.is_file()))
"""
# A local input this large is read by forked processes, one per CPU (core/folds/scan.py)
FORKED_SCAN_BYTES = 70 << 20


@pytest.fixture(scope="module")
def celery_deployment(
    tmp_path_factory: pytest.TempPathFactory, e2e_venv: tuple[Path, float], aws: tuple[AwsEndpoint, Any]
) -> Iterator[Deployment]:
    """Airflow with CeleryExecutor and the local backend on. Stopped at the end of this module, so
    that it and the LocalExecutor deployment never share the machine."""
    commands = {"count-records": [sys.executable, "-c", COUNT_RECORDS]}
    with deploy(tmp_path_factory.mktemp("e2e-celery"), e2e_venv[0], *aws, celery=True, local_commands=commands) as up:
        yield up


def test_five_sagemaker_folds_defer_within_the_pool(celery_deployment: Deployment) -> None:
    _, _, figures = run_within_pool(celery_deployment, sagemaker_request("celery-5x1"))
    record("celery: 5 folds x 1 instance", **figures)


def local_request(name: str, data: Path, output: Path) -> dict[str, Any]:
    """The demo's request (examples/local-demo.json), on ``data``, trained by COUNT_RECORDS."""
    request = copy.deepcopy(sagemaker_request(name))
    request.update(backend="local", local={"command": "count-records"}, output_uri=output.as_uri())
    request["input"]["uri"] = data.as_uri()
    request["training"]["AlgorithmSpecification"] = {
        "TrainingImage": "local",
        "TrainingInputMode": "File",
        "MetricDefinitions": [{"Name": "validation:records", "Regex": r"validation:records=(\d+)"}],
    }
    request["metrics"] = {"objective": "validation:records", "direction": "maximize"}
    return request


def test_a_large_local_input_is_split_by_forked_processes(celery_deployment: Deployment) -> None:
    assert celery_deployment.local_data is not None
    rows = dataset()
    copies = math.ceil(FORKED_SCAN_BYTES / len(rows))
    data = celery_deployment.local_data / "train.csv"
    data.write_bytes(rows * copies)
    records = rows.count(b"\n") * copies

    run_id, watched = succeeds(
        celery_deployment,
        local_request("celery-forked", data, celery_deployment.local_data / "runs"),
        "train_fold_local",
    )

    split_log = celery_deployment.airflow.task_log(run_id, "split_dataset")
    forked = re.search(r"reading \S+ in (\d+) processes", split_log)
    assert forked and int(forked.group(1)) >= 2, split_log
    summary = celery_deployment.airflow.xcom(run_id, "aggregate_results")
    assert (summary["n_folds"], summary["succeeded"]) == (5, 5)
    assert summary["metrics"]["validation:records"]["mean"] * 5 == pytest.approx(records)
    record(
        "celery: 5 local folds of a large input",
        trigger_to_success_seconds=round(watched.seconds, 1),
        input_mb=data.stat().st_size >> 20,
        split_processes=int(forked.group(1)),
    )


@pytest.mark.parametrize("triggerer", ["watching", "down"])
def test_cancelling_a_run_stops_its_training_jobs(celery_deployment: Deployment, triggerer: str) -> None:
    conf = sagemaker_request(f"celery-cancel-{triggerer}", n_splits=2, seconds=3600)
    seconds = cancel_stops_jobs(celery_deployment, conf, triggerer)
    record(f"celery: cancel, triggerer {triggerer}", seconds_to_stop_jobs=seconds)
