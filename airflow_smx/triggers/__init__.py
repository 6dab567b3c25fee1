"""Triggers the fold operators defer to (``sagemaker_fold``). May import Airflow, the amazon
provider and ``hooks``."""
