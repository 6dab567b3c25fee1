"""One real deployment for every end-to-end test: built once per session, stopped at its end."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator

import boto3
import pytest

from tests.e2e.deployment import (
    BUCKET,
    DATA_KEY,
    REPO,
    Deployment,
    airflow,
    aws_endpoint,
    build_wheel,
    dataset,
    install,
    postgres,
    sagemaker_request,
)


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("e2e")
    # SIGTERM (a CI timeout, a kill) as Ctrl-C: pytest then unwinds this fixture, and with it
    # Airflow, Postgres and the AWS endpoint, instead of exiting and leaving them running.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    timings: dict[str, float] = {}
    start = time.monotonic()
    venv = install(build_wheel(root / "wheel"), REPO / "build" / "e2e")
    timings["install_seconds"] = time.monotonic() - start
    with contextlib.ExitStack() as stack:
        database = stack.enter_context(postgres())
        aws = stack.enter_context(aws_endpoint(root))
        s3 = boto3.client(
            "s3",
            endpoint_url=aws.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key=DATA_KEY, Body=dataset())
        request_file = root / "form-defaults.json"  # the trigger form starts from it (the browser test)
        request_file.write_text(json.dumps(sagemaker_request("form-default", n_splits=3, seconds=2)))
        start = time.monotonic()
        deployed = stack.enter_context(airflow(root, venv, database, aws.url, request_file))
        timings["start_seconds"] = time.monotonic() - start
        yield Deployment(deployed, aws, s3, timings)
    signal.signal(signal.SIGTERM, previous)
