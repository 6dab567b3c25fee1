"""Deployment policy: what a request may read, write, run and spend. No Airflow.

Whoever may trigger the DAG is not whoever runs the deployment: a conf is untrusted input. The
deployment (``[smx]`` options, read by :mod:`airflow_smx.settings`) sets the bounds; every
request is held to them in ``check_request``, before any write or job, and each refusal names
the field, the value and the option that bounds it.

- **Storage**: every storage URI anywhere in the request (found by walking it, not by listing
  fields, so a CreateTrainingJob field added later is covered too) must lie under an allowed
  prefix, and every location field (``input.uri``, ``output_uri``, ``*S3Uri``,
  ``*S3OutputPath``) must be one such URI, whole.
- **Roles**: a request may name only a role the deployment lists.
- **Spend**: allowed instance types, instances per job, the longest run, and a ceiling on the
  run's worst-case instance-hours.
- **Commands**: the local backend exists only where the deployment lists the commands it may
  run; a request picks one by name and never supplies a command line, a folder or environment.
"""

from __future__ import annotations

import fnmatch
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_smx.core.job_requests import SAGEMAKER_DEFAULT_RUNTIME
from airflow_smx.core.request import CVRequest

# Fields airflow-smx, SageMaker or the local backend read or write as a location: each must be,
# whole, an s3:// (or file://) URI under a prefix: no other scheme (SageMaker's S3Uri fields also
# take https, fsspec many protocols), no bare path, no whitespace, quote or control character.
LOCATION_FIELD = re.compile(r"^(input\.uri|output_uri)$|(S3Uri|S3OutputPath|ManifestS3Uri)$")
STORAGE_URI = re.compile(r"(?:s3|file)://[^\s\"'\x00-\x1f\x7f]+")
# Anywhere else (hyperparameters, environment, tags), every storage URI is checked from each place
# one starts to the next whitespace or quote, so "s3://b/cv,/../x" and "s3://b/cv/x,s3://evil/y"
# are caught; https URLs of S3 objects must be given as s3://. Other URLs (a model hub, a proxy)
# are not storage airflow-smx or SageMaker use for the run: they pass.
STORAGE_START = re.compile(r"(?:s3|s3a|s3n|file):/", re.IGNORECASE)
URL = re.compile(r"https?://[^\s\"'/]+", re.IGNORECASE)
S3_HOST = re.compile(r"(^|[.-])s3([.-].*)?\.amazonaws\.com(\.cn)?$", re.IGNORECASE)
COMMAND_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# The local child's environment is built from nothing: the worker's own (Airflow config,
# connections, AWS credentials) is not inherited. These few are passed for a sane process.
INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "TZ")

MAX_KEEP_ALIVE = 3600  # SageMaker's most KeepAlivePeriodInSeconds (a warm pool's idle hour)


@dataclass(frozen=True)
class LocalCommand:
    """A training command the deployment allows the local backend to run.

    :param argv: the command line, run as is (no shell)
    :param env: environment variables the deployment gives it on purpose
    :param workdir: where it runs (default: the fold's temporary folder)
    """

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str | None = None


