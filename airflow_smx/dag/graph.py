"""The cross-validation DAG: ``check_request -> split_dataset -> train_fold[k] -> aggregate_results
-> refit_job -> train_final -> register_model``, and the teardown ``stop_unfinished_jobs``.

Graph building only; the tasks are in :mod:`airflow_smx.dag.tasks`, the fold operators in
:mod:`airflow_smx.operators`, what differs per backend in :mod:`airflow_smx.backends`.

Why the graph has the shape it has: the pool counts ml instances, so a fold holding n instances
must take n pool slots, but Airflow fixes ``pool_slots`` per task, not per mapped instance, and
maps a task only over another task's whole return value. So there is one fold task per
(backend, slot size) the deployment needs, and only that many: ``[smx] slot_sizes`` (default
``[1]``: single-instance jobs, the common case) and a local one only where ``[smx]
local_commands`` turns the local backend on. With one fold task (a plain SageMaker deployment),
it maps straight over the split's folds and every task of a run runs: nothing is skipped. With
several, a selector per fold task routes each fold, and all of them sit in one collapsed group
(``fold_tasks``); a run skips those its folds do not need. The refit's one job goes through a
fold task of the same kind (``train_final``, ``train_final_x2``...), routed the same way.
"""

from __future__ import annotations

import contextlib
import datetime
from dataclasses import dataclass
from typing import Any

from airflow_smx import settings
from airflow_smx.backends import backend
from airflow_smx.compat import DAG, Param, TaskGroup, TriggerRule, literal
from airflow_smx.core.form import form_fields
from airflow_smx.core.request import parse_request
from airflow_smx.dag.split import SplitDatasetOperator
from airflow_smx.dag.tasks import (
    aggregate_results,
    check_request,
    refit_job,
    register_model,
    select_folds,
    stop_unfinished_jobs,
)
from airflow_smx.links.sagemaker import CrossValidationReportLink

DOC = """
### K-fold cross-validated training

Fill in the form (or send a conf: this form's fields, the nested request of
`airflow-smx schema`, or SMX-Validator's input JSON). The request is validated against the
deployment's bounds before anything touches S3 or SageMaker; every problem is named. Each fold
trains as one job, at most as many ml instances at once as the pool `{pool}` has slots. The
result: `{{output_uri}}/{{cv_run_id}}/results/cv_result.json` and `cv_report.html`. A run that
succeeds and passes its gate refits on every record but the hold-out (`train_final`) and
registers the model as the next version of the Model Package Group `crossvalidator-{{name}}`.
"""


@dataclass(frozen=True)
class FoldTask:
    """One mapped fold task: which backend trains its folds, and how many pool slots each takes."""

    backend: str
    slots: int

    def task_id(self, only: bool, what: str = "fold") -> str:
        """``train_fold`` (``train_final`` for the refit), suffixed by backend or slots when the DAG has several."""
        if only or (self.backend == "sagemaker" and self.slots == 1):
            return f"train_{what}"
        return f"train_{what}_local" if self.backend == "local" else f"train_{what}_x{self.slots}"


def fold_tasks(slot_sizes: tuple[int, ...]) -> list[FoldTask]:
    """The fold tasks this deployment needs: one per slot size, and a local one where enabled."""
    tasks = [FoldTask("sagemaker", size) for size in sorted(set(slot_sizes))]
    if settings.policy().local_commands:
        tasks.append(FoldTask("local", 1))
    return tasks


def training_tasks(
    jobs: Any, what: str, tasks: list[FoldTask], group: TaskGroup | None, pool: str, aws_conn_id: str
) -> list[Any]:
    """One mapped training task per fold task over ``jobs`` (the folds, or the refit's one job),
    each behind a selector of the jobs its backend and slots take when there are several."""
    trained = []
    for fold_task in tasks:
        trainer = backend(fold_task.backend, aws_conn_id)
        task_id = fold_task.task_id(only=len(tasks) == 1, what=what)
        with group or contextlib.nullcontext():
            source = jobs
            if group:
                selector = select_folds.override(task_id=f"{task_id}_{'folds' if what == 'fold' else 'job'}")
                source = selector(jobs, (fold_task.backend, fold_task.slots), [(t.backend, t.slots) for t in tasks])
            trained.append(
                trainer.operator.partial(
                    task_id=task_id,
                    pool=pool,
                    pool_slots=fold_task.slots,
                    map_index_template="fold {{ task.fold }}" if what == "fold" else "final",
                    **trainer.task_arguments(),
                ).expand_kwargs(source)
            )
    return trained


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
    slot_sizes: tuple[int, ...] | None = None,
    **kwargs: Any,
) -> DAG:
    """The CV DAG.

    :param schedule: None (manual), a cron expression or preset, or Assets (retrain on new data)
    :param request: the request runs without a conf use (scheduled or Asset-triggered runs)
    :param slot_sizes: pool slots a fold task takes, one fold task each (default ``[smx] slot_sizes``)
    """
    pool, aws_conn_id = settings.get("pool"), settings.get("aws_conn_id")
    sizes = tuple(slot_sizes or settings.slot_sizes())
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
        run = check_request(literal(request), max(sizes))  # the stored request is data, never a template
        split = SplitDatasetOperator(  # reads the run's XCom
            task_id="split_dataset", aws_conn_id=aws_conn_id, check_interval=int(settings.get("check_interval"))
        )
        run >> split
        folds = split.output
        tasks = fold_tasks(sizes)
        group = TaskGroup("fold_tasks", prefix_group_id=False) if len(tasks) > 1 else None
        trainers = training_tasks(folds, "fold", tasks, group, pool, aws_conn_id)
        aggregate = aggregate_results()
        aggregate.operator.operator_extra_links = (CrossValidationReportLink(),)  # @task takes no links
        refit = refit_job()
        finals = training_tasks(refit, "final", tasks, group, pool, aws_conn_id)
        register = register_model()
        teardown = stop_unfinished_jobs()
        trainers >> aggregate >> refit
        finals >> register >> teardown
        # A teardown runs even when the run is marked failed (Airflow kills the others), and
        # all_done: also when its inputs were never made (a run marked failed before the split).
        teardown.as_teardown(on_failure_fail_dagrun=True)
        teardown.operator.trigger_rule = TriggerRule.ALL_DONE
    return dag
