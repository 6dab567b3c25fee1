"""fsspec options for S3 from an Airflow AWS connection, so the fold engine uses its credentials.

The options carry the connection's aiobotocore session, as the amazon provider's object storage
(``airflow.providers.amazon.aws.fs.s3``) does, not a copy of its keys: role credentials
(assumed roles, MWAA's execution role) expire, often within an hour, and a session refreshes
them, so a long split does not fail halfway with ExpiredToken.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook


def s3_storage_options(aws_conn_id: str | None) -> dict[str, Any]:
    """s3fs keyword arguments carrying the connection's credentials, region and endpoint."""
    hook = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="s3")
    client_kwargs = {
        k: v
        for k, v in {"region_name": hook.conn_region_name, "endpoint_url": hook.conn_config.endpoint_url}.items()
        if v
    }
    options: dict[str, Any] = {"session": hook.get_session(deferrable=True)}
    if client_kwargs:
        options["client_kwargs"] = client_kwargs
    return options


def storage_options_for(aws_conn_id: str | None, *uris: str) -> dict[str, Any]:
    """The connection's s3fs options when any of ``uris`` is on S3; none for local files."""
    return s3_storage_options(aws_conn_id) if any(u.startswith("s3://") for u in uris) else {}
