"""Build the Amazon MWAA bundle: plugins.zip (the wheel), requirements.txt, the DAG.

    make mwaa          (or: .venv/bin/python deploy/mwaa/build.py [--airflow 3.3.1] [--python 3.12])

Writes build/mwaa/: plugins.zip holding the airflow-smx wheel at its top level (MWAA unpacks it
to /usr/local/airflow/plugins, where requirements.txt's --find-links finds it), requirements.txt
pinned to the wheel's version under Airflow's constraints for MWAA's Airflow and Python, and
dags/smx_cross_validation.py. Upload the three to the environment's S3 bucket; attach
deploy/mwaa/iam-policy.json (placeholders filled in) to the environment's execution role.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def build(out: Path, airflow: str, python: str) -> dict[str, Path]:
    if out.exists():
        shutil.rmtree(out)
    wheels = out / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(ROOT)],
        check=True,
    )
    (wheel,) = wheels.glob("airflow_smx-*.whl")
    version = wheel.name.split("-")[1]
    plugins = out / "plugins.zip"
    with zipfile.ZipFile(plugins, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(wheel, wheel.name)
    requirements = out / "requirements.txt"
    text = (HERE / "requirements.txt.in").read_text()
    requirements.write_text(
        text.replace("@AIRFLOW_VERSION@", airflow).replace("@PYTHON_VERSION@", python).replace("@VERSION@", version)
    )
    dags = out / "dags"
    dags.mkdir()
    shutil.copy(ROOT / "dags" / "smx_cross_validation.py", dags)
    shutil.rmtree(wheels)
    return {"plugins": plugins, "requirements": requirements, "dag": dags / "smx_cross_validation.py"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--airflow", default="3.3.1", help="the environment's Airflow version")
    parser.add_argument("--python", default="3.12", help="the environment's Python version")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "mwaa")
    args = parser.parse_args()
    for name, path in build(args.out, args.airflow, args.python).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
