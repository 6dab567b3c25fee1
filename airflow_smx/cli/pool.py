"""The pool that bounds the ml instances of all CV runs."""

from __future__ import annotations

import argparse

from airflow_smx import settings

DESCRIPTION = "SageMaker ml instances for airflow-smx CV runs (a fold takes InstanceCount slots)"


def setup_pool(name: str, slots: int) -> str:
    """Create ``name`` with ``slots`` if missing; make an existing pool count deferred tasks.

    A pool that does not count deferred tasks does not bound deferred training jobs at all.
    Returns what was done, for the command's output.
    """
    from airflow.models.pool import Pool

    existing = Pool.get_pool(name)
    if existing is None:
        Pool.create_or_update_pool(name, slots, DESCRIPTION, include_deferred=True)
        return f"created pool {name} with {slots} slots, counting deferred tasks"
    if not existing.include_deferred:
        Pool.create_or_update_pool(name, existing.slots, existing.description or DESCRIPTION, include_deferred=True)
        return f"pool {name} ({existing.slots} slots) now counts deferred tasks"
    return f"pool {name} exists ({existing.slots} slots, counting deferred tasks)"


def setup_pool_command(args: argparse.Namespace) -> None:
    slots = args.slots if args.slots is not None else int(settings.get("pool_slots"))
    print(setup_pool(settings.get("pool"), slots))
