"""The version matrix: airflow-smx on every Amazon MWAA image and on the newest Airflow.

    make matrix        (or: python3 scripts/matrix.py [--only 3.0.6] [--jobs 2] [--build-only] [-- pytest args])

By default the four MWAA images; ``--only newest`` for the newest Airflow.

Each entry is installed the way its users get it, with Python 3.12 (what MWAA runs):

1. Airflow and the providers MWAA's bootstrap installs (images/airflow/V/bootstrap/02-airflow/ in
   aws/amazon-mwaa-docker-images) under the image's constraints file (constraints/mwaa-V.txt); for
   the newest Airflow, under our constraints.txt. This venv, plus pytest and moto fitted to the
   same pins, is cached in ~/.cache/airflow-smx/matrix/ by a hash of everything that goes into it.
2. airflow-smx as MWAA's startup installs a user's requirements.txt: the bundle of
   ``deploy/mwaa/build.py --airflow V`` (plugins.zip unpacked where requirements.txt points),
   ``pip install -r requirements.txt``. The newest Airflow installs the wheel under constraints.txt.
3. A check that step 2 changed the version of nothing step 1 installed: MWAA refuses that.
4. The DAG-level tests (dag.test() against moto, the operators, the local backend, the
   security rules, the provider's CLI) in that venv, but for VERSION_BLIND ones.

Exit status 0 when every entry passes; a table of the figures at the end.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# venvs are kept by what goes into them (see base_venv), outside the clone: every clone reuses them
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "airflow-smx" / "matrix"
DAG_TESTS = [
    "tests/test_dag.py",
    "tests/test_sagemaker_fold_operator.py",
    "tests/test_local_backend.py",
    "tests/test_security.py",
    "tests/test_provider.py",
    # the fold assignment redraws scikit-learn's random numbers in compact arrays: it is proven
    # against each image's own scikit-learn (1.7 to 1.9) and numpy (1.26 and 2.x)
    "tests/test_folds_sklearn.py",
    # an S3 input is fetched with fsspec's cat_ranges/get and parts put back: each image's s3fs
    "tests/test_folds_s3.py",
    # the split's Processing job: the stock processing operator, hook and trigger of each amazon
    "tests/test_split_offload.py",
]
# Decisions made in plain Python (airflow_smx.core) that reach Airflow only through the same
# task code the kept tests run: `make test` runs them on the newest Airflow; here they would only
# add minutes per version (the gate's three runs alone take 2.5 minutes on 3.2.1's dag.test()).
VERSION_BLIND = [
    "tests/test_dag.py::test_min_successful_folds_lets_the_run_pass",
    "tests/test_dag.py::test_a_misspelt_form_field_is_refused_not_ignored",
    "tests/test_dag.py::test_a_dry_run_reports_folds_job_names_and_spend_and_writes_nothing_else",
    "tests/test_dag.py::test_the_gate_promotes_a_first_run_stops_a_worse_one_and_promotes_a_better_one",
    "tests/test_dag.py::test_a_named_baseline_that_is_not_there_is_refused_before_any_job",
    "tests/test_split_offload.py::test_a_bad_input_fails_the_offloaded_split_naming_the_line_and_leaves_no_folds",
]
TOOLS = ["pytest", "moto[server]"]
LAYOUT = "2"  # what base_venv leaves in a venv: change it when that changes, so cached venvs are rebuilt


@dataclass(frozen=True)
class Entry:
    airflow: str
    constraints: Path
    mwaa: bool  # an MWAA image (installed from its bundle) or the newest Airflow (from the wheel)

    @property
    def packages(self) -> list[str]:
        """What MWAA's bootstrap installs that airflow-smx meets: Airflow, the amazon provider (with
        aiobotocore, for deferral), the standard provider (3.x), Airflow core's gunicorn extra (3.2+).
        Left out: the postgres and fab providers, celery[sqs], pycurl, watchtower and the like, which
        serve MWAA's own plumbing and need C headers this machine lacks."""
        if not self.mwaa:  # the newest Airflow as our constraints.txt pins it (MWAA's extras are not in it)
            return [f"apache-airflow=={self.airflow}", "apache-airflow-providers-amazon[aiobotocore]"]
        major_minor = tuple(int(p) for p in self.airflow.split(".")[:2])
        packages = [f"apache-airflow[celery,statsd]=={self.airflow}", "apache-airflow-providers-amazon[aiobotocore]"]
        if major_minor >= (3, 0):
            packages.append("apache-airflow-providers-standard")
        if major_minor >= (3, 2):
            packages.append(f"apache-airflow-core[gunicorn]=={self.airflow}")
        return packages


