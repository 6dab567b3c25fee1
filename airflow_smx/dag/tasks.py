"""The tasks of a cross-validation run: check the request, split, aggregate, and the teardown.

The graph that wires them (and the fold operators, one mapped task per fold) is in
:mod:`airflow_smx.dag.graph`. Tasks hand each other small JSON (the validated request, URIs,
counts, one :class:`~airflow_smx.core.job_requests.FoldJob` per fold), never data.
"""

from __future__ import annotations

import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from airflow_smx import settings
from airflow_smx.backends import backend
from airflow_smx.compat import RETRY_BACKOFF, AirflowFailException, asset, task
from airflow_smx.core import storage
from airflow_smx.core.folds import read_plan
from airflow_smx.core.form import request_from_form, unknown_fields
from airflow_smx.core.gate import GateError, judge, load_baseline, pointer_uri
from airflow_smx.core.job_requests import FoldJob, fold_training_config
from airflow_smx.core.naming import FINAL, cv_run_id, run_key
from airflow_smx.core.registry import group_tags, model_metrics, package_request, test_scores, version_record
from airflow_smx.core.report_html import html_report
from airflow_smx.core.request import CVRequest, RequestError, in_user_terms, parse_request
from airflow_smx.core.results import cv_result, report
from airflow_smx.core.smx_validator import is_smx_validator_input
from airflow_smx.dag.split import DRY_RUN_REPORT, results_folder, stop_unfinished_split
from airflow_smx.hooks.s3fs_options import storage_options_for
from airflow_smx.links.sagemaker import link_report

MODEL_METRICS = "model_metrics.json"
REFIT_TASK = "refit_job"
HTML_REPORT = "cv_report.html"
RESULT_ASSET = asset("smx://cross-validation/result", name="smx_cross_validation_result")


