"""The trigger form's fields, generated from the request's JSON schema, and back. No Airflow.

Airflow's trigger form renders one field per top-level Param and shows an ``object`` Param as a
raw JSON editor, so what a user changes from run to run is flattened to the top level
(``cv.n_splits`` becomes ``cv_n_splits``), grouped in sections, and the CreateTrainingJob
template, channels, experiment and tags stay objects in the last section, "Job template" (a name
that cannot be mistaken for the "Advanced Options" Airflow adds below the form).
Whatever the form's shape, the request model is the one validator.
"""

from __future__ import annotations

import difflib
from typing import Any

from airflow_smx.core.policy import Policy
from airflow_smx.core.request import CVRequest, request_json_schema

SECTIONS: dict[str, list[str]] = {
    "Run": ["name", "backend", "split_on", "dry_run"],
    "Data": [
        "input.uri",
        "input.format",
        "input.label",
        "input.group",
        "input.csv_header",
        "input.compression",
        "output_uri",
    ],
    "Folds": [
        "cv.strategy",
        "cv.n_splits",
        "cv.n_repeats",
        "cv.shuffle",
        "cv.random_state",
        "cv.holdout",
        "cv.allow_small_classes",
    ],
    "Scores": ["metrics.objective", "metrics.direction", "min_successful_folds", "gate"],
    "Final model": ["refit", "registry"],
    "Job template": ["training", "local", "channels", "experiment", "tags"],
}
# SageMaker's built-in XGBoost (us-east-1): a real image for the form's starting template.
XGBOOST_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
_KEYWORDS = ("enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength")


def field_name(path: str) -> str:
    return path.replace(".", "_")


def form_fields(defaults: CVRequest | None = None, policy: Policy | None = None) -> dict[str, dict[str, Any]]:
    """Param keyword arguments per form field: default, type, title, description, section.

    :param defaults: a request whose values the form starts from (else a request that fits ``policy``)
    :param policy: the deployment's bounds: its backends, prefixes, instance types and limits
    """
    policy = policy or Policy()
    schema = request_json_schema()
    placeholders = starting_values(policy)
    values = form_values(defaults) if defaults is not None else {}
    fields = {}
    for section, paths in SECTIONS.items():
        for path in paths:
            prop = _property(schema, path)
            if values:
                default = values[field_name(path)]
            else:
                default = placeholders[path] if path in placeholders else _default(path, prop)
            field = {
                "default": default,
                "title": prop.get("title", path),
                "description": prop.get("description", ""),
                "section": section,
                **_types(prop, schema),
            }
            fields[field_name(path)] = field
    # Both stay in the enum: a conf asking for a backend the deployment lacks is refused by
    # check_request, which names the option that enables it (the form alone would not).
    fields["backend"]["description"] += f" This deployment runs: {', '.join(policy.backends)}."
    return fields


def starting_values(policy: Policy) -> dict[str, Any]:
    """Where the form starts without a stored request: a request this deployment accepts as it is
    (once it has allowed prefixes and a role), pointing at the first allowed prefix."""
    backend = policy.default_backend
    schemes = ("s3://",) if backend == "sagemaker" else ("s3://", "file://")
    base = next((p.rstrip("/") for p in policy.allowed_prefixes if p.startswith(schemes)), "s3://my-bucket")
    runtime = min(3600, policy.max_runtime_seconds)
    values: dict[str, Any] = {
        "name": "my-cv-run",
        "backend": backend,
        "input.uri": f"{base}/datasets/train.csv",
        "output_uri": f"{base}/cv-runs",
        "training": {"StoppingCondition": {"MaxRuntimeInSeconds": runtime}},
    }
    if backend == "local":
        values["local"] = {"command": next(iter(policy.local_commands))}
        return values
    instance_type = next((t for t in policy.instance_types if not set(t) & set("*?[")), "ml.m5.large")
    values["training"] = {
        "AlgorithmSpecification": {"TrainingImage": XGBOOST_IMAGE, "TrainingInputMode": "File"},
        "HyperParameters": {"objective": "binary:logistic", "num_round": "100"},
        "ResourceConfig": {"InstanceType": instance_type, "InstanceCount": 1, "VolumeSizeInGB": 10},
        **values["training"],
    }
    return values


def form_values(request: CVRequest) -> dict[str, Any]:
    """The form's flat values of a request (the inverse of :func:`request_from_form`)."""
    dumped = request.model_dump(mode="json", exclude_none=False)
    values = {}
    for paths in SECTIONS.values():
        for path in paths:
            node: Any = dumped
            for key in path.split("."):
                node = node[key]
            values[field_name(path)] = node
    return values


def request_from_form(values: dict[str, Any]) -> dict[str, Any]:
    """The nested request dict from the form's flat values (fields not in the form are ignored)."""
    request: dict[str, Any] = {}
    for paths in SECTIONS.values():
        for path in paths:
            name = field_name(path)
            if name in values:
                node = request
                *parents, leaf = path.split(".")
                for key in parents:
                    node = node.setdefault(key, {})
                node[leaf] = values[name]
    return request


def unknown_fields(conf: dict[str, Any]) -> list[str]:
    """A problem line for each key of a form-style conf that no form field has (a typo would
    otherwise be ignored silently and the run would go ahead with the default)."""
    known = [field_name(path) for paths in SECTIONS.values() for path in paths]
    problems = []
    for key in sorted(set(conf) - set(known)):
        guess = difflib.get_close_matches(key, known, n=1) or [f for f in known if f.endswith(f"_{key}")]
        hint = f"; did you mean {guess[0]}?" if guess else ""
        problems.append(
            f"{key}: not a field of the form, and the conf is neither a request nor SMX-Validator input{hint}"
        )
    return problems


def _property(schema: dict[str, Any], path: str) -> dict[str, Any]:
    node = schema
    for key in path.split("."):
        node = _resolve(node, schema)["properties"][key]
    return node


def _resolve(node: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        return schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _types(prop: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The JSON-schema keywords the form understands: type (list for optional), enum, bounds."""
    options = prop.get("anyOf", [prop])
    resolved = [_resolve(option, schema) for option in options]
    types = []
    for option in resolved:
        kind = option.get("type", "object")
        types.extend(kind if isinstance(kind, list) else [kind])
    result: dict[str, Any] = {"type": types[0] if len(types) == 1 else list(dict.fromkeys(types))}
    for option in resolved:
        result.update({k: option[k] for k in _KEYWORDS if k in option})
    return result


def _default(path: str, prop: dict[str, Any]) -> Any:
    if "default" in prop:
        return prop["default"]
    field = CVRequest.model_fields[path]  # a nested model: its default instance, without unset keys
    value = field.default_factory() if field.default_factory else field.default
    return (
        [v.model_dump(mode="json") for v in value]
        if isinstance(value, list)
        else value.model_dump(mode="json", exclude_none=True)
    )