@dataclass(frozen=True)
class Policy:
    """The bounds a deployment puts on requests; the defaults are a fresh install's.

    :param allowed_prefixes: URI prefixes a request may read and write (none: every request is refused)
    :param role_arn: the execution role of requests that name none
    :param role_arns: further roles a request may name in ``training.RoleArn``
    :param instance_types: ml instance types a job may use (fnmatch patterns allowed, ``ml.m5.*``)
    :param max_instance_count: most instances one training job may hold
    :param max_volume_gb: largest ML storage volume of an instance (``VolumeSizeInGB``)
    :param max_runtime_seconds: longest ``StoppingCondition.MaxRuntimeInSeconds``
    :param max_instance_hours: ceiling on a run's worst case: jobs x instances x runtime, + the folds' warm pools
    :param local_commands: the local backend's commands by name; empty: no local backend
    """

    allowed_prefixes: tuple[str, ...] = ()
    role_arn: str | None = None
    role_arns: tuple[str, ...] = ()
    instance_types: tuple[str, ...] = (
        "ml.m5.large",
        "ml.m5.xlarge",
        "ml.m5.2xlarge",
        "ml.m5.4xlarge",
        "ml.c5.xlarge",
        "ml.c5.2xlarge",
        "ml.c5.4xlarge",
    )
    max_instance_count: int = 4
    max_volume_gb: int = 100
    max_runtime_seconds: int = SAGEMAKER_DEFAULT_RUNTIME
    max_instance_hours: float = 100.0
    local_commands: Mapping[str, LocalCommand] = field(default_factory=dict)
    warm_pool_seconds: int = 600

    def __post_init__(self) -> None:
        for prefix in self.allowed_prefixes:
            if not STORAGE_URI.fullmatch(prefix) or _uri_problem(prefix):
                raise ValueError(f"[smx] allowed_prefixes: {prefix!r} is not an s3:// or file:/// prefix")
        if self.max_instance_count < 1:
            raise ValueError(f"[smx] max_instance_count must be >= 1, got {self.max_instance_count}")
        if not 0 <= self.warm_pool_seconds <= MAX_KEEP_ALIVE:
            raise ValueError(f"[smx] warm_pool_seconds must be 0 to {MAX_KEEP_ALIVE}, got {self.warm_pool_seconds}")
        for name, command in self.local_commands.items():
            if not COMMAND_NAME.match(name) or not command.argv:
                raise ValueError(f"[smx] local_commands: {name!r} needs a name of letters, digits, -_. and a command")

    @property
    def default_backend(self) -> str:
        """SageMaker, unless the deployment turned the local backend on."""
        return "local" if self.local_commands else "sagemaker"

    @property
    def backends(self) -> list[str]:
        return ["local", "sagemaker"] if self.local_commands else ["sagemaker"]

    def with_warm_pool(self, request: CVRequest, pool_slots: int) -> CVRequest:
        """``request``, its jobs kept warm ``warm_pool_seconds`` after they end when they are more than
        the pool trains at once: a later fold then starts on a finished one's instances (SageMaker
        matches type, count, volume, role and VPC, which all of a run's jobs share) instead of
        waiting minutes for new ones. Not for a request that sets KeepAlivePeriodInSeconds itself
        (0 opts out), nor for managed spot training, which SageMaker keeps no warm pool for, nor
        where the idle time would take the worst case above ``max_instance_hours``.

        :param pool_slots: the pool's size in ml instances ([smx] pool_slots)
        """
        training = request.training
        resources = dict(training.ResourceConfig or {})
        outnumbered = request.cv.n_folds * training.instance_count > pool_slots  # the refit runs alone
        if (
            request.backend != "sagemaker"
            or not self.warm_pool_seconds
            or "KeepAlivePeriodInSeconds" in resources
            or training.EnableManagedSpotTraining
            or not outnumbered
        ):
            return request
        resources["KeepAlivePeriodInSeconds"] = self.warm_pool_seconds
        warm = request.model_copy(update={"training": training.model_copy(update={"ResourceConfig": resources})})
        # a speed-up the deployment offers never turns a request within max_instance_hours into a refused one
        if WorstCase.of(warm).instance_hours > self.max_instance_hours >= WorstCase.of(request).instance_hours:
            return request
        return warm

    def problems(self, request: CVRequest) -> list[str]:
        """One ``path: message`` line per way ``request`` exceeds this deployment's bounds."""
        found = list(self._storage_problems(request))
        if request.backend == "local":
            found += self._local_problems(request)
        else:
            found += self._sagemaker_problems(request)
        return found

    def local_command(self, name: str) -> LocalCommand:
        """The command listed as ``name``; refused if the deployment does not list it (any more)."""
        if name not in self.local_commands:
            raise ValueError(f"{name!r} is not one of the deployment's commands ([smx] local_commands)")
        return self.local_commands[name]

    def command_name(self, request: CVRequest) -> str:
        """The name of the command a local request runs: its own, or the deployment's only one."""
        if request.local.command is None and len(self.local_commands) == 1:
            return next(iter(self.local_commands))
        return request.local.command or ""

    def _storage_problems(self, request: CVRequest) -> Iterator[str]:
        for path, text, is_key in _strings(request.model_dump(mode="json", exclude_none=True)):
            if not is_key and LOCATION_FIELD.search(path):
                problem = self._uri_problem(text)
                if problem:
                    yield f"{path}: {text if STORAGE_URI.fullmatch(text) else repr(text)} {problem}"
                continue
            for start in STORAGE_START.finditer(text):
                uri = re.split(r"[\s\"']", text[start.start() :], maxsplit=1)[0]
                problem = self._uri_problem(uri)
                if problem:
                    yield f"{path}: {uri} {problem}"
            for url in URL.finditer(text):
                if S3_HOST.search(url.group().split("://", 1)[1].split(":")[0]):
                    yield f"{path}: {url.group()}... is an https URL of S3: give it as s3://bucket/key"

    def _uri_problem(self, uri: str) -> str | None:
        """Why ``uri`` may not be used by a request, if it may not."""
        if not STORAGE_URI.fullmatch(uri):
            return "must be a whole s3:// URI (file:// for the local backend)"
        problem = _uri_problem(uri)
        if problem:
            return problem
        if not any(_under(uri, prefix) for prefix in self.allowed_prefixes):
            listed = ", ".join(self.allowed_prefixes) if self.allowed_prefixes else "none: set [smx] allowed_prefixes"
            return f"is outside the allowed prefixes ([smx] allowed_prefixes: {listed})"
        return None

    def _local_problems(self, request: CVRequest) -> list[str]:
        if not self.local_commands:
            return ["backend: local is not enabled on this deployment ([smx] local_commands is empty); use sagemaker"]
        names = ", ".join(self.local_commands)
        problems = []
        if self.command_name(request) not in self.local_commands:
            given = request.local.command
            what = f"{given!r} is not one of" if given else "required: the name of one of"
            problems.append(f"local.command: {what} the deployment's commands ([smx] local_commands: {names})")
        if request.training.Environment:
            problems.append(
                "training.Environment: not passed to local commands (environment variables can make a "
                "process run other code); the deployment sets them in [smx] local_commands"
            )
        problems += self._runtime_problems(request)
        return problems

    def _sagemaker_problems(self, request: CVRequest) -> list[str]:
        problems = []
        for path, uri in (("input.uri", request.input.uri), ("output_uri", request.output_uri)):
            if not uri.startswith("s3://"):
                problems.append(f"{path}: SageMaker reads its channels from S3: must be s3://, got {uri}")
        problems += self._role_problems(request)
        problems += self._instance_problems(request)
        problems += self._runtime_problems(request)
        problems += _warm_pool_problems(request)
        if not problems:  # the worst case only means something for a request within the other bounds
            problems += self._spend_problems(request)
        return problems

    def _role_problems(self, request: CVRequest) -> list[str]:
        role = request.training.RoleArn
        if role is None:
            return [] if self.role_arn else ["training.RoleArn: required (or set the deployment's [smx] role_arn)"]
        allowed = [r for r in (self.role_arn, *self.role_arns) if r]
        if role in allowed:
            return []
        listed = ", ".join(allowed) if allowed else "none"
        return [f"training.RoleArn: {role} is not a role this deployment allows ([smx] role_arn, role_arns: {listed})"]

    def _instance_problems(self, request: CVRequest) -> list[str]:
        resources = request.training.ResourceConfig or {}
        problems = []
        if "InstanceGroups" in resources:
            problems.append(
                "training.ResourceConfig.InstanceGroups: heterogeneous clusters are not supported; "
                "use InstanceType and InstanceCount"
            )
        # every instance a job may start: ResourceConfig's, and the Debugger/Profiler rule evaluators'
        training = request.training.model_dump(mode="json", exclude_none=True)
        for path, kind in _values(training, "InstanceType"):
            if not any(fnmatch.fnmatchcase(str(kind), pattern) for pattern in self.instance_types):
                problems.append(
                    f"training.{path}: {kind} is not allowed ([smx] instance_types: {', '.join(self.instance_types)})"
                )
        for path, size in _values(training, "VolumeSizeInGB"):
            if not isinstance(size, int) or size > self.max_volume_gb:
                problems.append(f"training.{path}: {size} is above [smx] max_volume_gb {self.max_volume_gb}")
        count = request.training.instance_count
        if count > self.max_instance_count:
            problems.append(
                f"training.ResourceConfig.InstanceCount: {count} is above [smx] max_instance_count "
                f"{self.max_instance_count}"
            )
        return problems

    def _runtime_problems(self, request: CVRequest) -> list[str]:
        runtime = max_runtime(request)
        if runtime <= self.max_runtime_seconds:
            return []
        given = "MaxRuntimeInSeconds" in (request.training.StoppingCondition or {})
        where = f"{runtime}" if given else f"not set, so SageMaker's default {runtime}"
        return [
            f"training.StoppingCondition.MaxRuntimeInSeconds: {where} is above [smx] max_runtime_seconds "
            f"{self.max_runtime_seconds}"
        ]

    def _spend_problems(self, request: CVRequest) -> list[str]:
        spend = WorstCase.of(request)
        if spend.instance_hours <= self.max_instance_hours:
            return []
        return [f"training: {spend}, above [smx] max_instance_hours {self.max_instance_hours:g}"]