ENTRIES = {
    **{v: Entry(v, ROOT / "constraints" / f"mwaa-{v}.txt", True) for v in ("2.11.2", "3.0.6", "3.2.1", "3.3.1")},
    "newest": Entry("3.3.2", ROOT / "constraints.txt", False),
}
# What `make matrix` (and CI) runs: the MWAA images. `make test` already runs every test on the
# newest Airflow under constraints.txt; `--only newest` adds its Python 3.12 venv from the wheel.
DEFAULT = ["2.11.2", "3.0.6", "3.2.1", "3.3.1"]


def python312() -> str:
    found = sorted(glob.glob("/root/.pyenv/versions/3.12.*/bin/python3.12")) or [shutil.which("python3.12") or ""]
    if not found[-1]:
        sys.exit("the matrix needs Python 3.12 (MWAA's): install it, e.g. through pyenv")
    return found[-1]


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def names(lines: list[str]) -> dict[str, str]:
    """name (normalised) -> the whole requirement line, for lines pinning ``name==version``."""
    pins = {}
    for line in lines:
        match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==", line.strip())
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = line.strip()
    return pins


def freeze(venv: Path) -> dict[str, str]:
    lines = run([str(venv / "bin" / "python"), "-m", "pip", "freeze", "--all"]).stdout.splitlines()
    return {name: line for name, line in names(lines).items() if name != "airflow-smx"}


def tool_constraints(entry: Entry, dest: Path) -> Path:
    """The entry's pins, and ours for what they leave open (moto's own dependencies, pytest)."""
    theirs = entry.constraints.read_text().splitlines()
    pinned = names(theirs)
    ours = names((ROOT / "constraints.txt").read_text().splitlines())
    dest.write_text("\n".join([*theirs, *(line for name, line in ours.items() if name not in pinned)]) + "\n")
    return dest


def base_venv(entry: Entry) -> Path:
    """Step 1, cached: Airflow as the image has it, and the test tools under the same pins."""
    python = python312()
    inputs = [python, entry.constraints.read_text(), (ROOT / "constraints.txt").read_text(), *entry.packages, *TOOLS]
    key = "\n".join([*inputs, LAYOUT])
    venv = CACHE / f"{entry.airflow}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if (venv / ".installed").exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    run([python, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run([*pip, "--constraint", str(entry.constraints), *entry.packages])
    image = freeze(venv)
    run([*pip, "--constraint", str(tool_constraints(entry, venv / "tool-constraints.txt")), *TOOLS])
    with_tools = freeze(venv)
    changed = unchanged_or_diff(image, with_tools)
    if changed:
        raise RuntimeError(f"pytest and moto would change the image's packages: {changed}")
    (venv / "image.txt").write_text("\n".join(image.values()) + "\n")
    (venv / "tools.txt").write_text("\n".join(with_tools[name] for name in with_tools.keys() - image.keys()) + "\n")
    (venv / ".installed").touch()
    return venv


