"""The split as a SageMaker Processing job: the same fold engine, on an instance of its own.

Above the deployment's ``[smx] offload_bytes`` the worker does not split: it starts a Processing
job that runs ``python3 -m airflow_smx.core.folds.offload`` on the deployment's image (a stock
SageMaker scikit-learn image, Python 3.11 or later), and waits for it. The job installs this
package and its core dependencies from the deployment's wheelhouse (``[smx] split_code_uri``,
mounted at :data:`CODE`), pinned to the worker's own versions: numpy's permutation and
scikit-learn's splitters decide the folds, so the job's parts and plan are byte-identical to
the worker's. The job reads the input and writes the parts itself, under the run's role. An
input of many files may be split by several instances of the job (``[smx] split_instance_count``),
each a run of the files (:mod:`airflow_smx.core.folds.sharded`), to the same bytes.

What the job does is data, not a command: the request's fields travel in a JSON document
(:data:`DOCUMENT`), never in the container's command line, which holds only the deployment's
package pins.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import shutil
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from airflow_smx.core import storage
from airflow_smx.core.folds.processes import cpu_count
from airflow_smx.core.folds.records import SplitError
from airflow_smx.core.folds.sharded import Host, split_sharded
from airflow_smx.core.folds.split import split_dataset
from airflow_smx.core.request import CVSpec, InputSpec

log = logging.getLogger(__name__)

ML = "/opt/ml"
CONTAINER = f"{ML}/processing"
CODE = f"{CONTAINER}/input/code"  # the wheelhouse: this package's wheel and the pinned wheels below
DOCUMENT_FOLDER = f"{CONTAINER}/input/split"
DOCUMENT = f"{DOCUMENT_FOLDER}/split.json"
PACKAGE = "airflow-smx"
# What the split imports (not Airflow): numpy and scikit-learn (and scipy under it) decide the folds
PINNED = ("numpy", "scipy", "scikit-learn", "msgspec", "pydantic", "fsspec", "s3fs")
# the fetched copy and the parts: on the ML storage volume volume_gb sizes, as the inputs are,
# wherever the image's /tmp lies (a container's root filesystem may be far smaller)
SCRATCH = f"{CONTAINER}/scratch"
ERROR_FILE = "split_error.txt"
WORK = "work"  # a job of several instances: their messages and segments, one folder per attempt
VOLUME_MIN_GB = 30
VOLUME_PER_INPUT = 2.5  # the fetched copy, the parts written before upload, and room for the rest


def versions() -> dict[str, str]:
    """This process's version of this package and of every pinned dependency."""
    found = {}
    for name in (PACKAGE, *PINNED):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def document(
    spec: InputSpec,
    cv: CVSpec,
    folds_uri: str,
    split_uri: str,
    attempt: str,
    *,
    assemble_train: bool,
    final: bool,
) -> dict[str, Any]:
    """What the job splits, and how: ``split_dataset``'s arguments, and the versions it needs.

    :param split_uri: the run's split folder: a bad input's error (:data:`ERROR_FILE`) and, for
        a job of several instances, their messages (``work/{attempt}/``)
    :param attempt: the job's name
    """
    return {
        "input": spec.model_dump(mode="json"),
        "cv": cv.model_dump(mode="json"),
        "folds_uri": folds_uri,
        "error_uri": storage.join(split_uri, ERROR_FILE),
        "work_uri": storage.join(split_uri, WORK, attempt),
        "assemble_train": assemble_train,
        "final": final,
        "versions": versions(),
    }


def install_command(pins: dict[str, str]) -> str:
    """The shell line that installs the pinned packages from the wheelhouse, offline."""
    ours = shlex.quote(f"{PACKAGE}=={pins[PACKAGE]}")
    theirs = " ".join(shlex.quote(f"{name}=={pins[name]}") for name in PINNED if name in pins)
    pip = f"python3 -m pip install --quiet --no-index --find-links {CODE}"
    # this package without its dependencies: they include Airflow, which the split never imports
    return f"{pip} --no-deps {ours} && {pip} {theirs}"


def volume_gb(input_bytes: int, largest: int) -> int:
    """Room for a copy of the input and its parts, within the deployment's ``largest`` volume (an
    input too large for it is split as in a worker short of disk: read from S3 and written to it)."""
    return min(largest, max(VOLUME_MIN_GB, math.ceil(input_bytes * VOLUME_PER_INPUT / 2**30) + 10))


