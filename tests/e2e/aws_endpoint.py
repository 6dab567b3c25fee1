"""A local AWS endpoint whose training jobs behave like SageMaker's, for the end-to-end test.

    python tests/e2e/aws_endpoint.py STATUS_FILE

moto's server (S3, SageMaker, ...) on a free loopback port, with tests/sagemaker_fake.py's
additions. A job stays InProgress for ``e2e_seconds`` (a hyperparameter; 4 by default), then
completes with per-fold metrics and billing; StopTrainingJob stops it. STATUS_FILE (JSON) holds
the endpoint, every job seen, and the most jobs and instances InProgress at any one moment, in
all and per Airflow run (the airflow_run_id tag). It is rewritten on every change. Runs until
SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.sagemaker_fake import FakeSageMaker

TICK_SECONDS = 0.1
DEFAULT_SECONDS = 4.0


def fold_metrics(name: str) -> dict[str, float]:
    """Distinct, known scores per fold, so the aggregate can be checked."""
    match = re.search(r"fold(\d+)$", name)
    fold = int(match.group(1)) if match else 0
    return {"validation:accuracy": 0.80 + 0.02 * fold, "validation:auc": 0.90 + 0.01 * fold}


def run_of(job: Any) -> str:
    return next((tag["Value"] for tag in job.tags if tag["Key"] == "airflow_run_id"), "")


def describe(job: Any) -> dict[str, Any]:
    return {
        "status": job.training_job_status,
        "instances": job.resource_config["InstanceCount"],
        "tags": {tag["Key"]: tag["Value"] for tag in job.tags},
        "hyperparameters": job.hyper_parameters,
    }


class Jobs:
    """Drives moto's training jobs through time and keeps the status file."""

    def __init__(self, fake: FakeSageMaker, status_file: Path, endpoint: str):
        self.fake = fake
        self.status_file = status_file
        self.endpoint = endpoint
        self.started: dict[str, float] = {}
        self.peaks: dict[str, dict[str, int]] = {}  # "*" for all jobs, else per airflow_run_id tag
        self.written = ""

    def tick(self) -> None:
        backend = getattr(self.fake, "backend", None)
        jobs = list(backend.training_jobs.values()) if backend else []
        now = time.monotonic()
        for job in jobs:
            if job.training_job_status != "InProgress":
                continue
            start = self.started.setdefault(job.training_job_name, now)
            if now - start >= float((job.hyper_parameters or {}).get("e2e_seconds", DEFAULT_SECONDS)):
                self.fake.finish(job.training_job_name, metrics=fold_metrics(job.training_job_name))
        self.record(jobs)

    def record(self, jobs: list[Any]) -> None:
        """Every job's state, and the most jobs and instances InProgress at once: overall and per Airflow run."""
        running = [job for job in jobs if job.training_job_status == "InProgress"]
        for run_id in {"*", *map(run_of, running)}:
            mine = [job for job in running if run_id in ("*", run_of(job))]
            peak = self.peaks.setdefault(run_id, {"jobs": 0, "instances": 0})
            peak["jobs"] = max(peak["jobs"], len(mine))
            peak["instances"] = max(peak["instances"], sum(job.resource_config["InstanceCount"] for job in mine))
        status = {
            "endpoint": self.endpoint,
            "jobs": {job.training_job_name: describe(job) for job in jobs},
            "peaks": self.peaks,
        }
        serialized = json.dumps(status, indent=1)
        if serialized != self.written:
            self.write(serialized)

    def write(self, serialized: str) -> None:
        scratch = self.status_file.with_suffix(".tmp")
        scratch.write_text(serialized)
        os.replace(scratch, self.status_file)  # readers never see half a file
        self.written = serialized


def main(status_file: str) -> None:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    jobs = Jobs(FakeSageMaker(pytest.MonkeyPatch()), Path(status_file), f"http://{host}:{port}")
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    jobs.record([])
    while not stopping:
        jobs.tick()
        time.sleep(TICK_SECONDS)
    server.stop()


if __name__ == "__main__":
    main(sys.argv[1])
