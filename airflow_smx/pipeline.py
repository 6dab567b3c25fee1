"""The cross-validation DAG: check_request -> split_dataset -> train_fold[k] -> aggregate_results.

``dags/smx_cross_validation.py`` builds it with :func:`cross_validation_dag`. The tasks hand
each other small JSON (the validated request, URIs, counts), never data.
"""

from __future__ import annotations

import datetime
from typing import Any

from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook
from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.sdk import DAG, Asset, Param, TriggerRule, literal, task
from botocore.exceptions import BotoCoreError, ClientError

from airflow_smx import settings, storage
from airflow_smx.aggregate import FoldOutcome, cv_result, report
from airflow_smx.folds import SplitError, split_dataset
from airflow_smx.form import form_fields, request_from_form, unknown_fields
from airflow_smx.hooks.experiments import ensure_trial
from airflow_smx.hooks.storage import storage_options_for
from airflow_smx.hooks.training_jobs import describe, owner, stop
from airflow_smx.naming import cv_run_id, trial_name
from airflow_smx.operators.local_fold import LocalFoldTrainingOperator, record_uri
from airflow_smx.operators.sagemaker_fold import SageMakerFoldTrainingOperator, clean_description
from airflow_smx.policy import MAX_SLOTS
from airflow_smx.request import CVRequest, RequestError, in_user_terms, parse_request
from airflow_smx.smx_validator import is_smx_validator_input
from airflow_smx.training import fold_training_config, run_tag_value

LOCAL_TASK = "train_fold_local"
RESULT_ASSET = Asset(name="smx_cross_validation_result", uri="smx://cross-validation/result")
# A mapped task's pool_slots cannot vary per run, so folds go to the task whose slot count
# covers their InstanceCount (rounded up to a power of two).
SLOT_SIZES = tuple(2**i for i in range(MAX_SLOTS.bit_length()))  # 1, 2, 4, 8, 16
DOC = """
### K-fold cross-validated training

Fill in the form (or send a conf: this form's fields, the nested request of
`airflow-smx schema`, or SMX-Validator's input JSON). The request is validated before anything
touches S3 or SageMaker; every problem is named. Each fold trains as one SageMaker job, at most
as many ml instances at once as the pool `{pool}` has slots. The result:
`{{output_uri}}/{{cv_run_id}}/results/cv_result.json`.
"""


def train_task_id(slots: int) -> str:
    return "train_fold" if slots == 1 else f"train_fold_x{slots}"


def slot_size(instance_count: int) -> int:
    return next(size for size in SLOT_SIZES if size >= instance_count)


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
def check_request(stored: dict[str, Any] | None = None, **context: Any) -> dict[str, Any]:
    """Validate the conf fully (the request model, the deployment's bounds) before any call.

    :param stored: the request of a DAG that runs without a conf (on a schedule or new data)
    """
    dag_run = context["dag_run"]
    policy = settings.policy()
    try:
        raw, original = request_of(dag_run.conf or stored or {}, dict(context["params"]))
        request = parse_request(raw, default_backend=policy.default_backend)
        problems = policy.problems(request)
        if problems:
            raise RequestError(in_user_terms(problems, raw))
    except RequestError as error:
        raise AirflowFailException(str(error)) from None
    when = run_time(dag_run)
    return {
        "request": request.model_dump(mode="json"),
        "original": original,
        "cv_run_id": cv_run_id(request.name, when),
        "when": when.isoformat(),
        "run_id": dag_run.run_id,
    }


