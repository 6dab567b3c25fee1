"""Provider metadata for Airflow's ``apache_airflow_provider`` entry point. No Airflow import."""

from __future__ import annotations

from typing import Any

from airflow_smx import __version__
from airflow_smx.settings import provider_config


def get_provider_info() -> dict[str, Any]:
    # "package-name" must equal the distribution name, or Airflow refuses to load the provider.
    return {
        "package-name": "airflow-smx",
        "name": "SageMaker cross-validation (airflow-smx)",
        "description": "K-fold cross-validated training on Amazon SageMaker or local processes: "
        "streaming fold splits equal to scikit-learn's, one training job per fold, aggregated scores.",
        "versions": [__version__],
        "config": provider_config(),
        "cli": ["airflow_smx.cli.provider.get_cli_commands"],
        "extra-links": [
            "airflow_smx.links.sagemaker.SageMakerTrainingJobLink",
            "airflow_smx.links.sagemaker.SageMakerTrainingLogsLink",
            "airflow_smx.links.sagemaker.CrossValidationReportLink",
        ],
    }
