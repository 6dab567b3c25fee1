"""The cross-validation request: one typed model, its validation and its JSON schema.

Plain Python (pydantic, no Airflow): the CLI, the DAG's Params and the fold engine all read
the same model, so a conf is judged the same way everywhere. SMX-Validator's input JSON is
translated into this model (:func:`parse_request` detects it), and problems in a translated
conf are reported with SMX-Validator's own field paths.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from airflow_smx.core import smx_validator
from airflow_smx.core.attempts import ATTEMPT_TAG, FOLDS_TAG
from airflow_smx.core.naming import VALID_NAME

Strategy = Literal["kfold", "stratified", "group", "stratified_group"]
Backend = Literal["local", "sagemaker"]
URI_SCHEMES = ("s3://", "file://")
MAX_FOLDS = 1024  # Airflow's default [core] max_map_length: one mapped task per fold
# set on every job by airflow-smx; the run tag decides which run owns a job (re-attach, teardown)
RESERVED_TAGS = ("fold_name", "crossvalidator_job_name", "created_by", "airflow_run_id", ATTEMPT_TAG, FOLDS_TAG)
MAX_USER_TAGS = 50 - len(RESERVED_TAGS)
JSON_EXTENSIONS = (".jsonl", ".json", ".ndjson", ".manifest")
CSV_EXTENSIONS = (".csv", ".txt")
# numbers the deployment's bounds and the operator's timeout are computed from: (section, key, least)
WHOLE_NUMBERS = (
    ("StoppingCondition", "MaxRuntimeInSeconds", 1),
    ("StoppingCondition", "MaxWaitTimeInSeconds", 1),
    ("ResourceConfig", "VolumeSizeInGB", 1),
    ("ResourceConfig", "KeepAlivePeriodInSeconds", 0),
)
MANAGED_TRAINING_FIELDS = ("TrainingJobName", "InputDataConfig", "ExperimentConfig", "Tags")


class RequestError(ValueError):
    """A request that cannot run; ``problems`` holds one ``path: message`` line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid cross-validation request:\n" + "\n".join(f"  - {p}" for p in problems))


def _problem(loc: tuple[str | int, ...], message: str, value: Any) -> InitErrorDetails:
    # Curly braces in a message would be read as format fields by pydantic-core.
    return InitErrorDetails(
        type=PydanticCustomError("smx_request", message.replace("{", "{{").replace("}", "}}")),
        loc=loc,
        input=value,
    )


def _raise_if(title: str, problems: list[InitErrorDetails]) -> None:
    if problems:
        raise ValidationError.from_exception_data(title, problems)


def _check_uri(value: str) -> str:
    if not value.startswith(URI_SCHEMES):
        raise ValueError(f"must start with one of {', '.join(URI_SCHEMES)}")
    rest = value.split("://", 1)[1]
    if value.startswith("s3://") and "/" not in rest.strip("/"):
        raise ValueError("must name a bucket and a key, like s3://bucket/path")
    if not rest.strip("/"):
        raise ValueError("must name a path after the scheme")
    return value


