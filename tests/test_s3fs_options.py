"""The fold engine's S3 credentials come from the Airflow connection and refresh like the connection's."""

from __future__ import annotations

import asyncio
import datetime
import json

from airflow_smx.core import storage
from airflow_smx.hooks.s3fs_options import s3_storage_options


def test_assumed_role_credentials_refresh_during_a_long_split(s3, monkeypatch):
    role = {"conn_type": "aws", "extra": {"role_arn": "arn:aws:iam::123456789012:role/smx", "region_name": "us-east-1"}}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_ROLE", json.dumps(role))
    options = s3_storage_options("aws_role")
    fs, path = storage.filesystem("s3://bucket/cv/plan.json", options)
    storage.write_json(fs, path, {"part": 1})

    credentials = asyncio.run(options["session"].get_credentials())
    first = asyncio.run(credentials.get_frozen_credentials()).access_key
    credentials._expiry_time = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)  # an hour later
    storage.write_json(fs, path, {"part": 2})  # the same filesystem goes on working
    assert asyncio.run(credentials.get_frozen_credentials()).access_key != first  # with the role assumed again
    assert storage.read_json(fs, path) == {"part": 2}