@dataclass(frozen=True)
class WorstCase:
    """The most a run's training may bill: every fold's job, and the refit's, trains its longest;
    each fold's instances then idle in their warm pool (the refit, the run's last job, keeps none);
    each Debugger/Profiler rule runs one more instance alongside the job, as long as it trains."""

    jobs: int  # the folds', and the refit's
    instances: int
    rule_instances: int
    instance_type: str
    hours_per_job: float  # training
    warm_jobs: int  # the folds: the jobs whose instances wait in a warm pool
    warm_hours: float

    @classmethod
    def of(cls, request: CVRequest) -> WorstCase:
        training = request.training
        return cls(
            jobs=request.cv.n_folds + int(request.refit),
            instances=training.instance_count,
            rule_instances=len(training.DebugRuleConfigurations or []) + len(training.ProfilerRuleConfigurations or []),
            instance_type=(training.ResourceConfig or {}).get("InstanceType", "?"),
            hours_per_job=max_runtime(request) / 3600,
            warm_jobs=request.cv.n_folds,
            warm_hours=warm_pool_seconds(request) / 3600,
        )

    @property
    def instance_hours(self) -> float:
        training = self.jobs * (self.instances + self.rule_instances) * self.hours_per_job
        return training + self.warm_jobs * self.instances * self.warm_hours

    def __str__(self) -> str:
        kind, rules = self.instance_type, self.rule_instances
        instances = f"({self.instances} x {kind} + {rules} rule instances)" if rules else f"{self.instances} x {kind}"
        warm = f" + {self.warm_jobs} warm pools x {self.instances} x {self.warm_hours:g} h" if self.warm_hours else ""
        return (
            f"worst case {self.jobs} jobs x {instances} x {self.hours_per_job:g} h{warm} = {self.instance_hours:g} "
            "instance-hours"
        )


