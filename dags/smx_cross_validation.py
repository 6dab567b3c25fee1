"""K-fold cross-validated training on SageMaker: trigger it with the form or a JSON conf.

Manual by default. Without editing this file: ``[smx] schedule`` (e.g. ``@weekly``) runs it on
a schedule, and ``[smx] request_file`` gives those runs their request and adds
``smx_cross_validation_on_data``, which retrains whenever the Asset of the request's input URI
is updated. Both publish the Asset ``smx_cross_validation_result``.
"""

from airflow_smx import settings
from airflow_smx.compat import asset
from airflow_smx.core.request import parse_request
from airflow_smx.dag.graph import cross_validation_dag

stored = settings.stored_request()

dag = cross_validation_dag("smx_cross_validation", schedule=settings.get("schedule") or None, request=stored)

if stored is not None:
    on_data = cross_validation_dag(
        "smx_cross_validation_on_data",
        schedule=[asset(parse_request(stored).input.uri)],
        request=stored,
    )
