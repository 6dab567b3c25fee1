"""A real Airflow deployment of the built wheel, for the end-to-end tests.

The wheel is built from this checkout and installed, under constraints.txt, into a fresh
virtual environment (not the source tree). Postgres (Debian's package, a throw-away cluster)
holds the metadata. api-server, scheduler, dag-processor and triggerer run with LocalExecutor,
or with CeleryExecutor (as Amazon MWAA runs Airflow) and a Celery worker, Debian's Redis as its
broker, in one process group of their own, on free ports; a moto harness (aws_endpoint.py)
stands in for S3 and SageMaker. Everything is stopped on exit, whatever happened.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "smx_cross_validation"
# A DAG author's second DAG, whose folds may hold 1 or 2 instances: two fold tasks and their selectors
MULTI_DAG_ID = "smx_cross_validation_multi_instance"
MULTI_DAG_FILE = f"""from airflow_smx.dag.graph import cross_validation_dag

dag = cross_validation_dag("{MULTI_DAG_ID}", slot_sizes=(1, 2))
"""
POOL_SLOTS = 2
BUCKET = "smx-e2e"
STOP_GRACE_SECONDS = 30


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a command; on failure raise with everything it printed."""
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if done.returncode:
        raise RuntimeError(f"{' '.join(map(str, command))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def wait_for(what: str, check: Any, timeout: float, interval: float = 0.5) -> Any:
    """Poll ``check`` until it returns something truthy; raise naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(interval)


# -- the package, as users install it -------------------------------------------------------


def build_wheel(dest: Path) -> Path:
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dest), str(REPO)])
    return next(dest.glob("airflow_smx-*.whl"))


def install(wheel: Path, cache: Path) -> Path:
    """A venv with the wheel and Airflow's Postgres and Celery extras under constraints.txt; reused
    while both are unchanged."""
    with zipfile.ZipFile(wheel) as archive:  # RECORD lists every file's hash: stable across rebuilds
        record = next(name for name in archive.namelist() if name.endswith(".dist-info/RECORD"))
        digest = hashlib.sha256(archive.read(record) + (REPO / "constraints.txt").read_bytes()).hexdigest()[:12]
    venv = cache / f"venv-{digest}"
    if (venv / ".installed").exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    run([*pip, "--constraint", str(REPO / "constraints.txt"), str(wheel), "apache-airflow[postgres,celery]"])
    (venv / ".installed").touch()
    return venv


# -- Postgres -------------------------------------------------------------------------------


def postgres_bin() -> Path:
    """Debian's Postgres server binaries (.ci/run installs the package)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise RuntimeError("the end-to-end tests need Postgres: apt-get install postgresql")
    return found[-1].parent


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A throw-away cluster on a free port; yields its SQLAlchemy URL for a database ``airflow``."""
    bin_dir, port = postgres_bin(), free_port()
    root = Path(tempfile.mkdtemp(prefix="smx-e2e-pg-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:  # Postgres refuses to run as root
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_owner = ["runuser", "-u", "postgres", "--"]
    data = root / "data"
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    ctl = [*as_owner, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log")]
    try:
        run([*as_owner, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
        run([*ctl, "-o", options, "-w", "start"])
        run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "airflow"])
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/airflow"
    finally:
        subprocess.run([*ctl, "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def redis(root: Path) -> Iterator[str]:
    """A throw-away Redis server (Debian's) on a free port, nothing persisted; yields its URL."""
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("the CeleryExecutor end-to-end tests need Redis: apt-get install redis-server")
    port = free_port()
    options = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(root)]
    with (root / "redis.log").open("w") as log:
        process = subprocess.Popen([server, *options], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for("Redis to accept connections", lambda: _accepts(port) or process.poll() is not None, timeout=30)
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited {process.returncode}: {(root / 'redis.log').read_text()}")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=30)


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


# -- the AWS endpoint -----------------------------------------------------------------------


@dataclass
class AwsEndpoint:
    status_file: Path
    process: subprocess.Popen

    def status(self) -> dict[str, Any]:
        return json.loads(self.status_file.read_text())

    @property
    def url(self) -> str:
        return self.status()["endpoint"]

    def peak(self, run_id: str = "*") -> dict[str, int]:
        """The most jobs and instances InProgress at one moment, for one Airflow run or ("*") for all."""
        return self.status()["peaks"].get(run_id, {"jobs": 0, "instances": 0})

    def faults(self, seconds: float = 60, **rules: Any) -> None:
        """Have the endpoint inject faults for ``seconds`` (see aws_endpoint.py); none: stop."""
        scratch = self.status_file.with_name("faults.tmp")
        scratch.write_text(json.dumps({**rules, "until": time.time() + seconds}))
        os.replace(scratch, self.status_file.with_name("faults.json"))

    def injected(self) -> dict[str, int]:
        return self.status()["faults"]

    def jobs(self, run_id: str | None = None) -> dict[str, dict[str, Any]]:
        jobs = self.status()["jobs"]
        return {
            name: job for name, job in jobs.items() if run_id is None or job["tags"].get("airflow_run_id") == run_id
        }


@contextlib.contextmanager
def aws_endpoint(root: Path) -> Iterator[AwsEndpoint]:
    status_file = root / "aws-status.json"
    log = (root / "aws-endpoint.log").open("w")
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("aws_endpoint.py")), str(status_file)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    try:
        wait_for("the AWS endpoint", status_file.exists, timeout=60)
        yield AwsEndpoint(status_file, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


# -- what the tests send --------------------------------------------------------------------

ARTIFACTS = REPO / "build" / "e2e" / "artifacts"
DATA_KEY = "data/train.csv"
# A Variable of the deployment, and a conf that asks for it as a template: it must reach SageMaker as text
SECRET_TEMPLATE = "{{ var.value.smx_e2e_secret }}"


def sagemaker_request(
    name: str, n_splits: int = 5, instances: int = 1, seconds: float = 4, refit: bool = False
) -> dict[str, Any]:
    """A SageMaker request on the e2e dataset; the harness keeps each job InProgress ``seconds``.
    Without the refit (the folds' lifecycle is what most tests watch) unless ``refit``."""
    return {
        "refit": refit,
        "name": name,
        "input": {"uri": f"s3://{BUCKET}/{DATA_KEY}", "format": "csv", "label": 0},
        "output_uri": f"s3://{BUCKET}/runs/{name}",
        "cv": {"strategy": "stratified", "n_splits": n_splits, "random_state": 7},
        "backend": "sagemaker",
        "training": {
            "AlgorithmSpecification": {
                "TrainingImage": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1",
                "TrainingInputMode": "File",
            },
            "HyperParameters": {"num_round": "50", "e2e_seconds": str(seconds), "note": SECRET_TEMPLATE},
            "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": instances, "VolumeSizeInGB": 10},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        },
        "metrics": {"objective": "validation:accuracy", "direction": "maximize"},
    }


def dataset(rows: int = 200, seed: int = 5) -> bytes:
    rng = random.Random(seed)
    lines = []
    for _ in range(rows):
        label = rng.randint(0, 1)
        lines.append(",".join([str(label), *(f"{rng.gauss(label, 1):.4f}" for _ in range(4))]))
    return ("\n".join(lines) + "\n").encode()


REPORT: dict[str, Any] = {}


def record(name: str, **figures: Any) -> None:
    """Keep a test's figures in build/e2e/artifacts/e2e-report.json, and print them."""
    REPORT[name] = figures
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "e2e-report.json").write_text(json.dumps(REPORT, indent=2))
    print(f"{name}: {figures}")


