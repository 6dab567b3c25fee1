"""Benchmark: a split's memory per record, for each strategy, and the fold assignment alone at scale.

    .venv/bin/python bench/memory.py split --records 1000000 10000000
    .venv/bin/python bench/memory.py split --records 10000000 --strategies stratified --limit-gib 2
    .venv/bin/python bench/memory.py assign --records 100000000

``split``: generates (once, into bench/data/, git-ignored) a JSON Lines manifest of N records
like bench/split.py's (10 skewed classes, 2,000 Zipf-sized groups, about 155 bytes a record),
then splits it k=5 with each strategy, each in its own process, and prints the process's peak
RSS above its RSS after imports, per record. Forked scan and write workers are separate
processes: the largest one's peak RSS is printed too (it includes the pages it shares with its
parent). ``--limit-gib`` runs each split in a cgroup (v1) whose memory limit counts every
process of the split together; the kernel kills the split if it goes beyond.

``assign``: fold assignment alone (what the split does between its two passes) on N synthetic
records held as the scan holds them (uint8 label codes, uint16 group codes), in-process.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
STRATEGIES = ("kfold", "stratified", "group", "stratified_group")
CGROUP = Path("/sys/fs/cgroup/memory")

sys.path.insert(0, str(HERE))
from split import generate_records, peak_rss_kib  # noqa: E402


def split_once(strategy: str, source: Path, out: Path) -> tuple[float, int, int, int]:
    """In this process: (seconds, RSS after imports, peak RSS, largest worker's peak RSS), KiB."""
    import sklearn.model_selection  # noqa: F401 (an import, not the work's memory; some strategies need it)

    from airflow_smx.core.folds import split_dataset
    from airflow_smx.core.request import CVSpec, InputSpec

    base = peak_rss_kib()
    started = time.perf_counter()
    split_dataset(
        InputSpec(uri=source.as_uri(), label="class", group="site"),
        CVSpec(strategy=strategy, n_splits=5, random_state=42),
        (out / "folds").as_uri(),
    )
    seconds = time.perf_counter() - started
    return seconds, base, peak_rss_kib(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def run_split(strategy: str, source: Path, limit_gib: float | None) -> dict:
    out = DATA / f"out-memory-{strategy}"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, __file__, "--run", strategy, str(source), str(out)]
    group = None
    if limit_gib:
        group = CGROUP / f"smx-bench-{os.getpid()}"
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(int(limit_gib * (1 << 30))))
        command = ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh", *command]
    try:
        result = subprocess.run(command, capture_output=True, text=True)
        killed = group is not None and int((group / "memory.failcnt").read_text()) > 0 and result.returncode
        if result.returncode != 0:
            raise SystemExit(f"{strategy} failed{' (killed at the memory limit)' if killed else ''}:\n{result.stderr}")
        group_peak = int((group / "memory.max_usage_in_bytes").read_text()) if group else None
    finally:
        shutil.rmtree(out, ignore_errors=True)
        if group is not None:
            group.rmdir()
    seconds, base, peak, worker = result.stdout.split()[-4:]
    return {
        "seconds": float(seconds),
        "base_kib": int(base),
        "peak_kib": int(peak),
        "worker_kib": int(worker),
        "group_bytes": group_peak,
    }


def split_benchmark(records: list[int], strategies: list[str], limit_gib: float | None) -> None:
    DATA.mkdir(exist_ok=True)
    print(
        f"{'records':>11} {'strategy':<17}{'work s':>7}{'imports':>9}{'peak':>10}{'B/record':>10}{'worker':>9}", end=""
    )
    print(f"{'cgroup peak':>13}" if limit_gib else "")
    for n in records:
        source = DATA / f"manifest-{n}r.jsonl"
        if not source.exists():
            print(f"generating {source.name} ...", flush=True)
            generate_records(source, n)
        for strategy in strategies:
            r = run_split(strategy, source, limit_gib)
            above = (r["peak_kib"] - r["base_kib"]) * 1024
            line = (
                f"{n:>11,} {strategy:<17}{r['seconds']:>7.1f}{r['base_kib'] / 1024:>5.0f} MiB"
                f"{r['peak_kib'] / 1024:>6.0f} MiB{above / n:>10.1f}{r['worker_kib'] / 1024:>5.0f} MiB"
            )
            if limit_gib:
                line += f"{r['group_bytes'] / (1 << 20):>9.0f} MiB (limit {limit_gib:g} GiB)"
            print(line, flush=True)


def assign_benchmark(records: list[int], strategies: list[str]) -> None:
    import sklearn.model_selection  # noqa: F401 (as in split_once: an import, not the work's memory)

    from airflow_smx.core.folds import assign_folds
    from airflow_smx.core.request import CVSpec

    print(f"{'records':>13} {'strategy':<17}{'seconds':>8}{'above inputs':>14}{'B/record':>10}")
    for n in records:
        rng = np.random.default_rng(0)
        weights = 1.0 / np.arange(1, 11) ** 1.7
        labels = np.empty(n, dtype=np.uint8)
        groups = np.empty(n, dtype=np.uint16)
        for begin in range(0, n, 1 << 24):  # drawn in steps: the draws themselves are int64
            end = min(n, begin + (1 << 24))
            labels[begin:end] = rng.choice(10, size=end - begin, p=weights / weights.sum())
            groups[begin:end] = np.minimum(rng.zipf(1.3, size=end - begin), 2000) - 1
        for strategy in strategies:
            # the peak is read from the kernel's high-water mark, reset before each strategy
            Path("/proc/self/clear_refs").write_text("5")
            base = peak_rss_kib()
            started = time.perf_counter()
            assignment = assign_folds(CVSpec(strategy=strategy, n_splits=5, random_state=42), n, labels, groups)
            seconds = time.perf_counter() - started
            above = (peak_rss_kib() - base) * 1024
            del assignment
            print(f"{n:>13,} {strategy:<17}{seconds:>8.1f}{above / (1 << 20):>10.0f} MiB{above / n:>10.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", nargs="?", choices=("split", "assign"), default="split")
    parser.add_argument("--records", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--limit-gib", type=float, help="run each split in a cgroup with this memory limit")
    parser.add_argument("--run", nargs=3, metavar=("STRATEGY", "SOURCE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        strategy, source, out = args.run
        print(*split_once(strategy, Path(source), Path(out)))
    elif args.what == "assign":
        assign_benchmark(args.records, args.strategies)
    else:
        split_benchmark(args.records, args.strategies, args.limit_gib)


if __name__ == "__main__":
    main()