def processing_request(
    name: str,
    document_folder: str,
    *,
    code_uri: str,
    image: str,
    role: str,
    instance_type: str,
    instance_count: int,
    share_bytes: int,
    max_volume_gb: int,
    max_runtime: int,
    tags: list[dict[str, str]],
) -> dict[str, Any]:
    """The CreateProcessingJob request of a split: the wheelhouse and the document in, nothing
    out (the job writes the folds itself, so they land whole or not at all, as in the worker).

    :param document_folder: the S3 folder holding the document, as ``split.json``, alone
    :param code_uri: the wheelhouse's S3 folder
    :param instance_count: instances, each splitting a run of the files of a many-file input
    :param share_bytes: the largest instance's share of the input: each volume holds a copy of its share, and its parts
    :param max_volume_gb: the deployment's largest volume (``[smx] max_volume_gb``)
    """
    return {
        "ProcessingJobName": name,
        "RoleArn": role,
        "AppSpecification": {
            "ImageUri": image,
            "ContainerEntrypoint": ["/bin/sh", "-c", f'{install_command(versions())} && exec "$@"', "split"],
            "ContainerArguments": ["python3", "-m", "airflow_smx.core.folds.offload", DOCUMENT],
        },
        "ProcessingInputs": [
            _input("code", code_uri, CODE),
            _input("split", document_folder, DOCUMENT_FOLDER),
        ],
        "ProcessingResources": {
            "ClusterConfig": {
                "InstanceCount": instance_count,
                "InstanceType": instance_type,
                "VolumeSizeInGB": volume_gb(share_bytes, max_volume_gb),
            }
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime},
        "Tags": tags,
    }


def _input(name: str, uri: str, local: str) -> dict[str, Any]:
    return {
        "InputName": name,
        "S3Input": {
            "S3Uri": uri,
            "LocalPath": local,
            "S3DataType": "S3Prefix",
            "S3InputMode": "File",
            "S3DataDistributionType": "FullyReplicated",
        },
    }


def version_problems(needed: dict[str, str]) -> list[str]:
    """Where this process's packages differ from the worker's: the folds would differ too."""
    have = versions()
    return [
        f"{name} {have.get(name, 'missing')} here, {wanted} on the worker"
        for name, wanted in needed.items()
        if name != PACKAGE and have.get(name) != wanted
    ]


def container_root(document: Path) -> Path | None:
    """The container's /opt/ml, wherever a test harness puts it, for a document where the job
    finds it (:data:`DOCUMENT`); None for one elsewhere (a split run by hand: one host, /tmp)."""
    layout = Path(DOCUMENT).relative_to(ML).parts
    if document.parts[-len(layout) :] != layout:
        return None
    return document.parents[len(layout) - 1]


def use_scratch(folder: Path) -> None:
    """Make ``folder`` the temporary folder of this process and of the processes it forks."""
    folder.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(folder)
    log.info("scratch space: %s, %d GB free", folder, shutil.disk_usage(folder).free // 10**9)


def run(document_path: str) -> int:
    """The job's entry point: split as the document says; a bad input's error goes to its error_uri."""
    with open(document_path, encoding="utf-8") as handle:
        job = json.load(handle)
    problems = version_problems(job["versions"])
    if problems:
        log.error("the job's packages differ from the worker's, so would its folds: %s", "; ".join(problems))
        return 2
    host, ml_root = Host(0, 1), container_root(Path(document_path))
    if ml_root is not None:  # in a container (or the harness's stand-in for one), not run by hand
        use_scratch(ml_root / Path(SCRATCH).relative_to(ML))
        host = Host.of_job(ml_root)
    spec, cv = InputSpec.model_validate(job["input"]), CVSpec.model_validate(job["cv"])
    options = {"assemble_train": job["assemble_train"], "final": job["final"], "workers": cpu_count()}
    try:
        if host.count > 1:
            plan = split_sharded(spec, cv, job["folds_uri"], job["work_uri"], host, **options)
        else:
            plan = split_dataset(spec, cv, job["folds_uri"], **options)
    except SplitError as error:  # the user's data: they read it in the task's log, in their terms
        fs, path = storage.filesystem(job["error_uri"])
        storage.write_bytes(fs, path, str(error).encode())
        log.error("cannot split: %s", error)
        return 1
    if plan is None:
        log.info("host %d of %d: done; the first host writes the plan", host.index + 1, host.count)
    else:
        log.info("split %d records into %d folds under %s", plan.n_records, len(plan.folds), plan.prefix)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    code = run(sys.argv[1])
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # without waiting for threads still reading: a split that failed early must not spend the
    # job's hours hashing the rest of the input before the container can exit
    os._exit(code)
