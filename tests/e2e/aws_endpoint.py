"""A local AWS endpoint whose training jobs behave like SageMaker's, for the end-to-end test.

    python tests/e2e/aws_endpoint.py STATUS_FILE

moto's server (S3, SageMaker, ...) on a free loopback port, with tests/sagemaker_fake.py's
additions. A job stays InProgress for ``e2e_seconds`` (a hyperparameter; 4 by default), then
completes with per-fold metrics and billing, or, if its name ends with ``fold{e2e_fail_fold}``
(a first attempt), fails with an AlgorithmError; StopTrainingJob stops it. ``e2e_score_offset``
is added to every score (a run of a better or worse model).

Provisioning and warm pools, as SageMaker has them: a job first waits ``e2e_provision_seconds``
(0 by default) for its instances, unless a warm pool matches it (same instance type, count,
volume, role and VPC), which it then takes over and starts on at once. A job whose
``KeepAlivePeriodInSeconds`` is above 0 leaves a warm pool when it ends (completed, failed or
stopped), available that long to one later job. STATUS_FILE (JSON)
holds the endpoint, every job seen, the most jobs and instances InProgress at any one moment,
in all and per Airflow run (the airflow_run_id tag), and the faults injected. It is rewritten
on every change. Runs until SIGTERM.

Faults, asked for in ``faults.json`` beside STATUS_FILE (rewritten by the test, read every
tick): ``{"sagemaker_throttle": ratio, "s3_slowdown": ratio, "s3_delay": seconds,
"s3_slowdown_first": bool, "s3_prefix": key prefix, "until": epoch seconds}``. Until ``until``,
that share of SageMaker's training-job calls (create, describe, stop, list tags) answers
ThrottlingException, and of S3 object reads and writes under ``s3_prefix`` answers 503
SlowDown (with ``s3_slowdown_first``: the first read and the first write of every object),
each after ``s3_delay``.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from moto.s3 import responses as s3_responses
from moto.server import ThreadedMotoServer

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.sagemaker_fake import FakeSageMaker, Throttled

TICK_SECONDS = 0.1
DEFAULT_SECONDS = 4.0


SLOW_DOWN = (
    503,
    {"Content-Type": "application/xml"},
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    "<Message>Please reduce your request rate.</Message></Error>",
)


class Faults:
    """The faults the test asked for (faults.json), and how many were injected."""

    def __init__(self, path: Path):
        self.path = path
        self.rules: dict[str, Any] = {}
        self.random = random.Random(11)
        self.injected = {"sagemaker_throttled": 0, "s3_slowdown": 0}
        self.seen: set[tuple[str, str]] = set()  # (method, key) already answered once

    def refresh(self) -> None:
        try:
            self.rules = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.rules = {}

    def active(self, rule: str) -> float:
        return float(self.rules.get(rule, 0)) if time.time() < float(self.rules.get("until", 0)) else 0.0

    def sagemaker(self, operation: str) -> None:
        if self.random.random() < self.active("sagemaker_throttle"):
            self.injected["sagemaker_throttled"] += 1
            raise Throttled()

    def s3(self, method: str, key: str) -> bool:
        """Whether this read or write of ``key`` answers SlowDown (after the delay asked for)."""
        if not key.startswith(self.rules.get("s3_prefix", "\0")):
            return False
        time.sleep(self.active("s3_delay"))
        first = (method, key) not in self.seen and self.active("s3_slowdown_first")
        self.seen.add((method, key))
        if first or self.random.random() < self.active("s3_slowdown"):
            self.injected["s3_slowdown"] += 1
            return True
        return False

    def patch_s3(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for method in ("_key_response_get", "_key_response_put"):
            original = getattr(s3_responses.S3Response, method)

            def faulty(response, query, key_name, original=original, method=method):
                return SLOW_DOWN if self.s3(method, key_name) else original(response, query, key_name)

            monkeypatch.setattr(s3_responses.S3Response, method, faulty)


def fold_metrics(name: str) -> dict[str, float]:
    """Distinct, known scores per fold (every attempt of a fold alike), so the aggregate can be checked."""
    match = re.search(r"fold(\d+)(-r\d+)?$", name)
    fold = int(match.group(1)) if match else 0
    return {"validation:accuracy": 0.80 + 0.02 * fold, "validation:auc": 0.90 + 0.01 * fold}


def run_of(job: Any) -> str:
    return next((tag["Value"] for tag in job.tags if tag["Key"] == "airflow_run_id"), "")


def describe(job: Any, warm: dict[str, str]) -> dict[str, Any]:
    return {
        "status": job.training_job_status,
        "instances": job.resource_config["InstanceCount"],
        "tags": {tag["Key"]: tag["Value"] for tag in job.tags},
        "hyperparameters": job.hyper_parameters,
        "started_on": warm.get(job.training_job_name),  # "new instances", or the warm pool it reused
    }


def pool_match(job: Any) -> str:
    """What SageMaker matches a warm pool on: instance type, count, volume, role, VPC."""
    resources = job.resource_config
    keys = ("InstanceType", "InstanceCount", "VolumeSizeInGB")
    return json.dumps([*(resources.get(k) for k in keys), job.role_arn, job.vpc_config], sort_keys=True)


class WarmPools:
    """Instances kept after a job with KeepAlivePeriodInSeconds, each until reused or expired."""

    def __init__(self) -> None:
        self.available: list[tuple[str, float, str]] = []  # (match, expires, the job that left it)
        self.started_on: dict[str, str] = {}  # job -> "new instances" or the job whose pool it reused

    def start(self, job: Any, now: float) -> float:
        """Where ``job`` starts; the seconds it waits for instances."""
        self.available = [pool for pool in self.available if pool[1] > now]
        match = pool_match(job)
        for pool in self.available:
            if pool[0] == match:
                self.available.remove(pool)
                self.started_on[job.training_job_name] = pool[2]
                return 0.0
        self.started_on[job.training_job_name] = "new instances"
        return float((job.hyper_parameters or {}).get("e2e_provision_seconds", 0))

    def end(self, job: Any, now: float) -> None:
        keep = int(job.resource_config.get("KeepAlivePeriodInSeconds", 0))
        if keep > 0:
            self.available.append((pool_match(job), now + keep, job.training_job_name))


class Jobs:
    """Drives moto's training jobs through time and keeps the status file."""

    def __init__(self, fake: FakeSageMaker, status_file: Path, endpoint: str, faults: Faults):
        self.fake = fake
        self.faults = faults
        self.status_file = status_file
        self.endpoint = endpoint
        self.started: dict[str, float] = {}
        self.provisioning: dict[str, float] = {}  # seconds each job waits for instances
        self.ended: set[str] = set()
        self.warm = WarmPools()
        self.peaks: dict[str, dict[str, int]] = {}  # "*" for all jobs, else per airflow_run_id tag
        self.written = ""

    def tick(self) -> None:
        backend = getattr(self.fake, "backend", None)
        jobs = list(backend.training_jobs.values()) if backend else []
        now = time.monotonic()
        for job in jobs:
            name = job.training_job_name
            if job.training_job_status != "InProgress":
                if name in self.started and name not in self.ended:  # stopped by a client, or failed
                    self.ended.add(name)
                    self.warm.end(job, now)
                continue
            if name not in self.started:
                self.started[name] = now
                self.provisioning[name] = self.warm.start(job, now)
            hyperparameters = job.hyper_parameters or {}
            seconds = self.provisioning[name] + float(hyperparameters.get("e2e_seconds", DEFAULT_SECONDS))
            if now - self.started[name] < seconds:
                continue
            if job.training_job_name.endswith(f"fold{hyperparameters.get('e2e_fail_fold', '')}"):
                reason = "AlgorithmError: ValueError: could not convert string to float: 'n/a'"
                self.fake.finish(job.training_job_name, status="Failed", reason=reason)
            else:
                offset = float(hyperparameters.get("e2e_score_offset", 0))  # a better or worse model, per run
                metrics = {k: v + offset for k, v in fold_metrics(job.training_job_name).items()}
                self.fake.finish(job.training_job_name, metrics=metrics)
            self.ended.add(name)
            self.warm.end(job, now)
        self.faults.refresh()
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
            "jobs": {job.training_job_name: describe(job, self.warm.started_on) for job in jobs},
            "peaks": self.peaks,
            "faults": dict(self.faults.injected),
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
    patch = pytest.MonkeyPatch()
    faults = Faults(Path(status_file).with_name("faults.json"))
    faults.patch_s3(patch)
    fake = FakeSageMaker(patch)
    fake.fault = faults.sagemaker
    jobs = Jobs(fake, Path(status_file), f"http://{host}:{port}", faults)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    jobs.record([])
    while not stopping:
        jobs.tick()
        time.sleep(TICK_SECONDS)
    server.stop()


if __name__ == "__main__":
    main(sys.argv[1])
