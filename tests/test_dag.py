"""The smx_cross_validation DAG end to end through dag.test(), against moto's S3 and SageMaker.

A simulator thread plays SageMaker: each job stays InProgress for a moment (so fold tasks
defer), then ends as the test decided, with per-fold metrics, billing or a FailureReason.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from airflow_smx.core.naming import FINAL
from tests.dag_harness import ACCURACY, ROOT, Simulator, conf, extra_links, result_of, states
from tests.versions import PARSE_DAGS, DagBag, asset_condition


def test_five_folds_train_and_aggregate(run_dag, sagemaker, s3):
    run = run_dag(conf())
    assert run.state == "success", states(run)
    result, keys = result_of(s3)
    summary = result["summary"]
    assert (summary["succeeded"], summary["failed"], summary["success"]) == (5, 0, True)
    accuracy = summary["metrics"]["validation:accuracy"]
    assert accuracy["mean"] == pytest.approx(0.82) and accuracy["values"] == {str(i): a for i, a in enumerate(ACCURACY)}
    assert summary["objective"]["best_fold"] == 3
    # 160 training and 40 validation records a fold: the corrected interval is sqrt(1 + 5 x 1/4) wider
    assert summary["test_train_ratio"] == 0.25
    (low, high), (plain_low, plain_high) = accuracy["ci95_corrected"], accuracy["ci95"]
    assert high - low == pytest.approx(1.5 * (plain_high - plain_low))
    assert summary["cost"]["billable_instance_seconds"] == 5 * 120
    assert [s["TrainingJobStatus"] for s in result["splits"]] == ["Completed"] * 5
    assert all(isinstance(s["CreationTime"], str) and "ResponseMetadata" not in s for s in result["splits"])
    assert any(k.endswith("results/cv_report.txt") for k in keys)
    # the UI's extra links: a fold to its job and logs, the aggregate to the report in the S3 console
    links = extra_links(run, DagBag(dag_folder=str(ROOT / "dags")).dags["smx_cross_validation"])
    console, job = "https://console.aws.amazon.com", result["splits"][2]["TrainingJobName"]
    assert links[("train_fold", 2)] == {
        "SageMaker training job": f"{console}/sagemaker/home?region=us-east-1#/jobs/{job}",
        "Training job logs": f"{console}/cloudwatch/home?region=us-east-1#logsV2:log-groups/log-group/"
        f"$252Faws$252Fsagemaker$252FTrainingJobs$3FlogStreamNameFilter$3D{job}",
    }
    report_key = f"out%2F{summary['cv_run_id']}%2Fresults%2Fcv_report.html"
    assert links[("aggregate_results", -1)] == {
        "CV report": f"{console}/s3/object/bucket?region=us-east-1&prefix={report_key}"
    }

    stamp = summary["cv_run_id"].removeprefix("iris-xgboost-")
    job = f"crossvalidator-iris-xgboost-{stamp}"
    folds = [c for c in sagemaker.creates if c["name"] != f"{job}-final"]
    assert sorted(c["name"] for c in folds) == [f"{job}-fold{i}" for i in range(5)]
    hyperparameters = [c["hyper_parameters"] for c in folds]
    assert {h["num_class"] for h in hyperparameters} == {"3"} and {h["rows"] for h in hyperparameters} == {"160"}
    # the plain graph: every task ran, none was skipped
    assert states(run) == {
        **{(task, -1): "success" for task in ("check_request", "split_dataset", "aggregate_results")},
        **{(task, -1): "success" for task in ("refit_job", "register_model", "stop_unfinished_jobs")},
        **{("train_fold", fold): "success" for fold in range(5)},
        ("train_final", 0): "success",
    }
    mapped = [ti for ti in run.get_task_instances() if ti.map_index >= 0]
    assert {(ti.task_id, ti.pool_slots) for ti in mapped} == {("train_fold", 1), ("train_final", 1)}
    assert sorted(ti.rendered_map_index for ti in mapped) == ["final", *(f"fold {i}" for i in range(5))]

    # the refit, last, on all 200 records (no hold-out: no validation channel), registered as version 1
    (final,) = [c for c in sagemaker.creates if c["name"] == f"{job}-final"]
    assert sagemaker.creates[-1] is final and final["hyper_parameters"]["rows"] == "200"
    assert [c["ChannelName"] for c in final["input_data_config"]] == ["train"]
    client = boto3.client("sagemaker")
    (version,) = client.list_model_packages(
        ModelPackageGroupName="crossvalidator-iris-xgboost", ModelPackageType="Versioned"
    )["ModelPackageSummaryList"]
    registered = client.describe_model_package(ModelPackageName=version["ModelPackageArn"])
    model = result_of(s3)[0]["summary"]["model"]
    assert model == {
        "group": "crossvalidator-iris-xgboost",
        "version": 1,
        "arn": version["ModelPackageArn"],
        "approval_status": "PendingManualApproval",  # the deployment's default: a person approves
        "training_job": f"{job}-final",
        "model_data": client.describe_training_job(TrainingJobName=f"{job}-final")["ModelArtifacts"][
            "S3ModelArtifacts"
        ],
        "image": "xgboost:1",
        "test": None,
    }
    assert registered["CustomerMetadataProperties"] == {
        "cv_run_id": summary["cv_run_id"],
        "training_job": f"{job}-final",
    }
    metrics_uri = registered["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
    metrics = json.loads(s3.get_object(Bucket="bucket", Key=metrics_uri.removeprefix("s3://bucket/"))["Body"].read())
    assert metrics["cv_estimate"]["validation:accuracy"]["ci95_corrected"] == accuracy["ci95_corrected"]
    client = boto3.client("sagemaker")
    trial = client.describe_trial(TrialName=f"crossvalidator-iris-xgboost-{stamp}")
    assert trial["ExperimentName"] == "crossvalidator-iris-xgboost"


def test_a_failed_fold_is_named_and_fails_the_run_unless_enough_succeed(run_dag, sagemaker, s3):
    def outcomes(fold):
        if fold == 2:
            return {"status": "Failed", "reason": "AlgorithmError: label column has NaN"}
        return {"metrics": {"validation:accuracy": ACCURACY[fold]}}

    run = run_dag(conf(), outcomes)
    assert run.state == "failed"
    assert states(run)[("aggregate_results", -1)] == "failed"
    result, _ = result_of(s3)
    assert result["summary"]["failures"] == [
        {
            "fold": 2,
            "job_name": next(c["name"] for c in sagemaker.creates if c["name"].endswith("fold2")),
            "status": "Failed",
            "reason": "AlgorithmError: label column has NaN",
        }
    ]
    assert result["summary"]["metrics"]["validation:accuracy"]["n"] == 4
    assert len(sagemaker.creates) == 5  # the failed fold was not recreated by its retries


def test_a_refit_that_fails_fails_the_run_and_registers_nothing(run_dag, sagemaker, s3):
    def outcomes(fold):
        if fold == FINAL:
            return {"status": "Failed", "reason": "AlgorithmError: MemoryError"}
        return {"metrics": {"validation:accuracy": ACCURACY[fold]}}

    run = run_dag(conf(cv={"n_splits": 3}), outcomes)
    assert run.state == "failed", states(run)  # the folds passed, but there is no model to show for them
    ran = states(run)
    assert (ran[("aggregate_results", -1)], ran[("train_final", 0)]) == ("success", "failed")
    assert (ran[("register_model", -1)], ran[("stop_unfinished_jobs", -1)]) == ("upstream_failed", "failed")
    assert boto3.client("sagemaker").list_model_package_groups()["ModelPackageGroupSummaryList"] == []


def test_min_successful_folds_lets_the_run_pass(run_dag, sagemaker, s3):
    def outcomes(fold):
        return {"status": "Failed", "reason": "boom"} if fold == 0 else {"metrics": {"validation:accuracy": 0.5}}

    run = run_dag(conf(min_successful_folds=4), outcomes)
    assert run.state == "success", states(run)


def test_multi_instance_jobs_take_as_many_pool_slots(run_dag, sagemaker, s3, monkeypatch, printed):
    request = conf(cv={"n_splits": 3})
    request["training"]["ResourceConfig"]["InstanceCount"] = 2
    run = run_dag(request)  # the default fold task takes 1 slot: a 2-instance job would escape the pool
    assert run.state == "failed" and sagemaker.creates == []
    output = printed()  # (Airflow 3.0's dag.test() wraps the line before "([smx] slot_sizes)")
    assert "InstanceCount: 2 is above the 1 pool slots this DAG's fold tasks take" in output
    assert "([smx] slot_sizes)" in output

    monkeypatch.setenv("AIRFLOW__SMX__SLOT_SIZES", "[1, 2, 4]")
    run = run_dag(request)
    assert run.state == "success", states(run)
    ran = {(ti.task_id, ti.pool_slots) for ti in run.get_task_instances() if ti.map_index >= 0}
    assert ran == {("train_fold_x2", 2), ("train_final_x2", 2)}  # the refit takes the folds' slots too
    skipped = sorted(task for task, state in states(run).items() if state == "skipped")
    # in the collapsed group fold_tasks
    assert [task for task, _ in skipped] == ["train_final", "train_final_x4", "train_fold", "train_fold_x4"]


def test_smx_validator_input_runs_as_is(run_dag, sagemaker, s3):
    sample = json.loads((ROOT / "examples" / "smx_validator_sample.json").read_text())
    sample["job_config"].update({"input_path": "s3://bucket/data/train.jsonl", "output_prefix": "s3://bucket/out"})
    sample["crossvalidation"]["n_splits"] = 3
    run = run_dag(sample)
    assert run.state == "success", states(run)
    result, _ = result_of(s3)
    assert result["job_config"]["name"] == "my_project" and result["crossvalidation"]["n_splits"] == 3
    assert sagemaker.creates[0]["name"].startswith("crossvalidator-my-project-")
    assert sagemaker.creates[0]["hyper_parameters"]["num_classes"] == "3"


def test_an_invalid_conf_starts_nothing_and_names_every_bad_field(run_dag, sagemaker, s3, printed):
    bad = conf(cv={"n_splits": 1, "strategy": "stratified"}, output_uri="s3://other-bucket/out")
    bad["input"] = {"uri": "s3://bucket/data/train.jsonl"}
    run = run_dag(bad)
    assert run.state == "failed"
    assert states(run)[("check_request", -1)] == "failed"
    assert sagemaker.creates == []
    assert "Contents" not in s3.list_objects_v2(Bucket="bucket", Prefix="out/")
    output = printed()
    assert "cv.n_splits: must be >= 2, got 1" in output

    outside = conf(output_uri="s3://other-bucket/out")
    run = run_dag(outside)
    assert run.state == "failed" and sagemaker.creates == []
    assert "output_uri: s3://other-bucket/out is outside the allowed prefixes" in printed()


def test_a_misspelt_form_field_is_refused_not_ignored(run_dag, sagemaker, s3, printed):
    run = run_dag({"n_splits": 3})
    assert run.state == "failed"
    assert states(run)[("check_request", -1)] == "failed"
    assert sagemaker.creates == []
    output = printed()
    assert "n_splits: not a field of the form" in output
    assert "did you mean cv_n_splits?" in output


def test_a_stored_request_retrains_when_its_input_asset_is_updated(run_dag, sagemaker, s3, tmp_path, monkeypatch):
    from tests.versions import DagBag

    stored = conf(name="nightly", cv={"n_splits": 3})
    (tmp_path / "request.json").write_text(json.dumps(stored))
    monkeypatch.setenv("AIRFLOW__SMX__REQUEST_FILE", str(tmp_path / "request.json"))
    dags = DagBag(dag_folder=str(ROOT / "dags")).dags
    on_data = dags["smx_cross_validation_on_data"]
    assert [a.uri for a in asset_condition(on_data.timetable).objects] == [stored["input"]["uri"]]
    simulator = Simulator(sagemaker, lambda fold: {"metrics": {"validation:accuracy": 0.9}})
    simulator.start()
    try:
        run = on_data.test()  # no conf, as when the Asset triggers it
    finally:
        simulator.running = False
    assert run.state == "success", states(run)
    assert all(c["name"].startswith("crossvalidator-nightly-") for c in sagemaker.creates)


def test_airflow_lists_the_dag_without_import_errors(airflow_db, tmp_path):
    airflow = str(Path(sys.executable).parent / "airflow")
    errors = subprocess.run(
        [airflow, "dags", "list-import-errors", *PARSE_DAGS], capture_output=True, text=True, timeout=300
    )
    assert errors.returncode == 0 and "smx_cross_validation" not in errors.stdout, errors.stdout + errors.stderr
    listed = subprocess.run(
        [airflow, "dags", "list", *PARSE_DAGS, "-o", "plain"], capture_output=True, text=True, timeout=300
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "smx_cross_validation" in listed.stdout


def test_every_fold_goes_to_exactly_one_fold_task():
    from airflow_smx.core.job_requests import FoldJob
    from airflow_smx.dag.tasks import fold_task_of

    tasks = [("sagemaker", 1), ("sagemaker", 2), ("sagemaker", 4), ("local", 1)]
    for count, expected in ((1, 1), (2, 2), (3, 4), (4, 4)):
        fold = FoldJob(0, {"TrainingJobName": "j", "ResourceConfig": {"InstanceCount": count}})
        assert fold_task_of(fold, tasks) == ("sagemaker", expected)
    local = FoldJob(0, {"TrainingJobName": "j"}, command="train")
    assert fold_task_of(local, [("sagemaker", 2), ("local", 1)]) == ("local", 1)


def test_a_dry_run_reports_folds_job_names_and_spend_and_writes_nothing_else(run_dag, sagemaker, s3):
    run = run_dag(conf(dry_run=True))
    assert run.state == "success", states(run)
    assert states(run)[("train_fold", -1)] == "skipped"
    assert states(run)[("aggregate_results", -1)] == "success"
    assert sagemaker.creates == [] and boto3.client("sagemaker").list_trials()["TrialSummaries"] == []
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="bucket", Prefix="out/").get("Contents", [])]
    (key,) = keys  # no fold, no plan: the report alone
    assert key.endswith("/results/dry_run.json")
    report = json.loads(s3.get_object(Bucket="bucket", Key=key)["Body"].read())
    assert report["dry_run"] is True and report["n_records"] == 200
    assert report["classes"] == {"c0": 67, "c1": 67, "c2": 66}
    folds = report["folds"]
    assert [(f["n_train"], f["n_validation"]) for f in folds] == [(160, 40)] * 5
    assert sum(f["class_counts"]["validation"]["c2"] for f in folds) == 66
    stamp = report["cv_run_id"].removeprefix("iris-xgboost-")
    assert [f["job_name"] for f in folds] == [f"crossvalidator-iris-xgboost-{stamp}-fold{i}" for i in range(5)]
    # the folds and the refit train 10 min; 5 folds on a pool of 4: each fold's instance may then idle 10 min warm
    assert report["worst_case"]["instance_hours"] == pytest.approx((5 + 1) * 600 / 3600 + 5 * 600 / 3600)
    assert report["worst_case"]["text"] == (
        "worst case 6 jobs x 1 x ml.m5.large x 0.166667 h + 5 warm pools x 1 x 0.166667 h = 1.83333 instance-hours"
    )


def test_the_gate_promotes_a_first_run_stops_a_worse_one_and_promotes_a_better_one(run_dag, sagemaker, s3):
    """Each promoted run refits on every record but the hold-out and registers the next version."""
    cv = {"strategy": "stratified", "n_splits": 5, "random_state": 7, "holdout": 0.2}
    gated = conf(cv=cv, gate={"baseline": "latest", "margin": 0.01})
    pointer = lambda: json.loads(s3.get_object(Bucket="bucket", Key="out/latest/iris-xgboost.json")["Body"].read())  # noqa: E731
    client = boto3.client("sagemaker")
    versions = lambda: sorted(  # noqa: E731
        p["ModelPackageVersion"]
        for p in client.list_model_packages(
            ModelPackageGroupName="crossvalidator-iris-xgboost", ModelPackageType="Versioned"
        )["ModelPackageSummaryList"]
    )
    first = run_dag(gated)
    assert first.state == "success", states(first)
    first_id = pointer()["cv_run_id"]
    first_result, _ = result_of(s3, f"out/{first_id}/")
    assert first_result["summary"]["gate"] == {"passed": True, "checks": [], "baseline": None, "on_fail": "fail"}
    model = first_result["summary"]["model"]
    assert versions() == [1] and model["version"] == 1
    assert model["test"] == {"validation:accuracy": ACCURACY[-1]}  # the refit's score on the hold-out
    (refit,) = [c for c in sagemaker.creates if c["name"].endswith("-final")]
    assert [c["ChannelName"] for c in refit["input_data_config"]] == ["train", "validation"]
    assert refit["hyper_parameters"]["rows"] == "160"  # 200 records, 40 held out
    # 5 folds on a pool of 4 keep their instances warm for the next fold; nothing follows the refit
    folds = [c for c in sagemaker.creates if "-fold" in c["name"]]
    assert {c["resource_config"].get("KeepAlivePeriodInSeconds") for c in folds} == {600}
    assert "KeepAlivePeriodInSeconds" not in refit["resource_config"]

    worse = run_dag(gated, lambda fold: {"metrics": {"validation:accuracy": ACCURACY[fold] - 0.05 - 0.002 * fold}})
    assert worse.state == "failed" and states(worse)[("aggregate_results", -1)] == "failed"
    assert states(worse)[("register_model", -1)] == "upstream_failed" and versions() == [1]  # nothing refit
    assert pointer()["cv_run_id"] == first_id  # the baseline stays
    (worse_key,) = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket="bucket", Prefix="out/").get("Contents", [])
        if o["Key"].endswith("cv_result.json") and first_id not in o["Key"]
    ]
    summary = json.loads(s3.get_object(Bucket="bucket", Key=worse_key)["Body"].read())["summary"]
    (check,) = summary["gate"]["checks"]
    assert summary["success"] is True and summary["promoted"] is False
    assert summary["gate"]["baseline"] == first_id and check["test"].startswith("corrected paired t-test")
    assert check["difference"] == pytest.approx(-0.054) and check["p_value"] < 0.05
    page = s3.get_object(Bucket="bucket", Key=worse_key.replace("cv_result.json", "cv_report.html"))
    html = page["Body"].read().decode()
    assert page["ContentType"] == "text/html"  # a browser opens it from S3 rather than downloading it
    assert "stopped the run (on_fail: fail)" in html and f"baseline {first_id}: mean" in html

    better = run_dag(gated, lambda fold: {"metrics": {"validation:accuracy": ACCURACY[fold] + 0.02}})
    assert better.state == "success", states(better)
    assert pointer()["cv_run_id"] not in (first_id, worse_key.split("/")[1])
    assert (
        versions() == [1, 2] and result_of(s3, f"out/{pointer()['cv_run_id']}/")[0]["summary"]["model"]["version"] == 2
    )


def test_a_named_baseline_that_is_not_there_is_refused_before_any_job(run_dag, sagemaker, s3):
    run = run_dag(conf(gate={"baseline": "iris-xgboost-20200101-000000-abcdef"}))
    assert run.state == "failed" and states(run)[("check_request", -1)] == "failed"
    assert sagemaker.creates == [] and s3.list_objects_v2(Bucket="bucket", Prefix="out/").get("KeyCount") == 0
