"""Running the smx_cross_validation DAG through dag.test() against moto: the harness of the DAG tests.

A simulator thread plays SageMaker: each job stays InProgress for a moment (so fold tasks
defer), then ends as the test decided, with per-fold metrics, billing or a FailureReason.
The ``run_dag`` fixture (conftest.py) configures the deployment's ``[smx]`` options and runs it.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

from airflow_smx.core.naming import FINAL

ROOT = Path(__file__).parent.parent
ROLE = "arn:aws:iam::123456789012:role/sagemaker"
ACCURACY = [0.81, 0.84, 0.79, 0.86, 0.80]


class Simulator(threading.Thread):
    def __init__(self, sagemaker, outcomes):
        super().__init__(daemon=True)
        self.sagemaker, self.outcomes, self.seen, self.running = sagemaker, outcomes, {}, True

    def run(self):
        while self.running:
            backend = getattr(self.sagemaker, "backend", None)
            for name, job in list(backend.training_jobs.items()) if backend else []:
                if job.training_job_status != "InProgress":
                    continue
                first = self.seen.setdefault(name, time.monotonic())
                if time.monotonic() - first > 0.5:
                    # ...-fold2 or ...-fold2-r2; the refit's ...-final (-r2) is told apart as fold -1
                    fold = FINAL if re.search(r"-final(-r\d+)?$", name) else int(re.findall(r"fold(\d+)", name)[-1])
                    self.sagemaker.finish(name, **self.outcomes(fold))
            time.sleep(0.1)


def conf(**overrides):
    base = {
        "name": "iris-xgboost",
        "input": {"uri": "s3://bucket/data/train.jsonl", "label": "class"},
        "output_uri": "s3://bucket/out",
        "cv": {"strategy": "stratified", "n_splits": 5, "random_state": 7},
        "backend": "sagemaker",
        "training": {
            "AlgorithmSpecification": {"TrainingImage": "xgboost:1", "TrainingInputMode": "File"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600},
            "HyperParameters": {"num_class": "${num_classes}", "rows": "${num_training_samples}"},
        },
        "metrics": {"objective": "validation:accuracy"},
    }
    return {**base, **overrides}


def result_of(s3, prefix="out/"):
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="bucket", Prefix=prefix).get("Contents", [])]
    (key,) = [k for k in keys if k.endswith("results/cv_result.json")]
    return json.loads(s3.get_object(Bucket="bucket", Key=key)["Body"].read()), keys


def states(run):
    return {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}


def extra_links(run, dag) -> dict[tuple[str, int], dict[str, str]]:
    """Each task's extra links, formatted from the XCom its task pushed for them, as the UI would
    (the UI's own path needs the API server: the e2e deployment checks it)."""
    from airflow.utils.session import create_session

    from tests.versions import XComModel

    keys = {link.key for task in dag.tasks for link in task.operator_extra_links}
    with create_session() as session:  # Airflow 2 loads a value decoded; 3 as its JSON text, or decoded
        rows = session.query(XComModel).filter(XComModel.run_id == run.run_id, XComModel.key.in_(keys))
        pushed = {
            (x.task_id, x.map_index, x.key): json.loads(x.value) if isinstance(x.value, (str, bytes)) else x.value
            for x in rows
        }
    links = {}
    for ti in run.get_task_instances():
        for link in dag.get_task(ti.task_id).operator_extra_links:
            value = pushed.get((ti.task_id, ti.map_index, link.key))
            if value:
                links.setdefault((ti.task_id, ti.map_index), {})[link.name] = link.format_link(**value)
    return links
