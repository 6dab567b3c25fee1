"""Build the Amazon MWAA bundle: plugins.zip (the wheel), requirements.txt, the DAG.

    make mwaa [AIRFLOW=2.11.2]     (or: .venv/bin/python deploy/mwaa/build.py [--airflow 3.3.1])

Writes build/mwaa/ for one MWAA image (default: the newest): plugins.zip holding the airflow-smx
wheel and the image's constraints file at its top level (MWAA unpacks it to
/usr/local/airflow/plugins), requirements.txt pinning the wheel's version under those constraints,
found there through --find-links, and dags/smx_cross_validation.py (one file for every image:
airflow_smx/compat.py absorbs the differences). Upload the three to the environment's S3 bucket;
attach deploy/mwaa/iam-policy.json (placeholders filled in) to the environment's execution role.

The constraints are the image's own (constraints/mwaa-V.txt, from aws/amazon-mwaa-docker-images),
shipped in plugins.zip rather than fetched: they are exactly what the image has installed, so pip
can add airflow-smx's few missing packages and change nothing of MWAA's.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
IMAGES = sorted((p.stem.removeprefix("mwaa-") for p in (ROOT / "constraints").glob("mwaa-*.txt")), key=Version)


def build(out: Path, airflow: str) -> dict[str, Path]:
    if out.exists():
        shutil.rmtree(out)
    wheels = out / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(ROOT)],
        check=True,
    )
    (wheel,) = wheels.glob("airflow_smx-*.whl")
    version = wheel.name.split("-")[1]
    constraints = ROOT / "constraints" / f"mwaa-{airflow}.txt"
    plugins = out / "plugins.zip"
    with zipfile.ZipFile(plugins, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(wheel, wheel.name)
        archive.write(constraints, constraints.name)
    requirements = out / "requirements.txt"
    text = (HERE / "requirements.txt.in").read_text()
    requirements.write_text(text.replace("@CONSTRAINTS@", constraints.name).replace("@VERSION@", version))
    dags = out / "dags"
    dags.mkdir()
    shutil.copy(ROOT / "dags" / "smx_cross_validation.py", dags)
    shutil.rmtree(wheels)
    return {"plugins": plugins, "requirements": requirements, "dag": dags / "smx_cross_validation.py"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--airflow", default=IMAGES[-1], choices=IMAGES, help="the environment's Airflow version")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "mwaa")
    args = parser.parse_args()
    for name, path in build(args.out, args.airflow).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
