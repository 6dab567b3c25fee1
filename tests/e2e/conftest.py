"""The end-to-end deployments' parts: the wheel's venv and the AWS endpoint, built once per
session, and the LocalExecutor deployment (test_e2e_celery.py has the CeleryExecutor one)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.e2e.deployment import (
    BUCKET,
    DATA_KEY,
    REPO,
    AwsEndpoint,
    Deployment,
    aws_endpoint,
    build_wheel,
    dataset,
    deploy,
    install,
)


@pytest.fixture(scope="session", autouse=True)
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (a CI timeout, a kill) as Ctrl-C: pytest then unwinds the fixtures, and with them
    Airflow, Postgres, Redis and the AWS endpoint, instead of exiting and leaving them running."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="session")
def e2e_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """The built wheel installed as users install it; and how long that took."""
    start = time.monotonic()
    venv = install(build_wheel(tmp_path_factory.mktemp("wheel")), REPO / "build" / "e2e")
    return venv, time.monotonic() - start


@pytest.fixture(scope="session")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AwsEndpoint, Any]]:
    """The AWS endpoint, shared by both deployments, and an S3 client on it with the dataset uploaded."""
    with aws_endpoint(tmp_path_factory.mktemp("aws")) as endpoint:
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key=DATA_KEY, Body=dataset())
        yield endpoint, s3


@pytest.fixture(scope="session")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, e2e_venv: tuple[Path, float], aws: tuple[AwsEndpoint, Any]
) -> Iterator[Deployment]:
    """Airflow with LocalExecutor."""
    venv, install_seconds = e2e_venv
    with deploy(tmp_path_factory.mktemp("e2e"), venv, *aws) as deployed:
        deployed.timings["install_seconds"] = install_seconds
        yield deployed
