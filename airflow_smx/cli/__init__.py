"""Command lines: ``airflow-smx`` (``main``: check a request, split a dataset, print the schema;
no Airflow import) and the provider's ``airflow smx ...`` commands (``provider``, ``pool``;
these run inside Airflow's CLI and may import it)."""