@task(multiple_outputs=True)
def split_dataset_task(run: dict[str, Any]) -> dict[str, Any]:
    """Write the folds and return one CreateTrainingJob request per fold (URIs and counts only)."""
    request = CVRequest.model_validate(run["request"])
    when = datetime.datetime.fromisoformat(run["when"])
    folds_uri = storage.join(request.output_uri, run["cv_run_id"], "folds")
    options = storage_options_for(settings.get("aws_conn_id"), request.input.uri, folds_uri)
    try:
        plan = split_dataset(
            request.input,
            request.cv,
            folds_uri,
            assemble_train=request.channels.train.needs_single_object,
            storage_options=options,
        )
    except SplitError as error:
        raise AirflowFailException(f"cannot split: {error}") from None
    if request.experiment.enabled and request.backend == "sagemaker":
        client = SageMakerHook(aws_conn_id=settings.get("aws_conn_id")).conn
        tags = [t.model_dump() for t in request.tags]
        ensure_trial(client, request.experiment_name, trial_name(request.name, when), tags)
    role = settings.get("role_arn") or None
    jobs = [
        {"fold": f.index, "config": fold_training_config(request, plan, f, when, run["run_id"], role)}
        for f in plan.folds
    ]
    local = request.backend == "local"
    if local:  # the command by name: the operator looks it up in the deployment's list itself
        slots, task_id = 0, LOCAL_TASK
        jobs = [{**job, "command": settings.policy().command_name(request)} for job in jobs]
    else:
        slots = slot_size(request.training.instance_count)
        task_id = train_task_id(slots)
    result: dict[str, Any] = {f"x{size}": jobs if size == slots else [] for size in SLOT_SIZES}
    result["local"] = jobs if local else []
    result["folds"] = [
        {
            "fold": job["fold"],
            "job_name": job["config"]["TrainingJobName"],
            "task_id": task_id,
            "map_index": i,
            "record": record_uri(job["config"]) if local else None,
        }
        for i, job in enumerate(jobs)
    ]
    result["plan"] = storage.join(folds_uri, "plan.json")
    return result