def max_runtime(request: CVRequest) -> int:
    """The longest a fold's job may train (SageMaker's default when the request sets none)."""
    stopping = request.training.StoppingCondition or {}
    return int(stopping.get("MaxRuntimeInSeconds", SAGEMAKER_DEFAULT_RUNTIME))


def _warm_pool_problems(request: CVRequest) -> list[str]:
    seconds = warm_pool_seconds(request)
    if seconds > MAX_KEEP_ALIVE:
        return [f"training.ResourceConfig.KeepAlivePeriodInSeconds: {seconds} is above SageMaker's {MAX_KEEP_ALIVE}"]
    if seconds and request.training.EnableManagedSpotTraining:
        return [
            "training.ResourceConfig.KeepAlivePeriodInSeconds: managed spot training keeps no warm pool; "
            "set 0 or turn EnableManagedSpotTraining off"
        ]
    return []


def warm_pool_seconds(request: CVRequest) -> int:
    """A managed warm pool keeps (and bills) the instances this long after each job."""
    return int((request.training.ResourceConfig or {}).get("KeepAlivePeriodInSeconds", 0))


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any, bool]]:
    """Every value in a JSON value, depth first, and every key: (field path, value or key, is a key)."""
    yield path, node, False
    if isinstance(node, Mapping):
        for key, value in node.items():
            child = f"{path}.{key}" if path else str(key)
            yield child, str(key), True
            yield from _walk(value, child)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}.{index}")


def _values(node: Any, key: str) -> Iterator[tuple[str, Any]]:
    """Every value of ``key`` anywhere in a JSON value, with its field path."""
    return ((path, value) for path, value, is_key in _walk(node) if not is_key and path.rsplit(".", 1)[-1] == key)


def _strings(node: Any) -> Iterator[tuple[str, str, bool]]:
    """Every string in a JSON value, keys too: (field path, text, whether it is a key)."""
    return ((path or "(request)", text, is_key) for path, text, is_key in _walk(node) if isinstance(text, str))


def _uri_problem(uri: str) -> str | None:
    """Why a storage URI cannot be held to a prefix, if it cannot."""
    if not STORAGE_URI.fullmatch(uri):
        return "uses a scheme other than s3:// or file://"
    scheme, rest = uri.split("://", 1)
    if scheme == "file" and not rest.startswith("/"):
        return "must be file:///absolute/path"
    if not rest.strip("/"):
        return "must name a bucket or folder"
    segments = urllib.parse.unquote(rest).split("/")
    if any(s in (".", "..") for s in segments):
        return "must not contain . or .. path segments"
    return None


def _under(uri: str, prefix: str) -> bool:
    # "s3://bucket/cv" allows s3://bucket/cv and s3://bucket/cv/..., not s3://bucket/cv-other
    prefix = prefix.rstrip("/")
    return bool(prefix) and (uri == prefix or uri.startswith(prefix + "/"))
