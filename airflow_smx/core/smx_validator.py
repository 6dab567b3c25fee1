"""SMX-Validator's input JSON, translated into airflow-smx's request.

SMX-Validator (github.com/mrtj/smx-validator) takes ``job_config``, ``crossvalidation`` and
``training``. Its code reads ``HyperParameters_template`` and PascalCase API sections while its
README documents snake_case spellings; both are accepted here. What it hard-codes becomes
explicit request fields: SageMaker backend, managed spot training, plain shuffled k-fold, and
augmented-manifest channels (``source-ref``, ``class``; RecordIO; Pipe mode).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

SECTIONS = ("job_config", "crossvalidation", "training")

# our field path <- SMX-Validator's, for each key SMX-Validator accepts
_JOB_CONFIG = {
    "name": "name",
    "input_path": "input.uri",
    "output_prefix": "output_uri",
    "experiment": "experiment.name",
    "tags": "tags",
}
_CROSSVALIDATION = {"n_splits": "cv.n_splits", "random_state": "cv.random_state"}
_TRAINING = {
    "HyperParameters_template": "training.HyperParameters",
    "hyperparameters_template": "training.HyperParameters",
    "hyperparameter_template": "training.HyperParameters",
    "AlgorithmSpecification": "training.AlgorithmSpecification",
    "algorithm_specification": "training.AlgorithmSpecification",
    "StoppingCondition": "training.StoppingCondition",
    "stopping_condition": "training.StoppingCondition",
    "ResourceConfig": "training.ResourceConfig",
    "resource_config": "training.ResourceConfig",
}
_MAPPINGS = {"job_config": _JOB_CONFIG, "crossvalidation": _CROSSVALIDATION, "training": _TRAINING}
# our field path -> the SMX-Validator spelling its code reads: names a field the input left out
_CANONICAL = {
    target: f"{section}.{key}" for section, mapping in _MAPPINGS.items() for key, target in reversed(mapping.items())
}

# SMX-Validator's fixed channels (statemachine/smx-validator.asl.yaml): image classification
# from an augmented manifest, streamed as RecordIO in Pipe mode.
_AUGMENTED_CHANNEL = {
    "S3DataType": "AugmentedManifestFile",
    "AttributeNames": ["source-ref", "class"],
    "ContentType": "application/x-recordio; label-format=class-id",
    "InputMode": "Pipe",
    "RecordWrapperType": "RecordIO",
}


class Translation(NamedTuple):
    """Our request dict, the path map back to SMX-Validator's names, and problems found on the way."""

    data: dict[str, Any]
    paths: dict[str, str]
    problems: list[str]


def is_smx_validator_input(data: Mapping[str, Any]) -> bool:
    """SMX-Validator input has its three sections at the top and none of ours."""
    return any(s in data for s in SECTIONS) and not any(k in data for k in ("input", "output_uri", "cv"))


def translate(data: Mapping[str, Any]) -> Translation:
    """Translate SMX-Validator input into an airflow-smx request dict (not yet validated)."""
    ours: dict[str, Any] = {
        "backend": "sagemaker",
        "cv": {"strategy": "kfold", "shuffle": True},
        "input": {"format": "jsonl"},
        "training": {"EnableManagedSpotTraining": True},
        "refit": False,  # SMX-Validator trained the folds only; its users get what it did
        "channels": {
            "train": {"ChannelName": "train", **_AUGMENTED_CHANNEL},
            "validation": {"ChannelName": "validation", **_AUGMENTED_CHANNEL},
        },
    }
    paths: dict[str, str] = {}
    problems: list[str] = []
    for key, value in data.items():
        if key not in SECTIONS:
            problems.append(f"{key}: unknown field (SMX-Validator input has {', '.join(SECTIONS)})")
        elif not isinstance(value, Mapping):
            problems.append(f"{key}: must be an object, got {type(value).__name__}")
        else:
            _copy_section(key, value, ours, paths, problems)
    problems += [f"{s}: required" for s in SECTIONS if s not in data]
    hyperparameters = ours["training"].get("HyperParameters")
    if isinstance(hyperparameters, Mapping) and any("${num_classes}" in str(v) for v in hyperparameters.values()):
        # SMX-Validator counts the distinct "class" values of the whole file for ${num_classes}.
        ours["input"]["label"] = "class"
    return Translation(ours, paths, problems)


def _copy_section(
    section: str, values: Mapping[str, Any], ours: dict[str, Any], paths: dict[str, str], problems: list[str]
) -> None:
    mapping = _MAPPINGS[section]
    for key, value in values.items():
        target = mapping.get(key)
        if target is None:
            problems.append(f"{section}.{key}: unknown field")
            continue
        if target in paths:
            problems.append(f"{section}.{key}: given twice (also as {paths[target]})")
            continue
        paths[target] = f"{section}.{key}"
        _set(ours, target.split("."), value)


def _set(tree: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def original_path(path: str, paths: Mapping[str, str]) -> str:
    """Rename an airflow-smx field path into the SMX-Validator path it was translated from (or, for a
    field the input left out, the one SMX-Validator reads it from)."""
    names = {**_CANONICAL, **paths}
    for ours in sorted(names, key=len, reverse=True):
        if path == ours or path.startswith(ours + "."):
            return names[ours] + path[len(ours) :]
    return path
