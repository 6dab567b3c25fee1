"""The package is an Airflow provider: Airflow finds it through its entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import distribution, entry_points
from pathlib import Path

import pytest

from tests.versions import PROVIDER_CLI

ROOT = Path(__file__).parent.parent


def test_entry_point_names_the_distribution():
    (entry,) = [e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("airflow_smx")]
    info = entry.load()()
    assert info["package-name"] == distribution("airflow-smx").metadata["Name"]


def test_airflow_lists_the_provider(tmp_path):
    env = {
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PATH": str(Path(sys.executable).parent),
    }
    result = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "providers", "get", "airflow-smx"],
        capture_output=True, text=True, env=env, timeout=180, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "airflow-smx" in result.stdout


def test_the_core_and_the_standalone_command_do_not_import_airflow():
    """Every module of airflow_smx.core, and `python -m airflow_smx check|split`, run without Airflow."""
    code = (
        "import importlib, pkgutil, sys, airflow_smx.core, airflow_smx.cli.main\n"
        "for m in pkgutil.walk_packages(airflow_smx.core.__path__, 'airflow_smx.core.'):\n"
        "    importlib.import_module(m.name)\n"
        "assert airflow_smx.cli.main.main(['check', 'examples/smx_validator_sample.json']) == 0\n"
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout[-2000:] + result.stderr


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(
            ["airflow", "smx", "setup-pool"],
            marks=pytest.mark.skipif(not PROVIDER_CLI, reason="Airflow loads providers' commands from 3.2 on"),
            id="airflow-smx-setup-pool",
        ),
        pytest.param(["python", "-m", "airflow_smx", "setup-pool"], id="python-m-airflow_smx"),
    ],
)
def test_setup_pool_creates_a_pool_that_counts_deferred_tasks(airflow_db, command, request):
    name = f"ml-{request.node.callspec.id}"  # each command creates its own pool in the session's database
    env = {**os.environ, "AIRFLOW__SMX__POOL": name}
    binary = str(Path(sys.executable).parent / command[0])
    first = subprocess.run([binary, *command[1:], "--slots", "6"], capture_output=True, text=True, timeout=180, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"created pool {name} with 6 slots, counting deferred tasks" in first.stdout
    again = subprocess.run([binary, *command[1:]], capture_output=True, text=True, timeout=180, env=env)
    assert "exists (6 slots, counting deferred tasks)" in again.stdout
    airflow = str(Path(sys.executable).parent / "airflow")
    listed = subprocess.run([airflow, "pools", "get", name, "-o", "json"], capture_output=True, text=True, timeout=180)
    # Airflow 3.2 logs alembic's plugin set-up on stdout before the JSON line
    (pool,) = json.loads(listed.stdout.strip().splitlines()[-1])
    assert pool["slots"] == "6" or pool["slots"] == 6
    assert str(pool["include_deferred"]).lower() == "true"
