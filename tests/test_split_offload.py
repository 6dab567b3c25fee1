"""The split as a SageMaker Processing job, above [smx] offload_bytes: the DAG waits for it and
gets the same folds, byte for byte, as a split in the worker; a bad input fails in the user's
terms; retries re-attach, kills stop. moto's Processing API holds the jobs; the test harness runs
each one on this machine as its container would (tests/sagemaker_fake.py)."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
import tempfile
import threading
import time
from collections import Counter

import pytest

from airflow_smx.compat import AirflowException, AirflowFailException
from airflow_smx.core.folds import offload, split_dataset
from airflow_smx.core.folds.records import largest_run, runs_of
from airflow_smx.core.request import CVSpec, InputSpec
from airflow_smx.dag.split import SplitDatasetOperator
from airflow_smx.triggers.sagemaker_fold import SageMakerFoldTrainingTrigger
from tests.dag_harness import ROOT, conf, extra_links, result_of, states
from tests.versions import DagBag, TaskDeferred

IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.4-2-cpu-py312"
OFFLOAD = {  # every split of at least 1 byte on SageMaker
    "AIRFLOW__SMX__OFFLOAD_BYTES": "1",
    "AIRFLOW__SMX__SPLIT_IMAGE": IMAGE,
    "AIRFLOW__SMX__SPLIT_CODE_URI": "s3://bucket/code/",
}


@pytest.fixture
def offloading(run_dag, sagemaker, s3, monkeypatch):
    """run_dag, every split offloaded, each job run by the harness."""
    for key, value in OFFLOAD.items():
        monkeypatch.setenv(key, value)
    s3.put_object(Bucket="bucket", Key="code/airflow_smx-0-py3-none-any.whl", Body=b"(the wheelhouse)")
    sagemaker.run_processing = True
    return run_dag


def objects(s3, prefix: str) -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket="bucket", Prefix=prefix).get("Contents", [])
    return {o["Key"][len(prefix) :]: s3.get_object(Bucket="bucket", Key=o["Key"])["Body"].read() for o in listed}


def test_an_offloaded_split_writes_what_the_worker_would_and_the_run_trains_on_it(offloading, sagemaker, s3):
    run = offloading(conf(cv={"strategy": "stratified", "n_splits": 5, "random_state": 7, "holdout": 0.1}))
    assert run.state == "success", states(run)
    (job,) = sagemaker.processing_creates
    assert job["name"].endswith("-split") and job["name"].startswith("crossvalidator-iris-xgboost-")
    assert job["app_specification"]["ImageUri"] == IMAGE
    command = json.dumps(job["app_specification"])  # the request travels as a document, never in a command
    assert "train.jsonl" not in command and "stratified" not in command
    assert sagemaker.harness_errors == []
    log = sagemaker.processing_logs[job["name"]]
    assert "split 200 records into 5 folds" in log, log
    # the parts were written on the volume sized for them (where the inputs lie), not in the image's /tmp
    volume = re.search(r"scratch space: (\S+/algo-1/processing/scratch),", log)
    assert volume and f"parts written on local disk in {volume[1]}/smx-parts-" in log, log

    summary = result_of(s3)[0]["summary"]
    folds_prefix = f"out/{summary['cv_run_id']}/folds/"
    theirs = objects(s3, folds_prefix)
    split_dataset(
        InputSpec(uri="s3://bucket/data/train.jsonl", label="class"),
        CVSpec(strategy="stratified", n_splits=5, random_state=7, holdout=0.1),
        "s3://bucket/here/folds",
        final=True,
    )
    ours = objects(s3, "here/folds/")
    assert theirs.keys() == ours.keys() and len(ours) > 10
    for key in ours:  # the parts byte for byte; the plan and manifests name their own folder
        assert theirs[key] == ours[key].replace(b"here/folds", folds_prefix.rstrip("/").encode()), key
    links = extra_links(run, DagBag(dag_folder=str(ROOT / "dags")).dags["smx_cross_validation"])
    console = "https://console.aws.amazon.com"
    assert links[("split_dataset", -1)] == {
        "SageMaker processing job": f"{console}/sagemaker/home?region=us-east-1#/processing-jobs/{job['name']}",
        "Processing job logs": f"{console}/cloudwatch/home?region=us-east-1#logsV2:log-groups/log-group/"
        f"$252Faws$252Fsagemaker$252FProcessingJobs$3FlogStreamNameFilter$3D{job['name']}",
    }
    trained = next(c for c in sagemaker.creates if c["name"].endswith("-fold0"))
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in trained["input_data_config"]}
    assert channels["validation"] == f"s3://bucket/{folds_prefix}part-00000.jsonl"


def test_a_bad_input_fails_the_offloaded_split_naming_the_line_and_leaves_no_folds(offloading, sagemaker, s3, printed):
    body = b'{"class": "a"}\n{"class": "b"}\n{"class": \n{"class": "a"}\n' * 10
    s3.put_object(Bucket="bucket", Key="data/train.jsonl", Body=body)
    run = offloading(conf(cv={"strategy": "kfold", "n_splits": 2}))
    assert run.state == "failed"
    assert states(run)[("split_dataset", -1)] == "failed"
    assert len(sagemaker.processing_creates) == 1  # a bad input is final: no retry starts another job
    shown = printed()
    assert "cannot split: line 3: malformed JSON" in shown, shown  # as a split in the worker says it
    assert not [k for k in objects(s3, "out/") if "/folds/" in k]
    assert sagemaker.creates == []


def split_task() -> SplitDatasetOperator:
    return SplitDatasetOperator(task_id="split_dataset", aws_conn_id=None, check_interval=1)


class Context(dict):
    """What the operator reads of a task's context: check_request's result, its try numbers."""

    def __init__(self, run: dict, try_number: int = 1, retries: int = 3):
        ti = type("TI", (), {"xcom_pull": lambda _, task_ids: run, "try_number": try_number, "max_tries": retries})
        super().__init__(ti=ti())


def checked_run(s3) -> dict:
    from airflow_smx.core.request import parse_request

    body = "".join(json.dumps({"class": f"c{i % 3}"}) + "\n" for i in range(60))
    s3.put_object(Bucket="bucket", Key="data/train.jsonl", Body=body.encode())
    return checked(parse_request(conf(cv={"strategy": "kfold", "n_splits": 3})), "iris-xgboost-20261202-120000-abcdef")


def checked(request, cv_run_id: str) -> dict:
    """check_request's result for ``request``, as the split task reads it."""
    return {
        "request": request.model_dump(mode="json"),
        "original": {},
        "cv_run_id": cv_run_id,
        "key": "abcdef",
        "when": "2026-12-02T12:00:00+00:00",
        "run_id": "manual__1",
    }