def unchanged_or_diff(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return [f"{before[name]} -> {after.get(name, 'removed')}" for name in before if after.get(name) != before[name]]


def install_package(entry: Entry, venv: Path, work: Path) -> list[str]:
    """Step 2 and 3: airflow-smx as its users install it; returns what it added to the image."""
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "uninstall", "--quiet", "--yes", "airflow-smx"], capture_output=True)
    image = names((venv / "image.txt").read_text().splitlines())  # as step 1 left it
    tools = names((venv / "tools.txt").read_text().splitlines()).keys()
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if entry.mwaa:
        bundle = work / "mwaa"
        run(
            [
                sys.executable,
                str(ROOT / "deploy" / "mwaa" / "build.py"),
                "--airflow",
                entry.airflow,
                "--out",
                str(bundle),
            ]
        )
        plugins = work / "plugins"  # where MWAA unpacks plugins.zip: /usr/local/airflow/plugins
        with zipfile.ZipFile(bundle / "plugins.zip") as archive:
            archive.extractall(plugins)
        requirements = (bundle / "requirements.txt").read_text().replace("/usr/local/airflow/plugins", str(plugins))
        (work / "requirements.txt").write_text(requirements)
        run([*pip, "-r", str(work / "requirements.txt")])
    else:
        run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(work), str(ROOT)])
        run([*pip, "--constraint", str(entry.constraints), str(next(work.glob("airflow_smx-*.whl")))])
    after = freeze(venv)
    changed = unchanged_or_diff(image, after)
    if changed:
        raise RuntimeError(f"installing airflow-smx changed the image's packages: {changed}")
    return sorted(after[name] for name in after.keys() - image.keys() - tools)


def run_tests(venv: Path, pytest_args: list[str]) -> tuple[bool, str, str]:
    """The DAG-level tests in ``venv``: (passed, pytest's last line, its output)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIRTUAL_ENV"))}
    # old Airflow versions warn by the thousand (deprecations of their own): the failures are what matters
    cmd = [str(venv / "bin" / "python"), "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:warnings", "-q"]
    cmd += ["-m", "not e2e", "--tb=short"]
    cmd += [f"--deselect={test}" for test in VERSION_BLIND]
    result = subprocess.run([*cmd, *DAG_TESTS, *pytest_args], cwd=ROOT, env=env, capture_output=True, text=True)
    lines = result.stdout.strip().splitlines()
    return result.returncode == 0, lines[-1] if lines else "no output", result.stdout + result.stderr[-2000:]


BUILDING = threading.Lock()


@dataclass
class Outcome:
    airflow: str
    built: float  # seconds to step 1 (0 when cached)
    total: float
    passed: bool
    summary: str
    output: str


def check(label: str, pytest_args: list[str], build_only: bool) -> Outcome:
    """One entry: steps 1 to 4 (1 alone with ``build_only``)."""
    entry, started = ENTRIES[label], time.monotonic()
    output = f"== Airflow {entry.airflow} ({'MWAA image' if entry.mwaa else 'newest'}, {entry.constraints.name})\n"
    work = ROOT / "build" / "matrix" / entry.airflow
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        venv = base_venv(entry)
        built = time.monotonic() - started
        if build_only:
            return Outcome(entry.airflow, built, built, True, f"built {venv}", output)
        with BUILDING:  # pip builds our wheel in the source tree (build/, *.egg-info): one at a time
            added = install_package(entry, venv, work)
        output += f"airflow-smx added to the image: {', '.join(added) or 'nothing but itself'}\n"
        passed, summary, printed = run_tests(venv, pytest_args)
        output += printed
    except RuntimeError as error:
        output += f"{error}\n"
        built, passed, summary = time.monotonic() - started, False, str(error).splitlines()[0][:80]
    return Outcome(entry.airflow, built, time.monotonic() - started, passed, summary, output)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=list(ENTRIES), help="run just these entries")
    parser.add_argument("--build-only", action="store_true", help="build (or find cached) the venvs; no tests")
    # an entry's tests keep about 2/3 of one core busy (the rest is waiting on moto and the simulated
    # jobs): two at a time on 2 cores take about 2/3 of the sequential time
    parser.add_argument("--jobs", type=int, default=1, help="entries tested at once (default 1)")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    args = parser.parse_args()
    labels = args.only or DEFAULT
    with ThreadPoolExecutor(max_workers=1 if args.build_only else args.jobs) as pool:
        outcomes = []
        for outcome in pool.map(lambda label: check(label, args.pytest_args, args.build_only), labels):
            sys.stdout.write(outcome.output)  # whole, in the entries' order: never interleaved
            sys.stdout.flush()
            outcomes.append(outcome)
    print("\n| Airflow | venv (s) | total (s) | result |\n| --- | --- | --- | --- |")
    for o in outcomes:
        print(f"| {o.airflow} | {o.built:.0f} | {o.total:.0f} | {'pass' if o.passed else 'FAIL'}: {o.summary} |")
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
