"""Work spread over forked processes (they inherit the parent's imports and state: no start-up).

Forking a process that runs threads is safe only if the children touch nothing those threads
may hold: the children here read and write local files and return plain data; they do not log.
An Airflow task process handles SIGTERM itself (to call ``on_kill``); the children get the
default handlers back, so that ending the pool ends them.

Under CeleryExecutor, Airflow forks the task process from a Celery pool process, which is
daemonic, and the task inherits that flag; multiprocessing refuses a daemonic process children
(lest they outlive it). Ours never outlive the call that makes them, so the flag is lifted for
that call (``_may_have_children``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any


def available() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_forked(function: Callable[[int], Any], count: int) -> list[Any]:
    """``[function(0), ..., function(count - 1)]``, each call in its own forked process."""
    with _may_have_children():
        pool = multiprocessing.get_context("fork").Pool(count, initializer=_default_signals)
        try:
            results = pool.map(function, range(count), chunksize=1)
            pool.close()
        except BaseException:
            pool.terminate()
            raise
        finally:
            pool.join()
    return results


@contextlib.contextmanager
def _may_have_children() -> Iterator[None]:
    """Let this process start processes even if it is daemonic (see the module's docstring)."""
    current = multiprocessing.current_process()
    daemonic = current.daemon
    current.daemon = False
    try:
        yield
    finally:
        current.daemon = daemonic


def _default_signals() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