@pytest.fixture
def offload_settings(s3, sagemaker, monkeypatch):
    from tests.dag_harness import ROLE

    for key, value in {**OFFLOAD, "AIRFLOW__SMX__ROLE_ARN": ROLE, "AIRFLOW__SMX__AWS_CONN_ID": ""}.items():
        monkeypatch.setenv(key, value)
    return checked_run(s3)


def test_a_retry_reattaches_to_the_running_split_and_reuses_the_completed_one(offload_settings, sagemaker, s3):
    run = offload_settings
    with pytest.raises(TaskDeferred) as deferred:
        split_task().execute(Context(run))
    name = deferred.value.trigger.job_name
    assert deferred.value.trigger.job_type == "Processing"
    assert deferred.value.timeout.total_seconds() == 14400 + 1800
    with pytest.raises(TaskDeferred) as again:  # the worker died; the retry finds the job running
        split_task().execute(Context(run, try_number=2))
    assert again.value.trigger.job_name == name and len(sagemaker.processing_creates) == 1

    sagemaker.run_locally(sagemaker.backend.processing_jobs[name])
    folds = split_task().execute_complete(Context(run), {"status": "success"})
    assert len(folds) == 3 and folds[0]["config"]["TrainingJobName"].endswith("-fold0")
    assert split_task().execute(Context(run, try_number=2)) == folds  # re-used, not split again
    assert len(sagemaker.processing_creates) == 1
    with pytest.raises(TaskDeferred) as cleared:  # a clear splits again: the input may have changed
        split_task().execute(Context(run, try_number=5, retries=7))
    assert cleared.value.trigger.job_name == f"{name}-r2"


def test_a_missing_input_fails_for_good_in_the_users_terms(offload_settings, sagemaker):
    run = offload_settings
    run["request"]["input"]["uri"] = "s3://bucket/data/nothing-here.jsonl"
    with pytest.raises(AirflowFailException, match=r"cannot split: .*nothing-here\.jsonl"):
        split_task().execute(Context(run))
    assert sagemaker.processing_creates == []


