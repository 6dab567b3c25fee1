"""Start Airflow on this machine with the DAG loaded, to trigger it from the UI form.

    make airflow     (or: .venv/bin/python examples/run_airflow.py)

Runs `airflow standalone` (api-server, scheduler, dag-processor, triggerer) with the demo's
Airflow home (.demo/airflow, SQLite), the venv's bin first on PATH, and the demo data written.
Open http://localhost:8080, log in as admin (the password is printed, and kept in
.demo/airflow/simple_auth_manager_passwords.json.generated) and trigger smx_cross_validation:
its form starts from the demo request (examples/local-demo.json), ready to run or to change. Ctrl-C stops every part: Airflow runs in
its own process group, which is ended as a whole.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_demo import DEMO, demo_conf, demo_environment, write_dataset

STOP_GRACE_SECONDS = 20


def main() -> int:
    write_dataset(DEMO / "data" / "breast_cancer.csv")
    port = os.environ.get("PORT", "8080")
    env = demo_environment(DEMO) | {
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__API__PORT": port,
        # tasks report to the api-server's execution API, which listens on that same port
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
        # the trigger form starts from the demo request: trigger it as it is, or change a field
        "AIRFLOW__SMX__REQUEST_FILE": str(DEMO / "local-demo-conf.json"),
    }
    conf_file = DEMO / "local-demo-conf.json"
    conf_file.write_text(json.dumps(demo_conf(DEMO), indent=2))
    print(f"Airflow home: {DEMO / 'airflow'}; the trigger form starts from the demo request {conf_file}")
    command = str(Path(sys.executable).parent / "airflow")
    subprocess.run([command, "db", "migrate"], env=env, check=True, capture_output=True)
    # fold tasks wait in the pool; without it they would never be scheduled
    subprocess.run([command, "smx", "setup-pool"], env=env, check=True)
    airflow = subprocess.Popen([command, "standalone"], env=env, start_new_session=True)
    try:
        return airflow.wait()
    except KeyboardInterrupt:
        return stop(airflow)


def stop(process: subprocess.Popen) -> int:
    """End the whole group (scheduler and triggerer outlive a signal to the parent alone)."""
    os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return 0
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # a SIGTERM to this script stops Airflow as Ctrl-C does


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
