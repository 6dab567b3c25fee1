"""Benchmark: the split of an S3 input against a plain parallel download of the same bytes.

    .venv/bin/python bench/s3.py [--records 1000000] [--parts 0] [--repeat 3] [--log]

Starts moto's S3 server (the endpoint the tests use) in its own process, uploads bench/split.py's
manifest (about 155 bytes a record) as one object (or as --parts part files under a prefix),
then, each in a fresh process, times:

- download: the same bytes fetched by boto3's transfer manager (ranged GETs on 10 threads,
  10 files at a time, as `aws s3 cp` does), written to local files: the floor for anything
  that reads them;
- upload: the same bytes put back the same way: the floor for writing folds that hold them;
- split: split_dataset stratified k=5 from that S3 input to S3 folds, as a run does.

and prints split / download, split / (download + upload) and the floor, (download + upload) /
download: no split can take less, as it writes no part before it has read every record. All talk to the same one-process
server on this machine, so the ratios, not the seconds, are what carries over to S3.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
sys.path.insert(0, str(HERE))
from parts import cut  # noqa: E402
from split import generate_records  # noqa: E402

BUCKET = "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server() -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, endpoint
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("moto's server did not start")


def client():
    import boto3

    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")


def upload(files: list[Path], prefix: str) -> None:
    s3 = client()
    s3.create_bucket(Bucket=BUCKET)
    for path in files:
        s3.upload_file(str(path), BUCKET, f"{prefix}{path.name}")


def side_by_side(transfer: Callable[[int, str], None], items: list[str]) -> float:
    """``transfer`` of every item, 10 at a time (as `aws s3 cp --recursive`), in seconds."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(transfer, range(len(items)), items))
    return time.perf_counter() - started


def download(keys: list[str]) -> float:
    """boto3's transfer manager, each key to a local file (discarded)."""
    from boto3.s3.transfer import TransferConfig

    s3, config = client(), TransferConfig(max_concurrency=10)
    with tempfile.TemporaryDirectory() as scratch:
        return side_by_side(
            lambda i, key: s3.download_file(BUCKET, key, os.path.join(scratch, str(i)), Config=config), keys
        )


def upload_again(paths: list[str]) -> float:
    """boto3's transfer manager, each local file to a new key."""
    from boto3.s3.transfer import TransferConfig

    s3, config = client(), TransferConfig(max_concurrency=10)
    return side_by_side(
        lambda i, path: s3.upload_file(path, BUCKET, f"again/{time.time_ns()}-{i}", Config=config), paths
    )


def split(uri: str) -> float:
    import fsspec
    import sklearn.model_selection  # noqa: F401 (an import, not the work)

    # s3fs's client made and connected before the clock starts, as download()'s is (a task that
    # splits pays for it once, as `aws s3 cp` does: 0.8 s of imports, and botocore's models)
    fsspec.filesystem("s3").ls(BUCKET)

    from airflow_smx.core.folds import split_dataset
    from airflow_smx.core.request import CVSpec, InputSpec

    started = time.perf_counter()
    logging.getLogger(__name__).info("split starts")
    split_dataset(
        InputSpec(uri=uri, label="class"),
        CVSpec(strategy="stratified", n_splits=5, random_state=42),
        f"s3://{BUCKET}/runs/{time.time_ns()}/folds",
    )
    return time.perf_counter() - started


def timed(what: str, argument: str, log: bool = False) -> float:
    run = subprocess.run(
        [sys.executable, __file__, "--run", what, argument, *(["--log"] if log else [])],
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode:
        raise SystemExit(run.stderr)
    if log:
        print(run.stderr, end="")
    return float(run.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--parts", type=int, default=0, help="upload as this many part files (0: one object)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--run", nargs=2, metavar=("WHAT", "ARG"), help=argparse.SUPPRESS)
    parser.add_argument("--log", action="store_true", help="print the split's log, ms since its process started")
    args = parser.parse_args()
    if args.run and args.log:
        logging.basicConfig(level=logging.INFO, format="%(relativeCreated)6.0f ms %(name)s: %(message)s")
        for noisy in ("botocore", "aiobotocore", "s3fs"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.run:
        what, argument = args.run
        measure = {
            "download": lambda: download(argument.split(",")),
            "upload": lambda: upload_again(argument.split(",")),
        }
        print(measure[what]() if what in measure else split(argument))
        return
    DATA.mkdir(exist_ok=True)
    source = DATA / f"manifest-{args.records}r.jsonl"
    if not source.exists():
        generate_records(source, args.records)
    if args.parts:
        folder = DATA / f"parts-{args.records}r-{args.parts}"
        cut(source, folder, args.parts, compress=False)
        files, prefix = sorted(folder.iterdir()), "input/parts/"
        uri = f"s3://{BUCKET}/{prefix}"
    else:
        files, prefix = [source], "input/"
        uri = f"s3://{BUCKET}/input/{source.name}"
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    server, os.environ["AWS_ENDPOINT_URL"] = start_server()
    try:
        upload(files, prefix)
        keys = ",".join(f"{prefix}{path.name}" for path in files)
        megabytes = sum(path.stat().st_size for path in files) / 1e6
        print(f"{args.records:,} records, {megabytes:.0f} MB in {len(files)} object(s), stratified k=5")
        print(
            f"{'try':<5}{'download s':>11}{'upload s':>9}{'split s':>9}{'/download':>10}{'/(down+up)':>11}{'floor':>7}"
        )
        ratios = []
        for attempt in range(args.repeat):
            fetched, put = timed("download", keys), timed("upload", ",".join(map(str, files)))
            splitted = timed("split", uri, args.log)
            # floor: (download + upload) / download, the least any split takes here: it writes no
            # part before it has read every record (the folds depend on all labels)
            ratios.append((splitted / fetched, splitted / (fetched + put), (fetched + put) / fetched))
            print(
                f"{attempt + 1:<5}{fetched:>11.2f}{put:>9.2f}{splitted:>9.2f}"
                + "".join(f"{ratio:>{width}.2f}" for ratio, width in zip(ratios[-1], (10, 11, 7), strict=True)),
                flush=True,
            )
        split_down, split_floor, floor = (sorted(column)[len(ratios) // 2] for column in zip(*ratios, strict=True))
        print(
            f"medians: split / download {split_down:.2f}, split / (download + upload) {split_floor:.2f},"
            f" (download + upload) / download {floor:.2f}"
        )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