def format_from_name(uri: str) -> Literal["csv", "jsonl"] | None:
    """The record format a file name announces (ignoring .gz), if it announces one."""
    name = uri.lower().removesuffix(".gz")
    if name.endswith(JSON_EXTENSIONS):
        return "jsonl"
    if name.endswith(CSV_EXTENSIONS):
        return "csv"
    return None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class InputSpec(_Model):
    """Where the dataset is and how to read its records."""

    uri: str = Field(
        title="Input dataset URI",
        description="s3:// or file:// URI of one newline-delimited file: CSV, JSON Lines or a "
        "SageMaker augmented manifest, optionally gzip-compressed; or a prefix ending in / whose files "
        "(Spark, Glue, Athena or Firehose output; each gzip or not) are read in key order as one. "
        "One line is one record.",
        examples=["s3://my-bucket/datasets/train.jsonl"],
    )
    format: Literal["auto", "csv", "jsonl"] = Field(
        "auto",
        title="Record format",
        description="csv, jsonl (JSON Lines and augmented manifests), or auto: from the file "
        "extension, else from the first record.",
    )
    label: str | int | None = Field(
        None,
        title="Label field",
        description="The class label, needed for stratified strategies and ${num_classes}. JSON "
        "Lines: a key, dotted for nested objects (`metadata.class`). CSV: a header name (with "
        "csv_header) or a 0-based column index.",
    )
    group: str | int | None = Field(
        None,
        title="Group field",
        description="Records sharing this value never straddle folds (group strategies): a key "
        "or dotted path for JSON Lines, a header name or 0-based column index for CSV.",
    )
    csv_header: bool = Field(
        False,
        title="CSV has a header line",
        description="The first line names the columns (of every file, for a prefix of part files); the "
        "folds' parts hold records only, and the header is written once beside them.",
    )
    compression: Literal["auto", "gzip", "none"] = Field(
        "auto",
        title="Compression",
        description="auto detects gzip from the file's first bytes.",
    )

    _check_uri = field_validator("uri")(classmethod(lambda cls, v: _check_uri(v)))

    @field_validator("label", "group")
    @classmethod
    def _check_field_name(cls, value: str | int | None) -> str | int | None:
        if isinstance(value, int) and value < 0:
            raise ValueError("a column index must be >= 0")
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _check_fields_fit_format(self) -> InputSpec:
        if self.format == "auto":
            self.format = format_from_name(self.uri) or "auto"
        problems = []
        for field in ("label", "group"):
            value = getattr(self, field)
            if self.format == "jsonl" and isinstance(value, int):
                problems.append(_problem((field,), "JSON Lines records are read by key, not by column index", value))
            if self.format == "csv" and isinstance(value, str) and not value.isdigit() and not self.csv_header:
                problems.append(
                    _problem((field,), "a CSV column name needs csv_header: true; or give a 0-based index", value)
                )
        _raise_if("InputSpec", problems)
        return self


class CVSpec(_Model):
    """How records are assigned to folds (scikit-learn's splitters, see docs/folds.md)."""

    strategy: Strategy = Field(
        "kfold",
        title="Fold strategy",
        description="kfold (KFold), stratified (StratifiedKFold, needs a label), group (GroupKFold, "
        "needs a group), stratified_group (StratifiedGroupKFold, needs both).",
    )
    n_splits: int = Field(5, ge=2, le=100, title="Number of folds (k)", description="One training job per fold.")
    n_repeats: int = Field(
        1,
        ge=1,
        le=20,
        title="Repeats",
        description="Repeat k-fold with different shuffles (kfold and stratified only): k x repeats jobs.",
    )
    shuffle: bool = Field(
        True, title="Shuffle", description="Shuffle before splitting; off keeps folds as contiguous file slices."
    )
    random_state: int = Field(
        42, ge=0, le=2**32 - 1, title="Random seed", description="Same seed, same input: same folds, byte for byte."
    )
    holdout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        title="Hold-out fraction",
        description="Fraction of records carved off first as a test set no fold trains or validates "
        "on (stratified by label when one is given, by group for group strategies). 0 = none.",
    )
    allow_small_classes: bool = Field(
        False,
        title="Allow classes smaller than k",
        description="Stratified strategies refuse a class with fewer records than folds, since some "
        "fold's train set would lack it; set true to split anyway.",
    )

    @model_validator(mode="after")
    def _check_combination(self) -> CVSpec:
        problems = []
        if self.n_repeats > 1 and self.strategy not in ("kfold", "stratified"):
            problems.append(
                _problem(("n_repeats",), f"repeats apply to kfold and stratified, not {self.strategy}", self.n_repeats)
            )
        if self.n_repeats > 1 and not self.shuffle:
            problems.append(
                _problem(("n_repeats",), "repeats need shuffle: true (each repeat reshuffles)", self.n_repeats)
            )
        if self.n_splits * self.n_repeats > MAX_FOLDS:
            problems.append(
                _problem(("n_splits",), f"n_splits x n_repeats must be <= {MAX_FOLDS}", self.n_splits * self.n_repeats)
            )
        _raise_if("CVSpec", problems)
        return self

    @property
    def n_folds(self) -> int:
        """Total training jobs: ``n_splits`` x ``n_repeats``."""
        return self.n_splits * self.n_repeats