def request_of(conf: dict[str, Any], params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(request dict, SMX-Validator original or {}): from a conf in either format, else from the form."""
    if is_smx_validator_input(conf):
        return dict(conf), dict(conf)
    if isinstance(conf.get("input"), dict):
        return dict(conf), {}
    unknown = unknown_fields(conf)
    if unknown:
        raise RequestError(unknown)
    return request_from_form(params), {}


def run_time(dag_run: Any) -> datetime.datetime:
    """The run's timestamp: names derive from it, so a retried task computes the same names."""
    for attribute in ("run_after", "logical_date", "start_date"):
        value = getattr(dag_run, attribute, None)
        if value is not None:
            return value
    raise AirflowFailException("the DAG run has no timestamp")


@task(multiple_outputs=False)  # one XCom; a dict return type would also push one per key
def check_request(stored: dict[str, Any] | None = None, largest_slot: int = 1, **context: Any) -> dict[str, Any]:
    """Validate the conf fully (the request model, the deployment's bounds) before any call.

    :param stored: the request of a DAG that runs without a conf (on a schedule or new data)
    :param largest_slot: the most pool slots one of this DAG's fold tasks takes
    """
    dag_run = context["dag_run"]
    policy = settings.policy()
    try:
        raw, original = request_of(dag_run.conf or stored or {}, dict(context["params"]))
        request = parse_request(raw, default_backend=policy.default_backend)
        request = policy.with_warm_pool(request, int(settings.get("pool_slots")))
        problems = policy.problems(request)
        try:
            offload = settings.offload()
        except ValueError as error:  # the deployment's mistake, but no split can run until it is fixed
            problems.append(str(error))
            offload = settings.Offload(0, "", "", "", 0)
        if request.split_on == "sagemaker" and (request.backend != "sagemaker" or not offload.ready):
            problems.append(
                "split_on: sagemaker needs a SageMaker request and the deployment's split job "
                "([smx] split_image and split_code_uri); use auto or worker"
            )
        slots = backend(request.backend, settings.get("aws_conn_id")).pool_slots(request)
        if slots > largest_slot:
            problems.append(
                f"training.ResourceConfig.InstanceCount: {slots} is above the {largest_slot} pool slots "
                "this DAG's fold tasks take ([smx] slot_sizes)"
            )
        if not problems and request.gate is not None:  # within the bounds: its baseline is read from output_uri
            try:
                baseline_of(request)
            except GateError as error:
                problems.append(str(error))
        if problems:
            raise RequestError(in_user_terms(problems, raw))
    except RequestError as error:
        raise AirflowFailException(str(error)) from None
    when, key = run_time(dag_run), run_key(dag_run.dag_id, dag_run.run_id)
    return {
        "request": request.model_dump(mode="json"),
        "original": original,
        "cv_run_id": cv_run_id(request.name, when, key),
        "key": key,
        "when": when.isoformat(),
        "run_id": dag_run.run_id,
    }


def fold_task_of(fold: FoldJob, fold_tasks: list[tuple[str, int]]) -> tuple[str, int]:
    """Which of the DAG's fold tasks, (backend, pool slots), trains ``fold``: its backend's
    smallest that holds its instances (check_request refused a fold that none holds)."""
    sizes = sorted(slots for backend_name, slots in fold_tasks if backend_name == fold.backend)
    return fold.backend, next((size for size in sizes if size >= fold.pool_slots), sizes[-1])


@task
def select_folds(
    folds: list[dict[str, Any]], fold_task: tuple[str, int], fold_tasks: list[tuple[str, int]]
) -> list[dict[str, Any]]:
    """The folds ``fold_task`` maps over, when the DAG has several fold tasks.

    Airflow maps a task only over another task's whole return value, and fixes pool_slots per
    task, so each fold is routed to exactly one fold task here.
    """
    routed = [FoldJob(**f) for f in folds]
    return [fold.kwargs() for fold in routed if fold_task_of(fold, fold_tasks) == tuple(fold_task)]


def run_inputs(ti: Any) -> tuple[dict[str, Any] | None, list[dict[str, Any]] | None]:
    """The run's checked request and its folds (FoldJob kwargs), None for what was never made."""
    run = ti.xcom_pull(task_ids="check_request")
    return run, ti.xcom_pull(task_ids="split_dataset") if run else None


@task(
    trigger_rule="all_done",
    outlets=[RESULT_ASSET],
    multiple_outputs=False,
    retries=3,  # an AWS call that fails (throttling, a network error) is asked again; a verdict is final
    retry_delay=datetime.timedelta(seconds=15),
    retry_exponential_backoff=RETRY_BACKOFF,
)
def aggregate_results(**context: Any) -> dict[str, Any]:
    """Gather every fold's outcome, failed ones included; write cv_result.json; pass or fail the run.

    It reads its inputs itself: it runs whatever became of the folds (all_done), also when the
    request was refused or the split failed, and must then fail at once, not spend its retries.
    """
    run, folds = run_inputs(context["ti"])
    if not run or folds is None:
        raise AirflowFailException("No folds to aggregate: check_request or split_dataset did not succeed.")
    request = CVRequest.model_validate(run["request"])
    results_uri, fs, path = results_folder(request, run)
    if request.dry_run:  # its report is the result; a result asset event says so, for consumers to skip
        result = storage.join(results_uri, DRY_RUN_REPORT)
        context["outlet_events"][RESULT_ASSET].extra = {"result": result, "success": False, "dry_run": True}
        return {**storage.read_json(fs, f"{path}/{DRY_RUN_REPORT}"), "result": result}
    trainer = backend(request.backend, settings.get("aws_conn_id"))
    outcomes = [trainer.outcome(FoldJob(**fold)) for fold in folds]
    folds_uri = storage.join(request.output_uri, run["cv_run_id"], "folds")
    plan = read_plan(folds_uri, storage_options_for(settings.get("aws_conn_id"), folds_uri))
    result = cv_result(request, outcomes, run["cv_run_id"], run["original"], plan.test_train_ratio)
    gated = result["summary"]
    baseline = baseline_of(request) if request.gate is not None else None
    if request.gate is not None and gated["success"]:
        gated["gate"] = judge(request, gated, plan, run["cv_run_id"], baseline)
    gated["promoted"] = gated["success"] and gated.get("gate", {}).get("passed", True)
    result["baseline"] = baseline  # the report draws it; the pointer may name this run by the time it is redrawn
    text = report(gated, outcomes)
    storage.write_json(fs, f"{path}/cv_result.json", result)
    storage.write_bytes(fs, f"{path}/cv_report.txt", text.encode())
    storage.write_bytes(fs, f"{path}/{HTML_REPORT}", html_report(result).encode(), "text/html")
    link_report(context, storage.join(results_uri, HTML_REPORT), settings.get("aws_conn_id"))
    print(text)
    summary = {**gated, "result": storage.join(results_uri, "cv_result.json")}
    if summary["promoted"]:  # the next gated run's "latest" baseline
        pointer = {"cv_run_id": run["cv_run_id"], "result": summary["result"], "airflow_run_id": run["run_id"]}
        storage.write_json(fs, pointer_uri(request), pointer)
    context["outlet_events"][RESULT_ASSET].extra = {
        "result": summary["result"],
        "success": summary["success"],
        "promoted": summary["promoted"],
    }
    if not summary["success"] or (not summary["promoted"] and request.gate.on_fail == "fail"):
        raise AirflowFailException(text)
    return summary


@task(retries=3, retry_delay=datetime.timedelta(seconds=15), retry_exponential_backoff=RETRY_BACKOFF)
def refit_job(**context: Any) -> list[dict[str, Any]]:
    """The refit's job, once the run succeeded and passed its gate: every record but the hold-out
    in train, the hold-out as validation. None (its tasks skip) for a dry run, a run not promoted,
    or a request with ``refit`` off (SMX-Validator's)."""
    ti = context["ti"]
    run, summary = ti.xcom_pull(task_ids="check_request"), ti.xcom_pull(task_ids="aggregate_results")
    request = CVRequest.model_validate(run["request"])
    if request.dry_run or not request.refit or not summary.get("promoted"):
        print(
            "No refit: " + ("a dry run" if request.dry_run else "refit is off" if not request.refit else "not promoted")
        )
        return []
    folds_uri = storage.join(request.output_uri, run["cv_run_id"], "folds")
    plan = read_plan(folds_uri, storage_options_for(settings.get("aws_conn_id"), folds_uri))
    if plan.final is None:  # a split made before refits existed, and reused
        raise AirflowFailException(f"{folds_uri} holds no refit data: clear split_dataset to split again")
    when, role = datetime.datetime.fromisoformat(run["when"]), settings.get("role_arn") or None
    config = fold_training_config(request, plan, plan.final, when, run["run_id"], role, run["key"])
    return [backend(request.backend, settings.get("aws_conn_id")).fold_job(request, FINAL, config).kwargs()]


@task(
    trigger_rule="none_failed_min_one_success",  # the refit task that ran (others of a multi-task DAG skip)
    multiple_outputs=False,  # one XCom; a dict return type would also push one per key
    retries=3,
    retry_delay=datetime.timedelta(seconds=15),
    retry_exponential_backoff=RETRY_BACKOFF,
)
def register_model(**context: Any) -> dict[str, Any]:
    """Register the refit model as a new version (unless ``registry.enabled`` is off), with its
    metrics file; add it to the result and the report."""
    ti = context["ti"]
    run, (final,) = ti.xcom_pull(task_ids="check_request"), ti.xcom_pull(task_ids=REFIT_TASK)
    request, job = CVRequest.model_validate(run["request"]), FoldJob(**final)
    trainer = backend(request.backend, settings.get("aws_conn_id"))
    outcome = trainer.outcome(job)
    if not outcome.succeeded:
        raise AirflowFailException(f"The refit {job.job_name} did not complete ({outcome.status}): {outcome.reason}")
    results_uri, fs, path = results_folder(request, run)
    result = storage.read_json(fs, f"{path}/cv_result.json")
    held_out = len(job.config["InputDataConfig"]) > 1  # a validation channel: the hold-out
    storage.write_json(fs, f"{path}/{MODEL_METRICS}", model_metrics(result, outcome.description, held_out))
    model = {
        "training_job": outcome.description["TrainingJobName"],
        "model_data": outcome.description["ModelArtifacts"]["S3ModelArtifacts"],
        "test": test_scores(outcome.description) if held_out else None,
    }
    if request.registry.enabled:
        metrics_uri = storage.join(results_uri, MODEL_METRICS)
        status = settings.model_approval_status()
        package = package_request(request, outcome.description, metrics_uri, status, run["cv_run_id"])
        model.update(version_record(trainer.register(package, group_tags(request), request.output_uri)))
        print(f"Registered {model['group']} version {model['version']} ({model['approval_status']}): {model['arn']}")
    result["summary"]["model"] = model
    storage.write_json(fs, f"{path}/cv_result.json", result)
    storage.write_bytes(fs, f"{path}/{HTML_REPORT}", html_report(result).encode(), "text/html")
    return model


def baseline_of(request: CVRequest) -> dict[str, Any] | None:
    """The gate's baseline run (check_request has seen it is there)."""
    return load_baseline(request, storage_options_for(settings.get("aws_conn_id"), request.output_uri))


@task(retries=5, retry_delay=datetime.timedelta(seconds=30), retry_exponential_backoff=RETRY_BACKOFF)
def stop_unfinished_jobs(**context: Any) -> list[str]:
    """Teardown: stop this run's training jobs (and its split's Processing job) still running once
    their tasks are over.

    Airflow runs a teardown even when the run is marked failed. A fold cancelled before the
    triggerer started watching its job (so no trigger on_kill), or while the triggerer was
    down, would otherwise leave its job training, and billed, with no task watching it.
    It then fails, failing the run, if the run has no result: marking a run failed leaves its
    state to its pending teardown, and Airflow would call a run whose last task was skipped
    a success. (So a CV run cannot be marked success: without a result it ends failed.) It
    fails too when the run was promoted and its model was not refit and registered.
    It reads its inputs itself, as it also runs when they were never made (a run marked
    failed before its folds were split).
    """
    ti = context["ti"]
    run, folds = run_inputs(ti)
    folds = [*(folds or []), *(ti.xcom_pull(task_ids=REFIT_TASK) or [])]
    stopped, errors = [], []
    if folds:
        trainer = backend(CVRequest.model_validate(run["request"]).backend, settings.get("aws_conn_id"))
    for fold in map(lambda f: FoldJob(**f), folds):
        try:
            name = trainer.stop_unfinished(fold, run["run_id"])
            if name:
                print(f"Stopped training job {name}: its fold task had ended without it")
                stopped.append(name)
        except (ClientError, BotoCoreError) as error:  # try every fold; the task's retry tries again
            errors.append(f"{fold.job_name}: {error}")
    if run and settings.offload().ready:  # a split job may run: by size, or because the request asked
        try:
            name = stop_unfinished_split(run, settings.get("aws_conn_id") or None)
            if name:
                print(f"Stopped the split's Processing job {name}: its task had ended without it")
                stopped.append(name)
        except (ClientError, BotoCoreError) as error:
            errors.append(f"the split's Processing job: {error}")
    if errors:
        raise RuntimeError("could not check or stop training jobs: " + "; ".join(errors))
    if ti.xcom_pull(task_ids="aggregate_results") is None:
        raise AirflowFailException("The run has no result: it was cancelled, or aggregate_results failed.")
    # Airflow judges the run by this teardown alone: a refit that failed must fail it too
    refit = ti.xcom_pull(task_ids=REFIT_TASK)
    if refit is None or (refit and ti.xcom_pull(task_ids="register_model") is None):
        raise AirflowFailException(
            "The run's model was not refit and registered: see refit_job, train_final, register_model."
        )
    return stopped
