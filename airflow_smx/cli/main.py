"""The ``airflow-smx`` command: check a request, split a dataset, print the request schema, set up the pool.

Exit codes: 0 done; 2 the request or the input is invalid (every problem is printed);
1 anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from airflow_smx.core import storage
from airflow_smx.core.folds import FoldPlan, SplitError, split_dataset
from airflow_smx.core.naming import cv_run_id
from airflow_smx.core.request import (
    CVSpec,
    InputSpec,
    RequestError,
    format_problems,
    parse_request,
    request_json_schema,
)

INVALID = 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.run(args)
    except RequestError as error:
        print(error, file=sys.stderr)
        return INVALID
    except SplitError as error:
        print(f"cannot split: {error}", file=sys.stderr)
        return INVALID


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airflow-smx", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="validate a request (ours or SMX-Validator's) and print it normalized")
    check.add_argument("conf", metavar="CONF.json")
    check.set_defaults(run=_check)

    split = commands.add_parser(
        "split",
        help="split a dataset into folds: from a request file, or from flags",
        description="Write the folds of CONF.json's input, or of --input with the flags below, under "
        "{output}/{run-id}/folds/ and print a summary.",
    )
    split.add_argument("conf", metavar="CONF.json", nargs="?", help="a request file (instead of the flags)")
    split.add_argument("--input", help="input URI or local path")
    split.add_argument("--output", help="output URI or local folder")
    split.add_argument("--format", choices=["auto", "csv", "jsonl"], default="auto")
    split.add_argument("--label", help="label key (JSON Lines, dotted) or column (CSV name or 0-based index)")
    split.add_argument("--group", help="group key or column")
    split.add_argument("--csv-header", action="store_true", help="the CSV's first line is a header")
    split.add_argument("--strategy", choices=["kfold", "stratified", "group", "stratified_group"], default="kfold")
    split.add_argument("--n-splits", type=int, default=5)
    split.add_argument("--n-repeats", type=int, default=1)
    split.add_argument("--seed", type=int, default=42, help="random_state")
    split.add_argument("--holdout", type=float, default=0.0, help="fraction held out as a test set")
    split.add_argument("--no-shuffle", action="store_true", help="contiguous folds in file order")
    split.add_argument("--allow-small-classes", action="store_true")
    split.add_argument("--assemble-train", action="store_true", help="also write one train file per fold")
    split.add_argument("--name", default="split", help="run name (flag form)")
    split.add_argument("--run-id", help="folder under the output URI; default {name}-{YYYYMMDD}-{HHMMSS} (UTC now)")
    split.set_defaults(run=_split)

    schema = commands.add_parser("schema", help="print the request's JSON schema")
    schema.set_defaults(run=lambda args: _print_json(request_json_schema()))

    # `airflow smx setup-pool` where Airflow loads providers' commands (3.2+); this one everywhere
    pool = commands.add_parser("setup-pool", help="create the ml-instance pool if missing, counting deferred tasks")
    pool.add_argument("--slots", type=int, default=None, help="pool size in ml instances (default: [smx] pool_slots)")
    pool.set_defaults(run=_setup_pool)
    return parser


def _setup_pool(args: argparse.Namespace) -> int:
    from airflow_smx.cli.pool import setup_pool_command  # imports Airflow: only this command needs it

    setup_pool_command(args)
    return 0


def _print_json(value: Any) -> int:
    print(json.dumps(value, indent=2))
    return 0


def _load(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except OSError as error:
        raise RequestError([f"{path}: cannot read: {error.strerror}"]) from None
    except json.JSONDecodeError as error:
        raise RequestError([f"{path}: not JSON: {error}"]) from None


def _check(args: argparse.Namespace) -> int:
    request = parse_request(_load(args.conf))
    return _print_json(request.model_dump(mode="json"))


def _split(args: argparse.Namespace) -> int:
    if args.conf:
        request = parse_request(_load(args.conf))
        name, spec, cv, output = request.name, request.input, request.cv, request.output_uri
        assemble = args.assemble_train or request.channels.train.needs_single_object
    else:
        spec, cv = _specs_from_flags(args)
        name, output, assemble = args.name, _as_uri(args.output), args.assemble_train
    run_id = args.run_id or cv_run_id(name, datetime.now(UTC))
    folds_uri = storage.join(output, run_id, "folds")
    started = time.perf_counter()
    plan = split_dataset(spec, cv, folds_uri, assemble_train=assemble)
    _print_summary(plan, time.perf_counter() - started)
    return 0


def _specs_from_flags(args: argparse.Namespace) -> tuple[InputSpec, CVSpec]:
    """The input and cv parts of a request, from the flags (a split needs nothing else)."""
    missing = [f"--{name}: required (or give CONF.json)" for name in ("input", "output") if not getattr(args, name)]
    if missing:
        raise RequestError(missing)
    spec = {
        "uri": _as_uri(args.input),
        "format": args.format,
        "label": _column(args.label),
        "group": _column(args.group),
        "csv_header": args.csv_header,
    }
    cv = {
        "strategy": args.strategy,
        "n_splits": args.n_splits,
        "n_repeats": args.n_repeats,
        "random_state": args.seed,
        "holdout": args.holdout,
        "shuffle": not args.no_shuffle,
        "allow_small_classes": args.allow_small_classes,
    }
    problems, parsed = [], []
    for prefix, model, values in (("input", InputSpec, spec), ("cv", CVSpec, cv)):
        try:
            parsed.append(model.model_validate(values))
        except ValidationError as error:
            problems += [f"{prefix}.{line}" for line in format_problems(error)]
    if problems:
        raise RequestError(problems)
    return parsed[0], parsed[1]


def _as_uri(value: str) -> str:
    return value if "://" in value else Path(value).resolve().as_uri()


def _column(value: str | None) -> str | int | None:
    return int(value) if value is not None and value.isdigit() else value


def _print_summary(plan: FoldPlan, seconds: float) -> None:
    megabytes = plan.input["bytes"] / 1e6
    print(f"records:   {plan.n_records} ({megabytes:.1f} MB {plan.input['format']}, {plan.input['compression']})")
    print(f"strategy:  {plan.strategy}, {plan.n_splits} folds x {plan.n_repeats} repeats, seed {plan.random_state}")
    if plan.holdout:
        print(f"hold-out:  {plan.n_holdout} records -> {plan.holdout}")
    if plan.classes:
        print(f"classes:   {plan.n_classes}: " + ", ".join(f"{k}={v}" for k, v in plan.classes.items()))
    if plan.n_groups is not None:
        print(f"groups:    {plan.n_groups}")
    print(f"{'fold':>6} {'repeat':>6} {'train':>10} {'validation':>10}")
    for fold in plan.folds:
        print(f"{fold.index:>6} {fold.repeat:>6} {fold.n_train:>10} {fold.n_validation:>10}")
    print(f"time:      {seconds:.2f} s, {megabytes / max(seconds, 1e-9):.1f} MB/s")
    print(f"plan:      {storage.join(plan.prefix, 'plan.json')}")