class ChannelSpec(_Model):
    """One SageMaker input channel; the S3 URIs are filled in per fold."""

    ChannelName: str = Field(pattern=r"^[A-Za-z0-9\.\-_]{1,64}$", title="Channel name")
    S3DataType: Literal["S3Prefix", "ManifestFile", "AugmentedManifestFile"] = Field(
        "S3Prefix",
        title="S3 data type",
        description="Train: ManifestFile lists the other folds' parts (nothing copied); S3Prefix or "
        "AugmentedManifestFile get one assembled train file per fold.",
    )
    ContentType: str | None = Field(None, title="Content type", examples=["text/csv"])
    InputMode: Literal["File", "Pipe", "FastFile"] | None = Field(
        None, title="Input mode", description="Defaults to AlgorithmSpecification.TrainingInputMode."
    )
    AttributeNames: list[str] | None = Field(
        None, title="Attribute names", description="Augmented manifest keys to stream, in order."
    )
    RecordWrapperType: Literal["None", "RecordIO"] | None = Field(None, title="Record wrapper")
    CompressionType: Literal["None", "Gzip"] | None = Field(None, title="Compression of the channel data")
    S3DataDistributionType: Literal["FullyReplicated", "ShardedByS3Key"] = Field(
        "FullyReplicated", title="Distribution across instances"
    )

    @field_validator("ChannelName")
    @classmethod
    def _not_a_relative_folder(cls, name: str) -> str:
        if set(name) == {"."}:  # the local backend makes input/data/<ChannelName>
            raise ValueError("must not be only dots")
        return name

    @model_validator(mode="after")
    def _check_augmented(self) -> ChannelSpec:
        problems = []
        if self.AttributeNames and self.S3DataType != "AugmentedManifestFile":
            problems.append(
                _problem(("AttributeNames",), "only applies to S3DataType AugmentedManifestFile", self.AttributeNames)
            )
        if self.S3DataType == "AugmentedManifestFile" and self.InputMode in ("File", "FastFile"):
            problems.append(_problem(("InputMode",), "AugmentedManifestFile channels need Pipe mode", self.InputMode))
        _raise_if("ChannelSpec", problems)
        return self

    @property
    def needs_single_object(self) -> bool:
        """Whether the channel must point at one object (an assembled file), not a manifest."""
        return self.S3DataType != "ManifestFile"


class ChannelsSpec(_Model):
    """The train and validation channels of every fold's training job."""

    train: ChannelSpec = Field(
        default_factory=lambda: ChannelSpec(ChannelName="train", S3DataType="ManifestFile"),
        title="Train channel",
    )
    validation: ChannelSpec = Field(
        default_factory=lambda: ChannelSpec(ChannelName="validation"), title="Validation channel"
    )

    @model_validator(mode="after")
    def _check(self) -> ChannelsSpec:
        problems = []
        if self.validation.S3DataType == "ManifestFile":
            problems.append(
                _problem(
                    ("validation", "S3DataType"),
                    "a fold's validation records are one object: use S3Prefix or AugmentedManifestFile",
                    "ManifestFile",
                )
            )
        if self.train.ChannelName == self.validation.ChannelName:
            problems.append(
                _problem(
                    ("validation", "ChannelName"), "must differ from the train channel's name", self.train.ChannelName
                )
            )
        _raise_if("ChannelsSpec", problems)
        return self


