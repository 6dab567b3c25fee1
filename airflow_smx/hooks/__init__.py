"""Talking to AWS through Airflow connections, as the amazon provider's ``hooks/`` does:
``sagemaker`` (a ``SageMakerHook`` that also describes-or-None, reads a job's owner, stops a job
and keeps the Experiments trial) and ``s3fs_options`` (fsspec options from a connection).
May import Airflow, the amazon provider, boto3 and ``airflow_smx.core``."""