def test_killing_the_task_or_its_trigger_stops_the_split_job(offload_settings, sagemaker):
    task = split_task()
    with pytest.raises(TaskDeferred) as deferred:
        task.execute(Context(offload_settings))
    task.on_kill()
    name = deferred.value.trigger.job_name
    assert sagemaker.stops == [name]
    assert sagemaker.backend.processing_jobs[name].processing_job_status == "Stopped"

    cleared = split_task()  # a user's clear: a fresh try starts attempt 2
    with pytest.raises(TaskDeferred) as second:
        cleared.execute(Context(offload_settings, try_number=5, retries=7))
    assert second.value.trigger.job_name == f"{name}-r2"
    trigger = SageMakerFoldTrainingTrigger(
        job_name=f"{name}-r2", job_type="Processing", waiter_delay=1, waiter_max_attempts=3, aws_conn_id=None
    )
    asyncio.run(trigger.on_kill())
    assert sagemaker.stops == [name, f"{name}-r2"]


def test_a_clear_waits_for_a_stopping_split_job_before_it_starts_the_next(offload_settings, sagemaker):
    """Killed, a job is Stopping for a while, and may still write into the run's folds: the clear's
    new attempt, which rewrites them, starts only once it has stopped (not attached to it either)."""
    with pytest.raises(TaskDeferred) as deferred:
        split_task().execute(Context(offload_settings))
    name = deferred.value.trigger.job_name
    job = sagemaker.backend.processing_jobs[name]
    job.processing_job_status = "Stopping"
    seen = sagemaker.describes[name]

    def stopped_once_the_task_waits() -> None:  # it looks again after its first look found it stopping
        while sagemaker.describes[name] < seen + 2:
            time.sleep(0.05)
        job.processing_job_status = "Stopped"

    threading.Thread(target=stopped_once_the_task_waits, daemon=True).start()
    with pytest.raises(TaskDeferred) as cleared:
        split_task().execute(Context(offload_settings, try_number=5, retries=7))
    assert cleared.value.trigger.job_name == f"{name}-r2"
    assert [c["name"] for c in sagemaker.processing_creates] == [name, f"{name}-r2"]


def test_a_refused_create_fails_only_the_try_and_its_retry_creates(offload_settings, sagemaker):
    sagemaker.refuse_creates = 1  # ResourceLimitExceeded: the account's instances are busy for now
    with pytest.raises(AirflowException, match="ResourceLimitExceeded creating the split's job") as refused:
        split_task().execute(Context(offload_settings))
    assert not isinstance(refused.value, AirflowFailException)  # the task's retries are for this
    with pytest.raises(TaskDeferred) as retried:
        split_task().execute(Context(offload_settings, try_number=2))
    assert sagemaker.backend.processing_jobs[retried.value.trigger.job_name].processing_job_status == "InProgress"


def test_the_job_installs_the_workers_versions_offline_and_refuses_others(tmp_path, monkeypatch):
    pins = offload.versions()
    command = offload.install_command(pins)
    assert "--no-index" in command and f"scikit-learn=={pins['scikit-learn']}" in command
    assert f"--no-deps airflow-smx=={pins['airflow-smx']}" in command  # not Airflow: the split never imports it
    document = tmp_path / "split.json"
    document.write_text(json.dumps({"versions": {**pins, "scikit-learn": "1.2.1"}}))
    assert offload.run(str(document)) == 2  # another scikit-learn could draw other folds: no split at all


def test_a_job_document_run_by_hand_splits_as_one_host_in_the_usual_temporary_folder(tmp_path):
    """``bench/split_job.sh`` runs the job's entry point on documents outside a container's layout."""
    data = tmp_path / "in.jsonl"
    data.write_text("".join(f'{{"id": {i}, "class": "c{i % 3}"}}\n' for i in range(60)))
    spec, cv = InputSpec(uri=f"file://{data}", label="class"), CVSpec(strategy="stratified", n_splits=3)
    document = tmp_path / "job.json"
    split = f"file://{tmp_path}/split"
    document.write_text(
        json.dumps(offload.document(spec, cv, f"{split}/folds", split, "by-hand", assemble_train=False, final=True))
    )
    before = tempfile.gettempdir()
    assert offload.run(str(document)) == 0
    assert json.loads((tmp_path / "split/folds/plan.json").read_text())["n_records"] == 60
    assert tempfile.gettempdir() == before  # only a container's document moves it to the job's volume