@task
def fold_jobs(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The folds one train task maps over (Airflow maps only over a task's return value)."""
    return jobs


@task(trigger_rule="all_done", outlets=[RESULT_ASSET], multiple_outputs=False)
def aggregate_results(run: dict[str, Any], folds: list[dict[str, Any]], **context: Any) -> dict[str, Any]:
    """Gather every fold's outcome, failed ones included; write cv_result.json; pass or fail the run."""
    request = CVRequest.model_validate(run["request"])
    hook = SageMakerHook(aws_conn_id=settings.get("aws_conn_id"))
    options = storage_options_for(settings.get("aws_conn_id"), request.output_uri)
    outcomes = [_outcome(fold, context["ti"], hook, options) for fold in folds]
    result = cv_result(request, outcomes, run["cv_run_id"], run["original"])
    text = report(result["summary"], outcomes)
    results_uri = storage.join(request.output_uri, run["cv_run_id"], "results")
    fs, path = storage.filesystem(results_uri, options)
    storage.write_json(fs, f"{path}/cv_result.json", result)
    storage.write_bytes(fs, f"{path}/cv_report.txt", text.encode())
    print(text)
    summary = {**result["summary"], "result": storage.join(results_uri, "cv_result.json")}
    context["outlet_events"][RESULT_ASSET].extra = {"result": summary["result"], "success": summary["success"]}
    if not summary["success"]:
        raise AirflowFailException(text)
    return summary


@task(retries=2, retry_delay=datetime.timedelta(seconds=30))
def stop_unfinished_jobs(**context: Any) -> list[str]:
    """Teardown: stop this run's training jobs still running once its fold tasks are over.

    Airflow runs a teardown even when the run is marked failed. A fold cancelled before the
    triggerer started watching its job (so no trigger on_kill), or while the triggerer was
    down, would otherwise leave its job training, and billed, with no task watching it.
    It then fails, failing the run, if the run has no result: marking a run failed leaves its
    state to its pending teardown, and Airflow would call a run whose last task was skipped
    a success. (So a CV run cannot be marked success: without a result it ends failed.)
    It reads its inputs itself, as it also runs when they were never made (a run marked
    failed before its folds were split).
    """
    ti = context["ti"]
    run = ti.xcom_pull(task_ids="check_request")
    folds = (ti.xcom_pull(task_ids="split_dataset", key="folds") or []) if run else []
    hook = SageMakerHook(aws_conn_id=settings.get("aws_conn_id"))
    stopped, errors = [], []
    for fold in folds:
        try:
            if _stop_if_ours(hook, fold, run["run_id"]):
                print(f"Stopped training job {fold['job_name']}: its fold task had ended without it")
                stopped.append(fold["job_name"])
        except (ClientError, BotoCoreError) as error:  # try every fold; the task's retry tries again
            errors.append(f"{fold['job_name']}: {error}")
    if errors:
        raise RuntimeError("could not check or stop training jobs: " + "; ".join(errors))
    if ti.xcom_pull(task_ids="aggregate_results") is None:
        raise AirflowFailException("The run has no result: it was cancelled, or aggregate_results failed.")
    return stopped


def _stop_if_ours(hook: SageMakerHook, fold: dict[str, Any], run_id: str) -> bool:
    if fold.get("record"):  # a local fold: its operator ends its process itself
        return False
    description = describe(hook, fold["job_name"])
    if description is None or description["TrainingJobStatus"] != "InProgress":
        return False  # never created, or already ended
    if owner(hook.conn, description["TrainingJobArn"]) != run_tag_value(run_id):
        return False  # same name, another run's job: not ours to stop
    return stop(hook.conn, fold["job_name"])


def _outcome(fold: dict[str, Any], ti: Any, hook: SageMakerHook, options: dict[str, Any]) -> FoldOutcome:
    result = ti.xcom_pull(task_ids=fold["task_id"], map_indexes=fold["map_index"])
    if result:
        return FoldOutcome(fold["fold"], fold["job_name"], result)
    if fold.get("record"):  # a local fold keeps its record beside its model, failed or not
        fs, path = storage.filesystem(fold["record"], options)
        if fs.exists(path):
            return FoldOutcome(fold["fold"], fold["job_name"], storage.read_json(fs, path))
        return FoldOutcome(fold["fold"], fold["job_name"], None, error="the fold's process never ran")
    try:  # the task failed: SageMaker says why, if the job exists
        description = clean_description(hook.describe_training_job(fold["job_name"]))
    except Exception as error:
        return FoldOutcome(fold["fold"], fold["job_name"], None, error=f"no training job: {error}")
    return FoldOutcome(fold["fold"], fold["job_name"], description)


def params(stored: dict[str, Any] | None = None) -> dict[str, Param]:
    """The trigger form: one Param per form field, generated from the request's schema.

    :param stored: a request (ours or SMX-Validator's) the form starts from
    """
    policy = settings.policy()
    defaults = parse_request(stored, default_backend=policy.default_backend) if stored else None
    return {name: Param(**spec) for name, spec in form_fields(defaults, policy).items()}


def cross_validation_dag(
    dag_id: str = "smx_cross_validation",
    schedule: Any = None,
    request: dict[str, Any] | None = None,
    **kwargs: Any,
) -> DAG:
    """The CV DAG.

    :param schedule: None (manual), a cron expression or preset, or Assets (retrain on new data)
    :param request: the request runs without a conf use (scheduled or Asset-triggered runs)
    """
    pool = settings.get("pool")
    with DAG(
        dag_id=dag_id,
        schedule=schedule,
        start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        catchup=False,
        params=params(request),
        doc_md=DOC.format(pool=pool),
        tags=["sagemaker", "cross-validation"],
        **kwargs,
    ) as dag:
        run = check_request(literal(request))  # the stored request is data, never a template
        split = split_dataset_task.override(task_id="split_dataset")(run)
        selectors = {size: fold_jobs.override(task_id=f"jobs_x{size}")(split[f"x{size}"]) for size in SLOT_SIZES}
        selectors["local"] = fold_jobs.override(task_id="jobs_local")(split["local"])
        trainers = [
            SageMakerFoldTrainingOperator.partial(
                task_id=train_task_id(size),
                pool=pool,
                pool_slots=size,
                aws_conn_id=settings.get("aws_conn_id"),
                check_interval=int(settings.get("check_interval")),
                retries=2,
                retry_delay=datetime.timedelta(minutes=1),
                map_index_template="fold {{ task.fold }}",
            ).expand_kwargs(selectors[size])
            for size in SLOT_SIZES
        ]
        trainers.append(
            LocalFoldTrainingOperator.partial(
                task_id=LOCAL_TASK,
                pool=pool,
                aws_conn_id=settings.get("aws_conn_id"),
                retries=1,
                retry_delay=datetime.timedelta(seconds=30),
                map_index_template="fold {{ task.fold }}",
            ).expand_kwargs(selectors["local"])
        )
        aggregate = aggregate_results(run, split["folds"])
        teardown = stop_unfinished_jobs()
        trainers >> aggregate >> teardown
        # The selectors are the fold tasks' setups (split_dataset cannot be: aggregate_results,
        # which follows it, must run whatever happened): the teardown waits for the folds. It
        # runs whatever happened, even with the setups skipped (a run marked failed early).
        teardown.as_teardown(setups=list(selectors.values()), on_failure_fail_dagrun=True)
        teardown.operator.trigger_rule = TriggerRule.ALL_DONE
    return dag
