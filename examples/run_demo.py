"""The one-command demo: 5-fold cross-validated training on this machine, no AWS.

    make demo        (or: .venv/bin/python examples/run_demo.py)

Writes scikit-learn's bundled breast-cancer data as CSV (label first, no header) under .demo/,
initializes an Airflow home on SQLite there, runs the smx_cross_validation DAG with
examples/local-demo.json (stratified 5-fold, seed 42, local backend, examples/train_sklearn.py)
through `airflow dags test`, then prints the per-fold table, the gate's decision (against the
previous demo run, from the second on), the refit model's registered version, and where
cv_result.json and cv_report.html are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / ".demo"


def write_dataset(path: Path) -> Path:
    """Breast cancer (569 rows, 30 features, 2 classes) as label,features... with exact float reprs."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = (",".join([str(int(y)), *(repr(float(v)) for v in x)]) for x, y in zip(data.data, data.target, strict=True))
    path.write_text("\n".join(rows) + "\n")
    return path


def demo_conf(demo: Path) -> dict:
    text = (REPO / "examples" / "local-demo.json").read_text()
    return json.loads(text.replace("@DEMO_DIR@", str(demo)))


def local_commands(python: str = sys.executable) -> str:
    """The demo deployment's [smx] local_commands: the one command its requests may run, by name."""
    return json.dumps({"sklearn-example": [python, str(REPO / "examples" / "train_sklearn.py")]})


def demo_environment(demo: Path) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "AIRFLOW_HOME": str(demo / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__SMX__ALLOWED_PREFIXES": json.dumps([(demo).as_uri()]),
        "AIRFLOW__SMX__AWS_CONN_ID": "",
        "AIRFLOW__SMX__LOCAL_COMMANDS": local_commands(),
    }


def main() -> int:
    airflow = str(Path(sys.executable).parent / "airflow")
    write_dataset(DEMO / "data" / "breast_cancer.csv")
    env = demo_environment(DEMO)
    print(f"Airflow home: {DEMO / 'airflow'} (SQLite); data: {DEMO / 'data' / 'breast_cancer.csv'}")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    conf = json.dumps(demo_conf(DEMO))
    log = DEMO / "dags-test.log"
    print(f"Running smx_cross_validation (stratified 5-fold, seed 42, local backend); log: {log}")
    with log.open("w") as out:
        run = subprocess.run(
            [airflow, "dags", "test", "smx_cross_validation", "-c", conf], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    reports = sorted((DEMO / "runs").glob("*/results/cv_report.txt"), key=lambda p: p.stat().st_mtime)
    if run.returncode != 0 or not reports:
        print(f"The run failed; see {log}", file=sys.stderr)
        return 1
    print()
    print(reports[-1].read_text())
    summary = json.loads((reports[-1].parent / "cv_result.json").read_text())["summary"]
    for name, metric in summary["metrics"].items():
        (low, high), (honest_low, honest_high) = metric["ci95"], metric["ci95_corrected"]
        print(
            f"{name}: {metric['mean']:.4f} +/- {metric['std']:.4f} (n={metric['n']}); 95% CI "
            f"{honest_low:.4f} to {honest_high:.4f} corrected for overlapping folds "
            f"({low:.4f} to {high:.4f} if folds were independent)"
        )
    model = summary.get("model")
    if model:
        print(
            f"\nfinal model (refit on every record but the hold-out): registered as {model['group']} "
            f"version {model['version']} ({model['approval_status']}): {model['arn']}"
        )
    print(f"\ncv_result.json: {reports[-1].parent / 'cv_result.json'}")
    print(f"cv_report.html: {reports[-1].parent / 'cv_report.html'} (open it in a browser)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