def test_the_teardown_stops_a_split_job_its_cancelled_task_left_running(offload_settings, sagemaker):
    from airflow_smx.dag.split import stop_unfinished_split

    with pytest.raises(TaskDeferred) as deferred:
        split_task().execute(Context(offload_settings))
    name = deferred.value.trigger.job_name
    assert stop_unfinished_split(offload_settings, None) == name
    assert stop_unfinished_split(offload_settings, None) is None  # stopped already: nothing to do
    assert sagemaker.stops == [name]


def test_where_a_request_splits_auto_by_size_or_as_it_asks(offload_settings, sagemaker, s3, monkeypatch):
    monkeypatch.setenv("AIRFLOW__SMX__OFFLOAD_BYTES", str(10**9))  # the 60-record input is far below
    run = offload_settings
    assert len(split_task().execute(Context(run))) == 3 and sagemaker.processing_creates == []  # in the worker
    asked = {**run, "request": {**run["request"], "split_on": "sagemaker"}, "cv_run_id": run["cv_run_id"] + "-2"}
    with pytest.raises(TaskDeferred):
        split_task().execute(Context(asked))
    (job,) = sagemaker.processing_creates
    cluster = sagemaker.processing_requests[job["name"]]["ProcessingResources"]["ClusterConfig"]
    assert cluster == {"InstanceCount": 1, "InstanceType": "ml.m5.2xlarge", "VolumeSizeInGB": 30}
    assert offload.volume_gb(10**12, largest=100) == 100  # a deployment's bound holds; the job then streams


def test_each_instance_has_room_for_its_run_of_whole_files_not_the_average_share():
    """A run holds whole files, so a large file makes its instance's share larger than the average."""
    gib = 2**30
    sizes = [gib] * 4 + [40 * gib] + [gib] * 4
    assert runs_of(sizes, 3) == [0, 4, 5, 9]  # the large file alone: no run can hold less
    assert largest_run(sizes, 3) == 40 * gib  # the average share is 16 GiB
    assert offload.volume_gb(largest_run(sizes, 3), largest=1000) == 110


def test_split_on_sagemaker_is_refused_where_the_deployment_has_no_split_job(run_dag, printed):
    run = run_dag({**conf(), "split_on": "sagemaker"})
    assert run.state == "failed" and states(run)[("check_request", -1)] == "failed"
    assert "split_on: sagemaker needs a SageMaker request and the deployment's split job" in printed()


def test_nothing_of_the_request_reaches_the_jobs_command_line(offload_settings, sagemaker, s3):
    """The attack: an input URI (allowed prefix and all) written as a shell command. The job's
    command is the deployment's alone; the URI travels in the document, read as data."""
    hostile = "s3://bucket/data/$(touch /tmp/pwned);x`id`.jsonl"
    s3.put_object(Bucket="bucket", Key=hostile.removeprefix("s3://bucket/"), Body=b'{"class": "a"}\n' * 9)
    plain = offload_settings
    attacked = {**plain, "cv_run_id": plain["cv_run_id"] + "-2", "key": "fedcba"}
    attacked["request"] = {**plain["request"], "input": {**plain["request"]["input"], "uri": hostile}}
    for run in (plain, attacked):
        with pytest.raises(TaskDeferred):
            split_task().execute(Context(run))
    first, second = (sagemaker.processing_requests[c["name"]] for c in sagemaker.processing_creates)
    assert first["AppSpecification"] == second["AppSpecification"]
    document = s3.get_object(Bucket="bucket", Key=f"out/{attacked['cv_run_id']}/split/request/split.json")
    assert json.loads(document["Body"].read())["input"]["uri"] == hostile


def parted_run(s3, uri: str, n_parts: int, records: int = 900, **cv) -> dict:
    """check_request's result for a CSV prefix of ``n_parts`` files (every third gzip, a header in each)."""
    from airflow_smx.core.request import parse_request

    bucket_prefix = uri.removeprefix("s3://bucket/")
    lines = [f"{i},c{(i * 7) % 3},p{i % 41}" for i in range(records)]
    cut = [round(len(lines) * i / n_parts) for i in range(n_parts + 1)]
    for i in range(n_parts):
        body = "".join(line + "\n" for line in ["id,class,patient", *lines[cut[i] : cut[i + 1]]]).encode()
        gz = i % 3 == 0
        s3.put_object(
            Bucket="bucket",
            Key=f"{bucket_prefix}part-{i:05d}.csv{'.gz' if gz else ''}",
            Body=gzip.compress(body) if gz else body,
        )
    spec = {"uri": uri, "label": "class", "group": "patient", "csv_header": True}
    return checked(parse_request(conf(input=spec, cv=cv, refit=True)), "parts-20261202-120000-abcdef")


