"""``airflow smx ...``: deployment commands the provider adds to Airflow's CLI."""

from __future__ import annotations

from typing import Any

from airflow.cli.cli_config import ActionCommand, Arg, GroupCommand, lazy_load_command

ARG_SLOTS = Arg(("--slots",), type=int, default=None, help="pool size in ml instances (default: [smx] pool_slots)")


def get_cli_commands() -> list[Any]:
    return [
        GroupCommand(
            name="smx",
            help="airflow-smx: cross-validated training",
            subcommands=(
                ActionCommand(
                    name="setup-pool",
                    help="Create the ml-instance pool if missing, counting deferred tasks (idempotent)",
                    func=lazy_load_command("airflow_smx.cli.pool.setup_pool_command"),
                    args=(ARG_SLOTS,),
                ),
            ),
        )
    ]
