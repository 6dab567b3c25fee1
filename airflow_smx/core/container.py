"""SageMaker's training-container contract on this machine. No Airflow.

A fold's CreateTrainingJob request becomes a folder laid out like ``/opt/ml`` and the
script-mode environment of SageMaker's training toolkit, so the same script runs here and in a
SageMaker framework container. The run's outcome is described in DescribeTrainingJob's shape.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow_smx.core import storage

HOST = "algo-1"


def lay_out(base: Path, config: dict[str, Any], storage_options: dict[str, Any] | None = None) -> dict[str, Path]:
    """Create ``base`` as /opt/ml: config files, channel data (manifests resolved), model/, output/."""
    config_dir = base / "input" / "config"
    config_dir.mkdir(parents=True)
    (base / "model").mkdir()
    (base / "output" / "data").mkdir(parents=True)
    hyperparameters = config.get("HyperParameters", {})
    (config_dir / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config_dir / "resourceconfig.json").write_text(
        json.dumps({"current_host": HOST, "hosts": [HOST], "network_interface_name": "eth0"})
    )
    channels: dict[str, Path] = {}
    input_config = {}
    for channel in config["InputDataConfig"]:
        name = channel["ChannelName"]
        source = channel["DataSource"]["S3DataSource"]
        target = base / "input" / "data" / name
        target.mkdir(parents=True)
        for uri in _objects(source["S3DataType"], source["S3Uri"], storage_options):
            storage.download(uri, target / uri.rstrip("/").rsplit("/", 1)[-1], storage_options)
        channels[name] = target
        input_config[name] = {
            "TrainingInputMode": "File",
            "S3DistributionType": source.get("S3DataDistributionType", "FullyReplicated"),
            "RecordWrapperType": channel.get("RecordWrapperType", "None"),
            **({"ContentType": channel["ContentType"]} if "ContentType" in channel else {}),
        }
    (config_dir / "inputdataconfig.json").write_text(json.dumps(input_config))
    return channels


def _objects(data_type: str, uri: str, storage_options: dict[str, Any] | None) -> list[str]:
    """The objects a channel reads: a ManifestFile's list, or the one object."""
    if data_type != "ManifestFile":
        return [uri]
    fs, path = storage.filesystem(uri, storage_options)
    manifest = storage.read_json(fs, path)
    prefix = manifest[0]["prefix"]
    return [storage.join(prefix, key) for key in manifest[1:]]


def environment(base: Path, config: dict[str, Any], channels: dict[str, Path]) -> dict[str, str]:
    """The script-mode variables of sagemaker-training, and SAGEMAKER_BASE_DIR for the toolkit itself."""
    hyperparameters = config.get("HyperParameters", {})
    cpus = os.cpu_count() or 1
    env = {
        "SAGEMAKER_BASE_DIR": str(base),
        "SM_MODEL_DIR": str(base / "model"),
        "SM_INPUT_DIR": str(base / "input"),
        "SM_INPUT_CONFIG_DIR": str(base / "input" / "config"),
        "SM_OUTPUT_DIR": str(base / "output"),
        "SM_OUTPUT_DATA_DIR": str(base / "output" / "data"),
        "SM_CHANNELS": json.dumps(sorted(channels)),
        "SM_HPS": json.dumps(hyperparameters),
        "SM_HOSTS": json.dumps([HOST]),
        "SM_CURRENT_HOST": HOST,
        "SM_NUM_CPUS": str(cpus),
        "SM_NUM_GPUS": "0",
        "SM_RESOURCE_CONFIG": json.dumps({"current_host": HOST, "hosts": [HOST]}),
        "SM_TRAINING_ENV": json.dumps(
            {"job_name": config["TrainingJobName"], "hyperparameters": hyperparameters, "num_cpus": cpus}
        ),
    }
    for name, path in channels.items():
        env[f"SM_CHANNEL_{name.upper()}"] = str(path)
    for key, value in hyperparameters.items():
        env[f"SM_HP_{key.upper()}"] = str(value)
    return env


def final_metrics(lines: list[str], definitions: list[dict[str, str]], when: datetime) -> list[dict[str, Any]]:
    """The last value each MetricDefinition's regex captured in the output, as SageMaker reports them."""
    found: dict[str, float] = {}
    patterns = [(d["Name"], re.compile(d["Regex"])) for d in definitions]
    for line in lines:
        for name, pattern in patterns:
            match = pattern.search(line)
            if match:
                try:
                    found[name] = float(match.group(1))
                except (IndexError, ValueError):
                    continue
    return [{"MetricName": name, "Value": value, "Timestamp": when.isoformat()} for name, value in found.items()]


def pack_model(model_dir: Path, archive: Path) -> None:
    """A folder's contents as a .tar.gz, as SageMaker uploads model/ and output/data/."""
    with tarfile.open(archive, "w:gz") as tar:
        for item in sorted(model_dir.iterdir()):
            tar.add(item, arcname=item.name)


def failure_reason(base: Path, returncode: int, tail: list[str]) -> str | None:
    """output/failure if the script wrote one (SageMaker's convention), else the exit code and last
    lines; as SageMaker does, an AlgorithmError (the training code's failure: retrying will not help)."""
    failure = base / "output" / "failure"
    if failure.exists() and failure.read_text().strip():
        return "AlgorithmError: " + failure.read_text().strip()[:1000]
    if returncode == 0:
        return None
    return f"AlgorithmError: exit code {returncode}: " + " | ".join(tail[-3:])[:900]


def record_uri(config: dict[str, Any]) -> str:
    """Where a local fold's DescribeTrainingJob-shaped record is kept (next to its model)."""
    return storage.join(
        config["OutputDataConfig"]["S3OutputPath"], config["TrainingJobName"], "output", "describe.json"
    )