def test_several_instances_split_a_many_file_input_as_one_machine_does(
    offload_settings, sagemaker, s3, monkeypatch, caplog
):
    """Three instances, each a run of the 8 files: the plan and every part, byte for byte, are
    what one machine writes (stratified by class, grouped by patient, a hold-out, the refit's)."""
    monkeypatch.setenv("AIRFLOW__SMX__SPLIT_INSTANCE_COUNT", "3")
    cv = {"strategy": "stratified_group", "n_splits": 4, "random_state": 3, "holdout": 0.1}
    run = parted_run(s3, "s3://bucket/exports/table/", 8, **cv)
    with pytest.raises(TaskDeferred) as deferred:
        split_task().execute(Context(run))
    name = deferred.value.trigger.job_name
    cluster = sagemaker.processing_requests[name]["ProcessingResources"]["ClusterConfig"]
    assert cluster["InstanceCount"] == 3
    caplog.set_level(logging.INFO, logger="werkzeug")  # moto's server logs every request
    caplog.clear()
    sagemaker.run_locally(sagemaker.backend.processing_jobs[name])
    # each file is read by the instance whose run holds it, once to scan and once to write; the
    # first file's head by every instance too (the format, the header). No instance reads
    # another's run, for the checksum or to tell gzip from text.
    gets = Counter(re.findall(r'"GET /bucket/(exports/table/[^ ?]+) ', caplog.text))
    keys = sorted(gets)
    assert len(keys) == 8 and gets == {key: 2 for key in keys} | {keys[0]: 2 + 3}
    log = sagemaker.processing_logs[name]
    assert sagemaker.backend.processing_jobs[name].processing_job_status == "Completed", log
    assert "host 2 of 3: done" in log and "host 3 of 3: done" in log and "from 3 hosts" in log, log
    folds = split_task().execute_complete(Context(run), {"status": "success"})
    assert len(folds) == 4

    theirs = objects(s3, f"out/{run['cv_run_id']}/folds/")
    split_dataset(
        InputSpec(uri="s3://bucket/exports/table/", label="class", group="patient", csv_header=True),
        CVSpec(**cv),
        "s3://bucket/here/folds",
        final=True,
    )
    ours = objects(s3, "here/folds/")
    assert theirs.keys() == ours.keys() and len(ours) > 10
    for key in ours:  # the parts byte for byte; the plan and manifests name their own folder
        assert theirs[key] == ours[key].replace(b"here/folds", f"out/{run['cv_run_id']}/folds".encode()), key
    assert not objects(s3, f"out/{run['cv_run_id']}/split/work/")  # the hosts' messages are cleared away

    with pytest.raises(TaskDeferred) as cleared:  # a clear splits again; the folds in place are this split
        split_task().execute(Context(run, try_number=5, retries=7))
    again = cleared.value.trigger.job_name
    sagemaker.run_locally(sagemaker.backend.processing_jobs[again])  # every host ends (none waits in vain)
    log = sagemaker.processing_logs[again]
    assert sagemaker.backend.processing_jobs[again].processing_job_status == "Completed", log
    assert "already holds this split; reusing it" in log, log
    assert split_task().execute_complete(Context(run), {"status": "success"}) == folds
    assert objects(s3, f"out/{run['cv_run_id']}/folds/") == theirs
    assert not objects(s3, f"out/{run['cv_run_id']}/split/work/")


def test_a_bad_line_any_instance_meets_fails_the_split_naming_it(offload_settings, sagemaker, s3, monkeypatch):
    monkeypatch.setenv("AIRFLOW__SMX__SPLIT_INSTANCE_COUNT", "3")
    run = parted_run(s3, "s3://bucket/exports/bad/", 6, strategy="stratified", n_splits=3)
    s3.put_object(Bucket="bucket", Key="exports/bad/part-00005.csv", Body=b'id,class,patient\n1,c0,p1\n2,"c1,p2\n')
    with pytest.raises(TaskDeferred) as deferred:
        split_task().execute(Context(run))
    name = deferred.value.trigger.job_name
    sagemaker.run_locally(sagemaker.backend.processing_jobs[name])
    assert sagemaker.backend.processing_jobs[name].processing_job_status == "Failed"
    with pytest.raises(AirflowFailException, match=r"cannot split: s3://bucket/exports/bad/part-00005\.csv line 3: "):
        split_task().execute_complete(Context(run), {"status": "error"})
    assert not objects(s3, f"out/{run['cv_run_id']}/folds/")