class TrainingSpec(_Model):
    """CreateTrainingJob fields, passed to SageMaker untouched (but for placeholders)."""

    AlgorithmSpecification: dict[str, Any] | None = Field(
        None, title="AlgorithmSpecification", description="TrainingImage or AlgorithmName, TrainingInputMode, ..."
    )
    HyperParameters: dict[str, str] = Field(
        default_factory=dict,
        title="HyperParameters",
        description="String values; ${num_training_samples}, ${num_validation_samples}, "
        "${num_classes} and ${fold} are replaced per fold. Numbers and booleans are turned into strings.",
    )
    RoleArn: str | None = Field(None, title="Execution role ARN", description="Defaults to the deployment's role.")
    ResourceConfig: dict[str, Any] | None = Field(None, title="ResourceConfig")
    StoppingCondition: dict[str, Any] | None = Field(None, title="StoppingCondition")
    OutputDataConfig: dict[str, Any] | None = Field(
        None, title="OutputDataConfig", description="Defaults to {output_uri}/{cv_run_id}/models/."
    )
    VpcConfig: dict[str, Any] | None = None
    EnableManagedSpotTraining: bool | None = None
    EnableNetworkIsolation: bool | None = None
    EnableInterContainerTrafficEncryption: bool | None = None
    CheckpointConfig: dict[str, Any] | None = None
    DebugHookConfig: dict[str, Any] | None = None
    DebugRuleConfigurations: list[dict[str, Any]] | None = None
    TensorBoardOutputConfig: dict[str, Any] | None = None
    ProfilerConfig: dict[str, Any] | None = None
    ProfilerRuleConfigurations: list[dict[str, Any]] | None = None
    Environment: dict[str, str] | None = None
    RetryStrategy: dict[str, Any] | None = None
    RemoteDebugConfig: dict[str, Any] | None = None
    InfraCheckConfig: dict[str, Any] | None = None
    SessionChainingConfig: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _refuse_managed_fields(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            managed = [f for f in MANAGED_TRAINING_FIELDS if f in data]
            _raise_if(
                "TrainingSpec",
                [_problem((f,), "is set per fold by airflow-smx; remove it", data[f]) for f in managed],
            )
        return data

    @field_validator("HyperParameters", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        return {k: _hyperparameter_text(v) for k, v in value.items()}

    @model_validator(mode="after")
    def _check_resources(self) -> TrainingSpec:
        problems = []
        for section, key, least in WHOLE_NUMBERS:
            value = (getattr(self, section) or {}).get(key)
            if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= least):
                problems.append(_problem((section, key), f"must be a whole number >= {least}", value))
        count = (self.ResourceConfig or {}).get("InstanceCount", 1)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            problems.append(_problem(("ResourceConfig", "InstanceCount"), "must be an integer >= 1", count))
        if len(self.HyperParameters) > 100:
            problems.append(_problem(("HyperParameters",), "SageMaker allows at most 100", len(self.HyperParameters)))
        _raise_if("TrainingSpec", problems)
        return self

    @property
    def instance_count(self) -> int:
        """ml instances one fold's job holds: the pool slots it takes."""
        return int((self.ResourceConfig or {}).get("InstanceCount", 1))

    @property
    def input_mode(self) -> str:
        return (self.AlgorithmSpecification or {}).get("TrainingInputMode", "File")


def _hyperparameter_text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


class Tag(_Model):
    Key: str = Field(min_length=1, max_length=128)
    Value: str = Field("", max_length=256)

    @field_validator("Key")
    @classmethod
    def _not_reserved(cls, key: str) -> str:
        if key.lower().startswith("aws:"):
            raise ValueError("keys starting with aws: are reserved by AWS")
        if key in RESERVED_TAGS:
            raise ValueError(f"{key} is set on every job by airflow-smx")
        return key


class ExperimentSpec(_Model):
    """SageMaker Experiments tracking, as SMX-Validator does it (SageMaker backend)."""

    enabled: bool = Field(
        True, title="Track in SageMaker Experiments", description="Create the experiment and the run's trial."
    )
    name: str | None = Field(
        None, title="Experiment name", description="Created if missing. Default: crossvalidator-{name}."
    )


class MetricsSpec(_Model):
    """Which final metric ranks the model, and which way is better."""

    objective: str | None = Field(
        None,
        title="Objective metric",
        description="A FinalMetricDataList name, e.g. validation:accuracy; reported first in the summary.",
    )
    direction: Literal["maximize", "minimize"] = Field(
        "maximize", title="Better is", description="maximize (accuracy, AUC) or minimize (loss, error)."
    )


class RegistrySpec(_Model):
    """How the refit model is registered: a new version in the SageMaker Model Package Group
    ``crossvalidator-{name}`` (the local backend: a version record under output_uri). Its approval
    status is the deployment's ([smx] model_approval_status), never the request's."""

    enabled: bool = Field(True, title="Register the final model", description="false: refit, register nothing.")
    inference_image: str | None = Field(
        None,
        title="Inference image",
        description="The image that serves the model (ECR URI). Default: the training image.",
        max_length=255,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$",
    )
    content_types: list[str] = Field(
        ["text/csv"], min_length=1, title="Request content types", description="What the model accepts."
    )
    response_types: list[str] = Field(
        ["text/csv"], min_length=1, title="Response MIME types", description="What the model answers with."
    )


class GateSpec(_Model):
    """Whether a run's model may replace the last one: thresholds on the objective, and a
    comparison with a baseline run (README, "The gate")."""

    threshold: float | None = Field(
        None,
        title="Objective threshold",
        description="The objective's mean must reach it: at least this when maximizing, at most when minimizing.",
    )
    bound_threshold: float | None = Field(
        None,
        title="Interval threshold",
        description="The corrected 95% interval's pessimistic end (lower when maximizing, upper when "
        "minimizing) must reach it.",
    )
    baseline: str | None = Field(
        "latest",
        title="Baseline",
        description='"latest": the last run of this name that succeeded and passed its gate (a first run has '
        "none); or the cv_run_id of an earlier run under the same output_uri; null: no comparison.",
    )
    margin: float = Field(
        0.0, ge=0, title="Margin", description="How much worse than the baseline's mean a run may be, in metric units."
    )
    alpha: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        title="Significance",
        description="A run is stopped when it is worse than the baseline by more than the margin at this "
        "one-sided level (the fold scores' spread could explain a smaller gap).",
    )
    on_fail: Literal["fail", "succeed"] = Field(
        "fail",
        title="When the gate stops a run",
        description="fail: the run fails (red in the UI); succeed: it succeeds, marked not promoted, and the "
        "baseline stays.",
    )

    @field_validator("baseline")
    @classmethod
    def _baseline_is_a_run(cls, value: str | None) -> str | None:
        if value not in (None, "latest") and not VALID_NAME.match(value):
            raise ValueError('must be "latest", null or a cv_run_id (letters, digits and hyphens)')
        return value


