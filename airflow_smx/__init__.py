"""airflow-smx: k-fold cross-validated training on Amazon SageMaker, orchestrated by Airflow."""

__version__ = "0.1.0"