@dataclass
class Deployment:
    """What a test gets: Airflow, the AWS endpoint, an S3 client on it, how long setting up took,
    and a folder requests may read (``file://``) inputs from, if the deployment allows one."""

    airflow: Airflow
    aws: AwsEndpoint
    s3: Any
    timings: dict[str, float]
    local_data: Path | None = None

    def keys(self, prefix: str) -> list[str]:
        listing = self.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return [item["Key"] for item in listing.get("Contents", [])]


# -- Airflow --------------------------------------------------------------------------------

FINISHED = {"success", "failed"}


@dataclass
class Watched:
    """What polling a run every half second saw: its end state, and every state of every task."""

    state: str
    seconds: float
    seen: dict[str, set[str]] = field(default_factory=dict)
    triggers: dict[tuple[str, int], str] = field(default_factory=dict)  # (task, map index): trigger class


COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
CELERY_WORKER = "celery worker"  # CeleryExecutor's tasks run in it


@dataclass
class Airflow:
    """The running deployment: its environment, its processes, and a REST client."""

    venv: Path
    home: Path
    env: dict[str, str]
    url: str
    password: str
    components: tuple[str, ...] = COMPONENTS
    processes: list[subprocess.Popen] = field(default_factory=list)
    session: requests.Session = field(default_factory=requests.Session)

    def cli(self, *args: str) -> str:
        return run([str(self.venv / "bin" / "airflow"), *args], env=self.env, cwd=self.home).stdout

    def start(self) -> None:
        for name in self.components:
            self.processes.append(self.launch(name))

    def launch(self, name: str) -> subprocess.Popen:
        """Start one component; the first leads a new process group, the others join it."""
        with self.log_file(name).open("a") as log:
            return subprocess.Popen(
                [str(self.venv / "bin" / "airflow"), *name.split()],
                env=self.env,
                cwd=self.home,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=self.processes[0].pid if self.processes else 0,
            )

    def crash(self, component: str) -> None:
        """SIGKILL a component and every process under it, as a lost machine would, then start it again."""
        with self.down(component):
            pass

    @contextlib.contextmanager
    def down(self, component: str) -> Iterator[None]:
        """A component lost (SIGKILL to it and every process under it) until the block ends, then
        started again. Killed, not frozen: a frozen process may hold Postgres row locks mid-transaction,
        which would stall the API server's own writes; a lost one's connections close."""
        index = self.components.index(component)
        main = psutil.Process(self.processes[index].pid)
        for process in [main, *main.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        self.processes[index].wait(timeout=30)
        try:
            yield
        finally:
            self.processes[index] = self.launch(component)

    def kill_task(self, ti_id: str) -> int:
        """SIGKILL the process running a task instance (its title is ``airflow worker -- {id}``); its pid.
        (Found by title alone: setting it overwrites what /proc shows of the process's environment.)"""
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if ti_id in " ".join(process.cmdline()):
                    process.kill()
                    return process.pid
        raise LookupError(f"no process runs task instance {ti_id}")

    def stop(self) -> None:
        """SIGTERM to the components' group, SIGKILL what is left, then any task process left over."""
        if not self.processes:
            return
        group = self.processes[0].pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            wait_for("Airflow to stop", lambda: not self.running(), timeout=STOP_GRACE_SECONDS)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        for process in self.processes:
            process.wait(timeout=10)
        for leftover in self.leftovers():  # task processes lead process groups of their own
            leftover.kill()

    def leftovers(self) -> list[psutil.Process]:
        """Processes still running with this deployment's AIRFLOW_HOME, and their descendants (a task
        process's title hides its environment)."""
        found: dict[int, psutil.Process] = {}
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if process.environ().get("AIRFLOW_HOME") == str(self.home):
                    found.update({p.pid: p for p in [process, *process.children(recursive=True)]})
        return list(found.values())

    def running(self) -> bool:
        """Whether any process of the group is left (our own exited children are reaped first)."""
        for process in self.processes:
            process.poll()  # a zombie still counts as a group member until reaped
        try:
            os.killpg(self.processes[0].pid, 0)
        except ProcessLookupError:
            return False
        return True

    def log_file(self, component: str) -> Path:
        return self.home / f"{component.replace(' ', '-')}.log"

    def log(self, component: str) -> str:
        return self.log_file(component).read_text(errors="replace")

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        if "Authorization" not in self.session.headers:
            token = self.session.post(f"{self.url}/auth/token", json={"username": "admin", "password": self.password})
            token.raise_for_status()
            self.session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        return self.session.request(method, f"{self.url}{path}", timeout=30, **kwargs)

    def healthy(self) -> bool:
        try:
            health = requests.get(f"{self.url}/api/v2/monitor/health", timeout=5).json()
        except (requests.RequestException, ValueError):
            return False
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return all(health.get(part, {}).get("status") == "healthy" for part in parts)

    def trigger(self, conf: dict[str, Any], dag_id: str = DAG_ID) -> requests.Response:
        return self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})

    def dag_run(self, run_id: str, dag_id: str = DAG_ID) -> dict[str, Any]:
        response = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        response.raise_for_status()
        return response.json()

    def task_instances(self, run_id: str, dag_id: str = DAG_ID) -> list[dict[str, Any]]:
        response = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
        response.raise_for_status()
        return response.json()["task_instances"]

    def watch(self, run_id: str, timeout: float = 300, dag_id: str = DAG_ID) -> Watched:
        """Poll a run and its tasks until the run finishes."""
        start, watched = time.monotonic(), Watched("", 0)
        while True:
            for ti in self.task_instances(run_id, dag_id):
                watched.seen.setdefault(ti["task_id"], set()).add(ti["state"])
                if ti["trigger"]:
                    watched.triggers[ti["task_id"], ti["map_index"]] = ti["trigger"]["classpath"]
            watched.state, watched.seconds = self.dag_run(run_id, dag_id)["state"], time.monotonic() - start
            if watched.state in FINISHED or watched.seconds > timeout:
                return watched
            time.sleep(0.5)

    def run_ids(self, dag_id: str = DAG_ID) -> list[str]:
        response = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100})
        response.raise_for_status()
        return [run["dag_run_id"] for run in response.json()["dag_runs"]]

    def task_log(
        self, run_id: str, task_id: str, map_index: int = -1, try_number: int = 1, dag_id: str = DAG_ID
    ) -> str:
        """A task try's log as the UI shows it, the triggerer's part included."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        response = self.api("GET", path, params={"map_index": map_index}, headers={"Accept": "application/json"})
        response.raise_for_status()
        return json.dumps(response.json()["content"])

    def clear(self, run_id: str, only_failed: bool, dag_id: str = DAG_ID) -> list[dict[str, Any]]:
        """What a user's "Clear" does (REST clearTaskInstances): the run's failed tasks, or all of them."""
        body = {"dry_run": False, "dag_run_id": run_id, "only_failed": only_failed, "reset_dag_runs": True}
        response = self.api("POST", f"/api/v2/dags/{dag_id}/clearTaskInstances", json=body)
        response.raise_for_status()
        return response.json()["task_instances"]

    def extra_links(self, run_id: str, task_id: str, map_index: int = -1, dag_id: str = DAG_ID) -> dict[str, Any]:
        """A task's extra links as the UI gets them: name -> URL (None: nothing to link yet)."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links"
        response = self.api("GET", path, params={"map_index": map_index})
        response.raise_for_status()
        return response.json()["extra_links"]

    def xcom(self, run_id: str, task_id: str, dag_id: str = DAG_ID) -> Any:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        response = self.api("GET", path, params={"deserialize": True})
        response.raise_for_status()
        return response.json()["value"]


