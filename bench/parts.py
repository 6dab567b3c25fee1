"""Benchmark: the same records as one file, as 100 part files, and as 100 gzip part files.

    .venv/bin/python bench/parts.py [--records 2000000] [--parts 100]

Uses bench/split.py's manifest generator (about 155 bytes a record), cuts it into --parts
files at record boundaries (once, into bench/data/, git-ignored), then splits each form
stratified k=5 in its own process and prints the work seconds, MB/s of uncompressed records,
and the peak RSS above imports per record. All three give the same folds (tests/test_folds_parts.py).
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
sys.path.insert(0, str(HERE))
from split import generate_records, peak_rss_kib  # noqa: E402


def split_once(uri: str, out: Path) -> tuple[float, int, int]:
    import sklearn.model_selection  # noqa: F401 (an import, not the work's memory)

    from airflow_smx.core.folds import split_dataset
    from airflow_smx.core.request import CVSpec, InputSpec

    base = peak_rss_kib()
    started = time.perf_counter()
    split_dataset(
        InputSpec(uri=uri, label="class"),
        CVSpec(strategy="stratified", n_splits=5, random_state=42),
        (out / "folds").as_uri(),
    )
    return time.perf_counter() - started, base, peak_rss_kib()


def cut(source: Path, folder: Path, parts: int, compress: bool) -> None:
    """``source``'s lines in ``parts`` files of about equal size."""
    if folder.exists():
        return
    scratch = folder.with_suffix(".tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    lines = source.read_bytes().splitlines(keepends=True)
    step = -(-len(lines) // parts)
    for i in range(parts):
        body = b"".join(lines[i * step : (i + 1) * step])
        name = f"part-{i:05d}.jsonl" + (".gz" if compress else "")
        (scratch / name).write_bytes(gzip.compress(body, compresslevel=6) if compress else body)
    scratch.rename(folder)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--parts", type=int, default=100)
    parser.add_argument("--run", nargs=2, metavar=("URI", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(*split_once(args.run[0], Path(args.run[1])))
        return
    DATA.mkdir(exist_ok=True)
    source = DATA / f"manifest-{args.records}r.jsonl"
    if not source.exists():
        generate_records(source, args.records)
    forms = {"one file": source.as_uri()}
    for compress in (False, True):
        folder = DATA / f"parts-{args.records}r-{args.parts}{'-gz' if compress else ''}"
        cut(source, folder, args.parts, compress)
        forms[f"{args.parts} {'gzip ' if compress else ''}parts"] = folder.as_uri() + "/"
    megabytes = source.stat().st_size / 1e6
    print(f"{args.records:,} records, {megabytes:.0f} MB uncompressed, stratified k=5")
    print(f"{'input':<16}{'work s':>8}{'MB/s':>7}{'B/record':>10}")
    for label, uri in forms.items():
        out = DATA / "out-parts"
        shutil.rmtree(out, ignore_errors=True)
        run = subprocess.run(
            [sys.executable, __file__, "--run", uri, str(out)], capture_output=True, text=True, check=False
        )
        shutil.rmtree(out, ignore_errors=True)
        if run.returncode:
            raise SystemExit(run.stderr)
        seconds, base, peak = run.stdout.split()[-3:]
        above = (int(peak) - int(base)) * 1024 / args.records
        print(f"{label:<16}{float(seconds):>8.2f}{megabytes / float(seconds):>7.0f}{above:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
