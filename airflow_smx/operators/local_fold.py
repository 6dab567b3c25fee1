"""One fold trained by a local process under SageMaker's container contract."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from airflow_smx import settings
from airflow_smx.compat import AirflowFailException, BaseOperator
from airflow_smx.core import container, storage
from airflow_smx.core.attempts import (
    FOLDS_TAG,
    Attempt,
    Step,
    attempt_config,
    find_attempts,
    next_step,
    owner_problem,
    tags_of,
)
from airflow_smx.core.container import record_uri
from airflow_smx.core.job_requests import RUN_TAG, SAGEMAKER_DEFAULT_RUNTIME
from airflow_smx.core.policy import INHERITED_ENV, LocalCommand
from airflow_smx.hooks.s3fs_options import storage_options_for
from airflow_smx.operators import fresh_try

if TYPE_CHECKING:
    from airflow.sdk import Context

KILL_GRACE_SECONDS = 10


def child_environment(
    base: Path, config: dict[str, Any], channels: dict[str, Path], command: LocalCommand
) -> dict[str, str]:
    """The command's environment, built from nothing: a few harmless worker variables, the
    SageMaker training variables, and what the deployment gives this command."""
    inherited = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
    (base / "tmp").mkdir(exist_ok=True)
    home = {"HOME": str(base), "TMPDIR": str(base / "tmp")}
    return {**inherited, **home, **container.environment(base, config, channels), **command.env}


def latest_record(config: dict[str, Any], options: dict[str, Any]) -> Attempt | None:
    """The record of the fold's latest local attempt, or None if none ended yet."""
    found = local_attempts(config, options)
    return Attempt(len(found), found[-1], tags_of(found[-1])) if found else None


def local_attempts(config: dict[str, Any], options: dict[str, Any]) -> list[dict[str, Any]]:
    """The records of every local attempt of the fold planned as ``config``, in order."""

    def read(name: str) -> dict[str, Any] | None:
        fs, path = storage.filesystem(record_uri({**config, "TrainingJobName": name}), options)
        return storage.read_json(fs, path) if fs.exists(path) else None

    return find_attempts(config["TrainingJobName"], read)