@dataclass(frozen=True)
class Settings:
    """What differs between the deployments: the executor, where requests may read and write, and
    the local backend's commands.

    :param broker: a Celery broker URL: CeleryExecutor and a Celery worker; None: LocalExecutor
    :param allowed_prefixes: the deployment's ``[smx] allowed_prefixes``
    :param local_commands: the deployment's ``[smx] local_commands`` (none: no local backend)
    """

    broker: str | None = None
    allowed_prefixes: tuple[str, ...] = (f"s3://{BUCKET}/",)
    local_commands: dict[str, Any] = field(default_factory=dict)

    def executor(self, database: str) -> dict[str, str]:
        if self.broker is None:
            return {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}
        # MWAA's broker is SQS; Redis stands in. Task states come back through Postgres.
        return {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": self.broker,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + database.replace("+psycopg2", ""),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "8",
        }

    @property
    def components(self) -> tuple[str, ...]:
        return COMPONENTS if self.broker is None else (*COMPONENTS, CELERY_WORKER)


def airflow_environment(
    home: Path, database: str, aws: str, request_file: Path, settings: Settings
) -> tuple[dict[str, str], str]:
    """Configuration as a deployer would set it: environment variables only."""
    port, password = free_port(), secrets.token_urlsafe(12)
    (home / "passwords.json").write_text(json.dumps({"admin": password}))
    connection = {"conn_type": "aws", "extra": {"endpoint_url": aws, "region_name": "us-east-1"}}
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
        **settings.executor(database),
        "AIRFLOW__CORE__PARALLELISM": "8",
        # a crashed scheduler's tasks are found within a minute, not the default five (the crash test)
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
        "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "30",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(connection),
        "AIRFLOW_VAR_SMX_E2E_SECRET": secrets.token_hex(8),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AIRFLOW__SMX__ALLOWED_PREFIXES": json.dumps(settings.allowed_prefixes),
        "AIRFLOW__SMX__LOCAL_COMMANDS": json.dumps(settings.local_commands),
        "AIRFLOW__SMX__ROLE_ARN": "arn:aws:iam::123456789012:role/smx-training",
        "AIRFLOW__SMX__CHECK_INTERVAL": "1",
        "AIRFLOW__SMX__POOL_SLOTS": str(POOL_SLOTS),
        "AIRFLOW__SMX__REQUEST_FILE": str(request_file),
    }
    return env, f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def airflow(
    root: Path, venv: Path, database: str, aws: str, request_file: Path, settings: Settings
) -> Iterator[Airflow]:
    home = root / "airflow"
    (home / "dags").mkdir(parents=True)
    shutil.copy(REPO / "dags" / "smx_cross_validation.py", home / "dags")
    (home / "dags" / f"{MULTI_DAG_ID}.py").write_text(MULTI_DAG_FILE)
    env, url = airflow_environment(home, database, aws, request_file, settings)
    password = json.loads((home / "passwords.json").read_text())["admin"]
    deployment = Airflow(venv, home, env, url, password, settings.components)
    deployment.cli("db", "migrate")
    deployment.cli("smx", "setup-pool")
    try:
        deployment.start()
        wait_for("every Airflow component to report healthy", deployment.healthy, timeout=180)
        if CELERY_WORKER in settings.components:  # the health endpoint does not cover workers
            ready = lambda: " ready." in deployment.log(CELERY_WORKER)  # noqa: E731
            wait_for("the Celery worker to be ready", ready, timeout=120)
        for dag_id in (DAG_ID, MULTI_DAG_ID):
            parsed = lambda dag_id=dag_id: deployment.api("GET", f"/api/v2/dags/{dag_id}").ok  # noqa: E731
            wait_for(f"{dag_id} to be parsed", parsed, timeout=120)
            deployment.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False}).raise_for_status()
        yield deployment
    finally:
        deployment.stop()


