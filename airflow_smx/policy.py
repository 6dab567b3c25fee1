"""Deployment policy: which storage a request may touch. No Airflow.

Whoever may trigger the DAG must not be able to make it read or overwrite any bucket that the
Airflow role reaches: the deployment lists the URI prefixes requests may use, and everything
else is refused before any call.
"""

from __future__ import annotations

from collections.abc import Sequence

from airflow_smx.request import CVRequest


def outside_prefixes(request: CVRequest, allowed: Sequence[str]) -> list[str]:
    """One problem per URI of ``request`` outside every allowed prefix."""
    problems = []
    for path, uri in (("input.uri", request.input.uri), ("output_uri", request.output_uri)):
        if not any(_under(uri, prefix) for prefix in allowed):
            listed = ", ".join(allowed) if allowed else "none: set [smx] allowed_prefixes"
            problems.append(f"{path}: {uri} is outside the allowed prefixes ({listed})")
    return problems


def _under(uri: str, prefix: str) -> bool:
    # "s3://bucket/cv" allows s3://bucket/cv and s3://bucket/cv/..., not s3://bucket/cv-other
    prefix = prefix.rstrip("/")
    return bool(prefix) and (uri == prefix or uri.startswith(prefix + "/"))
