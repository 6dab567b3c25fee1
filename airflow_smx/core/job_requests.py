"""One CreateTrainingJob request per fold, from the CV request and the split's plan. No Airflow.

The request's ``training`` section is passed through untouched but for what changes per fold:
the job name, the two channels, the hyperparameter placeholders, tags and ExperimentConfig.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from airflow_smx.core import storage
from airflow_smx.core.attempts import FOLDS_TAG, folds_digest
from airflow_smx.core.folds.plan import Fold, FoldPlan
from airflow_smx.core.naming import FINAL, cv_run_id, fold_label, training_job_name, trial_name
from airflow_smx.core.request import ChannelSpec, CVRequest

SAGEMAKER_DEFAULT_RUNTIME = 86_400  # SageMaker's MaxRuntimeInSeconds when a request sets none
CREATED_BY = "airflow-smx"
RUN_TAG = "airflow_run_id"  # which Airflow run created a job: re-attach and clean-up check it


def substitute(hyperparameters: dict[str, str], values: dict[str, Any]) -> dict[str, str]:
    """Replace SMX-Validator's placeholders inside every value (plain text replacement, as it does)."""
    result = {}
    for key, text in hyperparameters.items():
        for placeholder, value in values.items():
            text = text.replace(placeholder, str(value))
        result[key] = text
    return result


def channel(spec: ChannelSpec, uri: str) -> dict[str, Any]:
    """One InputDataConfig entry pointing at ``uri``."""
    source = {
        "S3DataType": spec.S3DataType,
        "S3Uri": uri,
        "S3DataDistributionType": spec.S3DataDistributionType,
    }
    if spec.AttributeNames:
        source["AttributeNames"] = list(spec.AttributeNames)
    entry: dict[str, Any] = {"ChannelName": spec.ChannelName, "DataSource": {"S3DataSource": source}}
    for field in ("ContentType", "InputMode", "RecordWrapperType", "CompressionType"):
        value = getattr(spec, field)
        if value is not None:
            entry[field] = value
    return entry


def train_uri(spec: ChannelSpec, fold: Fold) -> str:
    """A ManifestFile channel reads the manifest; the others need the assembled train file."""
    if spec.S3DataType == "ManifestFile":
        return fold.train_manifest
    if fold.train_file is None:
        raise ValueError(f"fold {fold.index}: the {spec.S3DataType} train channel needs an assembled train file")
    return fold.train_file


def fold_training_config(
    request: CVRequest,
    plan: FoldPlan,
    fold: Fold,
    when: datetime,
    run_id: str,
    role_arn: str | None = None,
    key: str = "",
) -> dict[str, Any]:
    """The CreateTrainingJob request of ``fold``.

    :param when: the CV run's timestamp (the DAG run's, never the clock): names derive from it
    :param run_id: the Airflow DAG run id, tagged on the job so a name reused by another run is noticed
    :param role_arn: the deployment's execution role, for requests that do not name one
    :param key: what tells this DAG run from others (:func:`~airflow_smx.core.naming.run_key`)
    """
    config = copy.deepcopy(request.training.model_dump(exclude_none=True))
    config["TrainingJobName"] = training_job_name(request.name, when, fold.index, key)
    config["HyperParameters"] = substitute(
        config.get("HyperParameters", {}),
        {
            "${num_training_samples}": fold.n_train,
            "${num_validation_samples}": fold.n_validation,
            "${num_classes}": plan.n_classes,
            "${fold}": fold.index,
        },
    )
    if not config["HyperParameters"]:
        del config["HyperParameters"]
    if fold.index == FINAL:  # the run's last job: no fold follows to take its instances warm
        config.get("ResourceConfig", {}).pop("KeepAlivePeriodInSeconds", None)
    config["InputDataConfig"] = [channel(request.channels.train, train_uri(request.channels.train, fold))]
    if fold.validation:  # the refit without a hold-out has nothing to validate on
        config["InputDataConfig"].append(channel(request.channels.validation, fold.validation))
    models = storage.join(request.output_uri, cv_run_id(request.name, when, key), "models")
    config.setdefault("OutputDataConfig", {"S3OutputPath": models})
    # explicit, so an IAM condition on sagemaker:MaxRuntimeInSeconds can bound every job
    config.setdefault("StoppingCondition", {}).setdefault("MaxRuntimeInSeconds", SAGEMAKER_DEFAULT_RUNTIME)
    if role_arn and "RoleArn" not in config:
        config["RoleArn"] = role_arn
    tags = run_tags(request, when, fold.index, run_id, key)
    tags.append({"Key": FOLDS_TAG, "Value": folds_digest(plan.identity())})  # a clear re-uses only these folds' jobs
    config["Tags"] = [*(t.model_dump() for t in request.tags), *tags]
    if request.experiment.enabled:
        config["ExperimentConfig"] = {
            "ExperimentName": request.experiment_name,
            "TrialName": trial_name(request.name, when, key),
            "TrialComponentDisplayName": f"TrainingJob-{fold_label(fold.index)}",
        }
    return config


def run_tag_value(run_id: str) -> str:
    return run_id[:256]  # SageMaker's limit for a tag value


def run_tags(request: CVRequest, when: datetime, fold: int, run_id: str, key: str = "") -> list[dict[str, str]]:
    """SMX-Validator's tags (fold_name, crossvalidator_job_name, created_by) and the Airflow run id."""
    return [
        {"Key": "fold_name", "Value": fold_label(fold)},
        {"Key": "crossvalidator_job_name", "Value": trial_name(request.name, when, key)},
        {"Key": "created_by", "Value": CREATED_BY},
        {"Key": RUN_TAG, "Value": run_tag_value(run_id)},
    ]


@dataclass(frozen=True)
class FoldJob:
    """One fold's training job: the mapped task's keyword arguments, and all that the aggregation
    and the run's teardown need to find its outcome.

    :param fold: the fold's index
    :param config: its CreateTrainingJob request (``TrainingJobName`` included)
    :param command: the local backend's command, by the name the deployment lists it under
    """

    fold: int
    config: dict[str, Any]
    command: str | None = None

    @property
    def job_name(self) -> str:
        return self.config["TrainingJobName"]

    @property
    def backend(self) -> str:
        return "local" if self.command else "sagemaker"

    @property
    def pool_slots(self) -> int:
        """ml instances its job holds (a local fold's process counts as one)."""
        return 1 if self.command else int(self.config.get("ResourceConfig", {}).get("InstanceCount", 1))

    def kwargs(self) -> dict[str, Any]:
        """What the fold's operator is mapped with (``expand_kwargs``): JSON, no more."""
        return {k: v for k, v in asdict(self).items() if v is not None}