def start_run(deployment: Deployment, conf: dict[str, Any], dag_id: str = DAG_ID) -> str:
    response = deployment.airflow.trigger(conf, dag_id)
    assert response.status_code == 200, response.text
    return response.json()["dag_run_id"]


def diagnose(deployment: Deployment, run_id: str, dag_id: str = DAG_ID) -> str:
    """Why a run did not do what was expected: its tasks, the first failed task's last log lines,
    and the scheduler's and triggerer's."""
    tis = deployment.airflow.task_instances(run_id, dag_id)
    tails = {name: deployment.airflow.log(name)[-3000:] for name in ("scheduler", "triggerer")}
    failed = [ti for ti in tis if ti["state"] == "failed" and ti["try_number"]]
    if failed:
        ti = failed[0]
        with contextlib.suppress(requests.RequestException):
            log = deployment.airflow.task_log(run_id, ti["task_id"], ti["map_index"], ti["try_number"], dag_id)
            tails[f"{ti['task_id']}[{ti['map_index']}] try {ti['try_number']}"] = log[-3000:]
    tis = [(ti["task_id"], ti["map_index"], ti["state"]) for ti in tis]
    return f"tasks: {tis}\n" + "\n".join(f"--- {name}\n{tail}" for name, tail in tails.items())


@contextlib.contextmanager
def deploy(
    root: Path,
    venv: Path,
    aws: AwsEndpoint,
    s3: Any,
    celery: bool = False,
    local_commands: dict[str, Any] | None = None,
) -> Iterator[Deployment]:
    """Postgres, Redis if ``celery``, and Airflow on them: a deployment ready for runs.

    :param local_commands: turn the local backend on with these commands, and allow requests to
        read and write ``root/local-data/`` (``file://``)
    """
    folder = root / "local-data"
    local_data = local_commands is not None
    prefixes = (f"s3://{BUCKET}/", *([f"file://{folder}/"] if local_data else []))
    with contextlib.ExitStack() as stack:
        start = time.monotonic()
        database = stack.enter_context(postgres())
        broker = stack.enter_context(redis(root)) if celery else None
        request_file = root / "form-defaults.json"  # the trigger form starts from it (the browser test)
        request_file.write_text(json.dumps(sagemaker_request("form-default", n_splits=3, seconds=2)))
        settings = Settings(broker, prefixes, local_commands or {})
        deployed = stack.enter_context(airflow(root, venv, database, aws.url, request_file, settings))
        folder.mkdir(exist_ok=True)
        timings = {"start_seconds": time.monotonic() - start}
        yield Deployment(deployed, aws, s3, timings, folder if local_data else None)