class LocalSpec(_Model):
    """Which of the deployment's commands the local backend runs (under SageMaker's container contract)."""

    command: str | None = Field(
        None,
        title="Training command",
        description="The name of a command the deployment lists in [smx] local_commands (it runs once per fold "
        "in a folder laid out like /opt/ml: SAGEMAKER_BASE_DIR, SM_CHANNEL_*, SM_MODEL_DIR, SM_HPS, ...). "
        "Optional when the deployment lists one.",
    )

    @field_validator("command", mode="before")
    @classmethod
    def _a_name_not_a_command_line(cls, value: Any) -> Any:
        if isinstance(value, list):
            raise ValueError(
                "must be the name of a command the deployment lists in [smx] local_commands, not a command line"
            )
        return value


class CVRequest(_Model):
    """A k-fold cross-validated training request."""

    name: str = Field(
        min_length=1,
        max_length=200,
        title="Name",
        description="Names the run and its training jobs: crossvalidator-{name}-{YYYYMMDD}-{HHMMSS}-fold{i}.",
        examples=["churn-xgboost"],
    )
    input: InputSpec = Field(title="Input dataset")
    output_uri: str = Field(
        title="Output URI",
        description="s3:// or file:// prefix; each run writes under {output_uri}/{cv_run_id}/.",
    )
    cv: CVSpec = Field(default_factory=CVSpec, title="Cross-validation", description="Strategy, folds, seed, hold-out.")
    backend: Backend = Field(
        "sagemaker",
        title="Backend",
        description="sagemaker: SageMaker training jobs; local: local processes, where the deployment enables "
        "them. Default: local where enabled, else sagemaker.",
    )
    training: TrainingSpec = Field(
        default_factory=TrainingSpec,
        title="Training job template",
        description="CreateTrainingJob fields (AlgorithmSpecification, ResourceConfig, StoppingCondition, "
        "HyperParameters, RoleArn, ...). TrainingJobName, InputDataConfig, ExperimentConfig and Tags are set per fold.",
    )
    channels: ChannelsSpec = Field(
        default_factory=ChannelsSpec,
        title="Channels",
        description="The train and validation channels: ChannelName, S3DataType, ContentType, InputMode, "
        "AttributeNames, RecordWrapperType. Their S3 URIs are filled in per fold.",
    )
    local: LocalSpec = Field(
        default_factory=LocalSpec,
        title="Local backend",
        description="The local backend's training command: the name of one the deployment lists.",
    )
    experiment: ExperimentSpec = Field(
        default_factory=ExperimentSpec,
        title="Experiment",
        description="SageMaker Experiments: one trial per CV run, one trial component per fold.",
    )
    tags: list[Tag] = Field(
        default_factory=list,
        max_length=MAX_USER_TAGS,
        title="Tags",
        description="Added to every training job, besides fold_name, crossvalidator_job_name, created_by and airflow_run_id.",
    )
    metrics: MetricsSpec = Field(
        default_factory=MetricsSpec, title="Metrics", description="The objective metric and which way is better."
    )
    min_successful_folds: int | None = Field(
        None, ge=1, title="Folds that must succeed", description="Default: all of them."
    )
    gate: GateSpec | None = Field(
        None,
        title="Gate",
        description='Whether the model may replace the last one, e.g. {"baseline": "latest", "margin": 0.01, '
        '"threshold": 0.8}: thresholds on the objective, and a corrected t-test against a baseline run. '
        "Needs metrics.objective. Default: none (every successful run is promoted).",
    )
    refit: bool = Field(
        True,
        title="Refit a final model",
        description="After a successful run that passes its gate: one more training job "
        "(crossvalidator-{name}-{stamp}-final) on every record but the hold-out, which is its validation "
        "channel; then the model is registered. SMX-Validator input: off.",
    )
    registry: RegistrySpec = Field(
        default_factory=RegistrySpec,
        title="Model registry",
        description="Where the refit model goes: a new version of the Model Package Group crossvalidator-{name}.",
    )
    split_on: Literal["auto", "worker", "sagemaker"] = Field(
        "auto",
        title="Split on",
        description="Where the folds are split: auto (a SageMaker Processing job for inputs of at least the "
        "deployment's offload_bytes, else the Airflow worker), worker, or sagemaker (a Processing job, where "
        "the deployment has set one up). The folds are the same either way.",
    )
    dry_run: bool = Field(
        False,
        title="Dry run",
        description="Check the request and scan the data, then stop: report the records, classes, each "
        "fold's sizes and training job name, and the worst-case instance-hours. No fold is written, no "
        "job starts; only the report (results/dry_run.json) is written.",
    )

    @field_validator("name")
    @classmethod
    def _name_has_alnum(cls, name: str) -> str:
        if not re.search(r"[A-Za-z0-9]", name):
            raise ValueError("needs at least one letter or digit to make a valid training job name")
        return name

    _check_output = field_validator("output_uri")(classmethod(lambda cls, v: _check_uri(v)))

    @field_validator("tags", mode="before")
    @classmethod
    def _tags_from_mapping(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return [{"Key": k, "Value": v} for k, v in value.items()]
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> CVRequest:
        _raise_if("CVRequest", list(self._consistency_problems()))
        return self

    def _consistency_problems(self) -> Iterable[InitErrorDetails]:
        strategy = self.cv.strategy
        if strategy in ("stratified", "stratified_group") and self.input.label is None:
            yield _problem(("input", "label"), f"strategy {strategy} needs a label field", None)
        if strategy in ("group", "stratified_group") and self.input.group is None:
            yield _problem(("input", "group"), f"strategy {strategy} needs a group field", None)
        output, source = self.output_uri.rstrip("/"), self.input.uri.rstrip("/")
        if output == source or output.startswith(source + "/"):
            yield _problem(("output_uri",), "must not be the input or inside it", self.output_uri)
        if self.min_successful_folds is not None and self.min_successful_folds > self.cv.n_folds:
            yield _problem(
                ("min_successful_folds",),
                f"must be <= the number of folds ({self.cv.n_folds})",
                self.min_successful_folds,
            )
        if self.gate is not None and self.metrics.objective is None:
            yield _problem(("metrics", "objective"), "the gate judges the objective metric: name one", None)
        keys = [t.Key for t in self.tags]
        for key in sorted({k for k in keys if keys.count(k) > 1}):
            yield _problem(("tags",), f"duplicate key {key!r}", key)
        if self.backend == "sagemaker":
            yield from self._sagemaker_problems()

    def _sagemaker_problems(self) -> Iterable[InitErrorDetails]:
        algorithm = self.training.AlgorithmSpecification or {}
        if not (algorithm.get("TrainingImage") or algorithm.get("AlgorithmName")):
            yield _problem(
                ("training", "AlgorithmSpecification"),
                "the sagemaker backend needs TrainingImage or AlgorithmName",
                algorithm,
            )
        resources = self.training.ResourceConfig or {}
        if not resources.get("InstanceType"):
            yield _problem(("training", "ResourceConfig", "InstanceType"), "the sagemaker backend needs it", None)
        for role in ("train", "validation"):
            channel: ChannelSpec = getattr(self.channels, role)
            if (
                channel.S3DataType == "AugmentedManifestFile"
                and (channel.InputMode or self.training.input_mode) != "Pipe"
            ):
                yield _problem(("channels", role, "InputMode"), "AugmentedManifestFile channels need Pipe mode", None)

    @property
    def required_folds(self) -> int:
        """How many folds must succeed for the run to succeed."""
        return self.min_successful_folds or self.cv.n_folds

    @property
    def experiment_name(self) -> str:
        return self.experiment.name or f"crossvalidator-{self.name}"


def request_json_schema() -> dict[str, Any]:
    """The request's JSON schema: the single source of the DAG's Params."""
    return CVRequest.model_json_schema()


def parse_request(data: Any, default_backend: Backend = "sagemaker") -> CVRequest:
    """Validate a conf (ours or SMX-Validator's) into a :class:`CVRequest`.

    :param default_backend: the backend of a request that names none (the deployment's)
    :raises RequestError: listing every problem found, each with its field path in the conf's own terms.
    """
    if not isinstance(data, Mapping):
        raise RequestError([f"(request): must be a JSON object, got {type(data).__name__}"])
    paths: dict[str, str] | None = None
    problems: list[str] = []
    if smx_validator.is_smx_validator_input(data):
        data, paths, problems = smx_validator.translate(data)
    elif "backend" not in data:
        data = {**data, "backend": default_backend}
    try:
        request = CVRequest.model_validate(data)
    except ValidationError as error:
        problems = problems + format_problems(error, paths)
    if problems:
        raise RequestError(sorted(dict.fromkeys(problems)))
    return request


_MESSAGES = {
    "missing": "required",
    "extra_forbidden": "unknown field",
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "literal_error": "must be one of {expected}",
    "string_too_short": "must have at least {min_length} characters",
    "string_too_long": "must have at most {max_length} characters",
    "too_long": "must have at most {max_length} items",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_parsing": "must be a number",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "list_type": "must be a list",
    "string_pattern_mismatch": "must match {pattern}",
}


def in_user_terms(problems: Iterable[str], data: Mapping[str, Any]) -> list[str]:
    """``path: message`` lines about a request parsed from ``data``, in ``data``'s own field paths."""
    if not smx_validator.is_smx_validator_input(data):
        return list(problems)
    paths = smx_validator.translate(data).paths
    return [
        smx_validator.original_path(path, paths) + sep + rest
        for path, sep, rest in (p.partition(":") for p in problems)
    ]


def format_problems(error: ValidationError, paths: Mapping[str, str] | None = None) -> list[str]:
    """One ``path: message, got value`` line per pydantic error; in SMX-Validator's paths when ``paths``
    (from its translation) is given."""
    lines = []
    for item in error.errors(include_url=False):
        path = ".".join(str(p) for p in _clean_loc(item["loc"])) or "(request)"
        if paths is not None:  # SMX-Validator input: its own names
            path = smx_validator.original_path(path, paths)
        template = _MESSAGES.get(item["type"])
        message = template.format(**item.get("ctx", {})) if template else item["msg"].removeprefix("Value error, ")
        silent = item["type"] in ("missing", "extra_forbidden") or item["input"] is None
        got = "" if silent else f", got {_short(item['input'])}"
        lines.append(f"{path}: {message}{got}")
    return sorted(dict.fromkeys(lines))


def _clean_loc(loc: tuple[Any, ...]) -> list[Any]:
    # pydantic adds the union member tried ("str", "int", "function-after[...]") to locations.
    return [p for p in loc if not (isinstance(p, str) and (p in ("str", "int", "float", "bool") or "[" in p))]


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str) if isinstance(value, dict | list) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
