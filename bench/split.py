"""Benchmark: our streaming stratified split vs a bare line copy vs an in-memory k-copies splitter.

    .venv/bin/python bench/split.py [--size-mb 500] [--folds 5]

Generates (once, into bench/data/) a JSON Lines augmented manifest with imbalanced classes
and uneven groups, then runs each contender in its own process, --repeat times (median
reported), and prints for each:

- work s: the contender's own work, timed inside its process after its imports;
- process s: the whole process, interpreter start and imports included (scikit-learn and
  scipy take about 1.5 s to import, once per process);
- peak RSS and the RSS after imports, so the work's own memory can be read off;
- bytes written / input bytes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

if "--run" in sys.argv and "ours" in sys.argv:  # imported before the work is timed, as in a worker
    from airflow_smx.core.folds import split_dataset
    from airflow_smx.core.request import CVSpec, InputSpec

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
RECORD = (
    '{{"source-ref":"s3://smx-bench/images/{i:09d}.jpg","class":{c},'
    '"class-metadata":{{"class-name":"c{c}","type":"groundtruth/image-classification"}},"site":"s{g}"}}\n'
)


def generate(path: Path, size_mb: int, seed: int = 0) -> None:
    """About ``size_mb`` MB of records."""
    generate_records(path, size_mb * 1_000_000 // len(RECORD.format(i=0, c=0, g=0)), seed)


def generate_records(path: Path, n: int, seed: int = 0) -> None:
    """``n`` records: 10 classes (largest 50x the smallest), 2,000 groups (Zipf sizes)."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, 11) ** 1.7
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as out:
        for start in range(0, n, 500_000):
            count = min(500_000, n - start)
            classes = rng.choice(10, size=count, p=weights / weights.sum())
            groups = np.minimum(rng.zipf(1.3, size=count), 2000)
            out.write(
                "".join(
                    RECORD.format(i=start + j, c=c, g=g) for j, (c, g) in enumerate(zip(classes, groups, strict=True))
                )
            )
    tmp.rename(path)


def ours(source: Path, out: Path, folds: int) -> None:
    split_dataset(
        InputSpec(uri=source.as_uri(), label="class"),
        CVSpec(strategy="stratified", n_splits=folds, random_state=42),
        (out / "folds").as_uri(),
    )


def bare_copy(source: Path, out: Path, folds: int) -> None:
    """The floor for any line-by-line splitter in Python: read each line, write it to one of k files."""
    out.mkdir(parents=True)
    parts = [(out / f"part-{i}").open("wb") for i in range(folds)]
    with source.open("rb") as handle:
        for i, line in enumerate(handle):
            parts[i % folds].write(line)
    for part in parts:
        part.close()


def in_memory(source: Path, out: Path, folds: int) -> None:
    """SMX-Validator's way: load every line, shuffle, write k validation files and k full train copies."""
    out.mkdir(parents=True)
    with source.open("rb") as handle:
        lines = handle.readlines()
    order = np.random.default_rng(42).permutation(len(lines))
    bounds = np.linspace(0, len(lines), folds + 1).astype(int)
    for k in range(folds):
        validation = order[bounds[k] : bounds[k + 1]]
        train = np.concatenate([order[: bounds[k]], order[bounds[k + 1] :]])
        (out / f"fold{k}-validation.jsonl").open("wb").writelines(lines[i] for i in validation)
        (out / f"fold{k}-train.jsonl").open("wb").writelines(lines[i] for i in train)


CONTENDERS = {"ours": ours, "bare_copy": bare_copy, "in_memory": in_memory}


def measure_once(name: str, source: Path, folds: int) -> dict:
    out = DATA / f"out-{name}"
    shutil.rmtree(out, ignore_errors=True)
    os.sync()  # flush the previous run's dirty pages, so that no run pays for another's writes
    started = time.perf_counter()
    command = [sys.executable, __file__, "--run", name, str(source), str(out), "--folds", str(folds)]
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr}")
    work, base_kib, peak_kib = result.stdout.split()[-3:]
    written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) if out.exists() else 0
    shutil.rmtree(out, ignore_errors=True)
    return {
        "work": float(work),
        "process": seconds,
        "base_mib": int(base_kib) / 1024,
        "peak_mib": int(peak_kib) / 1024,
        "written": written,
    }


def measure(name: str, source: Path, folds: int, repeat: int) -> dict:
    runs = [measure_once(name, source, folds) for _ in range(repeat)]
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def peak_rss_kib() -> int:
    """This process's peak RSS. Not ru_maxrss: Linux carries that over from the parent across exec."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=list(CONTENDERS))
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender; the median is reported")
    parser.add_argument("--run", nargs=3, metavar=("NAME", "SOURCE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        name, source, out = args.run
        base = peak_rss_kib()
        started = time.perf_counter()
        CONTENDERS[name](Path(source), Path(out), args.folds)
        print(time.perf_counter() - started, base, peak_rss_kib())
        return
    DATA.mkdir(exist_ok=True)
    source = DATA / f"manifest-{args.size_mb}mb.jsonl"
    if not source.exists():
        print(f"generating {source} ...", flush=True)
        generate(source, args.size_mb)
    size = source.stat().st_size
    with source.open("rb") as handle:
        records = sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 24), b""))
    print(f"input: {source.name}, {size / 1e6:.0f} MB, {records} records, k={args.folds}, median of {args.repeat}")
    print(
        f"{'contender':<14}{'work s':>8}{'MB/s':>7}{'process s':>11}{'RSS imports':>13}{'peak RSS':>10}{'written/in':>12}"
    )
    results = {}
    for name in args.only:
        r = results[name] = measure(name, source, args.folds, args.repeat)
        print(
            f"{name:<14}{r['work']:>8.2f}{size / 1e6 / max(r['work'], 1e-9):>7.0f}{r['process']:>11.2f}"
            f"{r['base_mib']:>10.0f} MiB{r['peak_mib']:>6.0f} MiB{r['written'] / size:>12.3f}",
            flush=True,
        )
    if {"ours", "bare_copy", "in_memory"} <= results.keys():
        ours_, bare, memory = (results[k] for k in ("ours", "bare_copy", "in_memory"))
        for what in ("work", "process"):
            print(
                f"{what:>7}: in_memory / ours = {memory[what] / ours_[what]:.1f}x (target >= 6x), "
                f"ours / bare_copy = {ours_[what] / bare[what]:.2f}x (target <= 3x)"
            )
        print(
            f"ours: peak RSS {ours_['peak_mib']:.0f} MiB, {ours_['peak_mib'] - ours_['base_mib']:.0f} MiB above its imports"
        )


if __name__ == "__main__":
    main()