class LocalFoldTrainingOperator(BaseOperator):
    """Train one cross-validation fold with a local command, as SageMaker would run it.

    The fold's CreateTrainingJob request (the same one the SageMaker operator gets) is laid
    out as /opt/ml in a temporary folder: hyperparameters.json, resourceconfig.json, the
    channels' data (ManifestFile lists resolved), model/ and output/, with the script-mode
    environment (SM_CHANNEL_*, SM_MODEL_DIR, SM_HPS, SM_HP_*, ... and SAGEMAKER_BASE_DIR).
    Output streams to the task log; AlgorithmSpecification.MetricDefinitions are applied to it;
    model/ is uploaded as model.tar.gz. The result is DescribeTrainingJob-shaped, so the
    aggregation does not care which backend ran. A retry re-uses a completed fold's record;
    killing the task ends the command's whole process group.

    The command is named, not given: it is looked up in the deployment's ``[smx] local_commands``
    when the task runs, so nothing a conf carries can become a command line. It gets a minimal
    environment (``INHERITED_ENV``, the SageMaker variables, the deployment's ``env`` for it), not
    the worker's: no Airflow configuration, connections or AWS credentials. No field is a template.

    :param config: the fold's CreateTrainingJob request
    :param command: the name of a command in ``[smx] local_commands``, run in its own process group
    :param fold: the fold's index, for logs and the UI label
    :param aws_conn_id: connection for s3:// channels and outputs
    """

    ui_color = "#e8f4ea"
    template_fields: Sequence[str] = ()

    def __init__(
        self,
        *,
        config: dict[str, Any],
        command: str,
        fold: int = 0,
        aws_conn_id: str | None = "aws_default",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.config = config
        self.command = command
        self.fold = fold
        self.aws_conn_id = aws_conn_id
        self._process: subprocess.Popen | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        options = self._storage_options()
        latest = latest_record(self.config, options)
        if latest is not None and (problem := owner_problem(latest, self.config, RUN_TAG)):
            raise AirflowFailException(problem)
        step, number = next_step(latest, tags_of(self.config).get(FOLDS_TAG, ""), fresh_try(context, self.retries))
        if step is Step.REPORT:
            self._fail(latest.description)
        if step is Step.REUSE:
            self.log.info("Fold %d: %s already completed on these folds; re-using it", self.fold, latest.name)
            return latest.description
        # a record is written only once its process has ended: there is never one to attach to
        config = attempt_config(self.config, number)
        record = self._train(config, options)
        fs, path = storage.filesystem(record_uri(config), options)
        storage.write_json(fs, path, record)
        if record["TrainingJobStatus"] != "Completed":
            self._fail(record)
        return record

    def _fail(self, record: dict[str, Any]) -> NoReturn:
        """A local failure is the command's: final, as an AlgorithmError is (a clear trains again)."""
        name, reason = record["TrainingJobName"], record["FailureReason"]
        raise AirflowFailException(f"Fold {self.fold}: {name} Failed (final): {reason}")

    @property
    def job_name(self) -> str:
        """The fold's first job name (later attempts add ``-r{n}``)."""
        return self.config["TrainingJobName"]

    def on_kill(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        self.log.warning("Fold %d: ending the training process group %d", self.fold, process.pid)
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)

    def _storage_options(self) -> dict[str, Any]:
        channels = (c["DataSource"]["S3DataSource"]["S3Uri"] for c in self.config["InputDataConfig"])
        return storage_options_for(self.aws_conn_id, record_uri(self.config), *channels)

    def _train(self, config: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
        try:
            command = settings.policy().local_command(self.command)
        except ValueError as error:
            raise AirflowFailException(f"Fold {self.fold}: {error}") from None
        definitions = config.get("AlgorithmSpecification", {}).get("MetricDefinitions", [])
        with tempfile.TemporaryDirectory(prefix=f"smx-{config['TrainingJobName']}-") as folder:
            base = Path(folder)
            channels = container.lay_out(base, config, options)
            started = datetime.now(UTC)
            env = child_environment(base, config, channels, command)
            limit = config["StoppingCondition"].get("MaxRuntimeInSeconds", SAGEMAKER_DEFAULT_RUNTIME)
            returncode, matched, tail = self._run(command, base, env, definitions, limit)
            ended = datetime.now(UTC)
            reason = container.failure_reason(base, returncode, list(tail))
            # as SageMaker does: output/data/ (evaluation files) as output.tar.gz, model/ as model.tar.gz
            outputs = storage.join(config["OutputDataConfig"]["S3OutputPath"], config["TrainingJobName"], "output")
            self._upload(base / "output" / "data", f"{outputs}/output.tar.gz", options)
            artifacts = self._upload(base / "model", f"{outputs}/model.tar.gz", options) if reason is None else None
        metrics = container.final_metrics(matched, definitions, ended)
        return local_record(config, started, ended, reason, metrics, artifacts)

    def _upload(self, folder: Path, uri: str, options: dict[str, Any]) -> str:
        """``folder`` packed and uploaded to ``uri``; ``uri``."""
        archive = folder.parent / f"{folder.name}.tar.gz"
        container.pack_model(folder, archive)
        storage.upload(archive, uri, options)
        return uri

    def _run(
        self, command: LocalCommand, base: Path, env: dict[str, str], definitions: list[dict[str, str]], limit: int
    ) -> tuple[int, list[str], deque]:
        """Run the command, streaming its output; keep the lines metrics match and the last few."""
        self.log.info("Fold %d: running %s (%s)", self.fold, self.command, " ".join(command.argv))
        process = subprocess.Popen(
            command.argv,
            cwd=command.workdir or base,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,  # its own process group: on_kill ends the command and its children
        )
        self._process = process
        timer = threading.Timer(limit, self.on_kill)
        timer.start()
        matched: list[str] = []
        tail: deque = deque(maxlen=20)
        patterns = [re.compile(d["Regex"]) for d in definitions]
        try:
            for line in process.stdout:
                line = line.rstrip("\n")
                self.log.info("%s", line)
                tail.append(line)
                if any(p.search(line) for p in patterns):
                    matched.append(line)
            return process.wait(), matched, tail
        finally:
            timer.cancel()


def local_record(
    config: dict[str, Any],
    started: datetime,
    ended: datetime,
    reason: str | None,
    metrics: list[dict[str, Any]],
    artifacts: str | None,
) -> dict[str, Any]:
    """A local fold's DescribeTrainingJob-shaped record, tags included (its attempt is read from them)."""
    status = "Completed" if reason is None else "Failed"
    name = config["TrainingJobName"]
    record = {
        "TrainingJobName": name,
        "TrainingJobArn": f"local:training-job/{name}",
        "TrainingJobStatus": status,
        "SecondaryStatus": status,
        "HyperParameters": config.get("HyperParameters", {}),
        "AlgorithmSpecification": config.get("AlgorithmSpecification", {}),
        "InputDataConfig": config["InputDataConfig"],
        "OutputDataConfig": config["OutputDataConfig"],
        "ResourceConfig": {"InstanceType": "local", "InstanceCount": 1, "VolumeSizeInGB": 0},
        "StoppingCondition": config.get("StoppingCondition", {}),
        "CreationTime": started.isoformat(),
        "TrainingStartTime": started.isoformat(),
        "TrainingEndTime": ended.isoformat(),
        "TrainingTimeInSeconds": round((ended - started).total_seconds()),
        "BillableTimeInSeconds": 0,
        "FinalMetricDataList": metrics,
        "Tags": config.get("Tags", []),
    }
    if reason is not None:
        record["FailureReason"] = reason
    if artifacts is not None:
        record["ModelArtifacts"] = {"S3ModelArtifacts": artifacts}
    return record
