"""An input of many files (a prefix of part files, as Spark, Glue, Athena or Firehose write it):
records numbered across the files in key order, folds equal to scikit-learn's over the
concatenation, each file gzip or not, a CSV header in each, errors naming the file."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import logging
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold

from airflow_smx.core import storage
from airflow_smx.core.folds import SplitError, split_dataset
from airflow_smx.core.folds.records import open_input, runs_of
from airflow_smx.core.folds.stage import stored_size
from airflow_smx.core.request import CVSpec, InputSpec
from tests.conftest import make_records

HEADER = b"id,class,patient"


def csv_lines(records: list[dict]) -> list[bytes]:
    return [f"{r['id']},{r['class']},{r['meta']['patient']}".encode() for r in records]


def write_parts(folder: Path, lines: list[bytes], n_parts: int, header: bytes | None = HEADER) -> list[Path]:
    """``lines`` cut into ``n_parts`` files, every third gzip-compressed, each with ``header``."""
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(lines), n_parts + 1).astype(int)
    paths = []
    for i in range(n_parts):
        body = b"".join(line + b"\n" for line in ([header] if header else []) + lines[bounds[i] : bounds[i + 1]])
        gz = i % 3 == 0
        path = folder / f"part-{i:05d}.csv{'.gz' if gz else ''}"
        path.write_bytes(gzip.compress(body) if gz else body)
        paths.append(path)
    return paths


def ids_of(uri: str) -> list[int]:
    lines = Path(uri.removeprefix("file://")).read_bytes().splitlines()
    return [int(line.split(b",")[0]) for line in lines if line != HEADER]


def test_a_prefix_of_100_parts_splits_as_their_concatenation(tmp_path):
    records = make_records(3000, seed=4)
    write_parts(tmp_path / "export", csv_lines(records), 100)
    (tmp_path / "export" / "_SUCCESS").write_bytes(b"")  # Spark's marker, and an empty file: not parts
    (tmp_path / "export" / ".part-00000.csv.crc").write_bytes(b"\x00crc")
    spec = InputSpec(uri=(tmp_path / "export").as_uri() + "/", label="class", csv_header=True)
    plan = split_dataset(spec, CVSpec(strategy="stratified", n_splits=5, random_state=9), (tmp_path / "out").as_uri())

    assert (plan.n_records, plan.input["files"], plan.input["compression"]) == (3000, 100, "mixed")
    y = np.array([r["class"] for r in records])  # records in key order = the concatenation's
    expected = [test.tolist() for _, test in StratifiedKFold(5, shuffle=True, random_state=9).split(y, y)]
    assert [ids_of(f.validation) for f in plan.folds] == expected
    # parts hold records only, the header is written once; train channels list our parts, not copies
    assert (tmp_path / "out" / "header.csv").read_bytes() == HEADER + b"\n"
    manifest = json.loads(Path(plan.folds[0].train_manifest.removeprefix("file://")).read_text())
    assert manifest[1:] == [f"part-0000{i}.csv" for i in range(1, 5)]


def test_parts_are_numbered_in_key_order(tmp_path):
    """S3 lists keys in byte order: part-10 comes before part-9, and so do its records."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "part-9.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in range(0, 10)))
    (folder / "part-10.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in range(10, 20)))
    plan = split_dataset(
        InputSpec(uri=folder.as_uri() + "/"), CVSpec(n_splits=2, shuffle=False), (tmp_path / "out").as_uri()
    )
    first = [json.loads(line)["id"] for line in Path(plan.folds[0].validation[7:]).read_text().splitlines()]
    assert first == list(range(10, 20))  # fold 0 (unshuffled) holds the first 10 records: part-10's


def test_a_prefix_on_s3_splits_like_the_same_records_in_one_file(s3, tmp_path):
    records = make_records(1200, seed=8)
    lines = csv_lines(records)
    for path in write_parts(tmp_path / "parts", lines, 7):
        s3.put_object(Bucket="bucket", Key=f"exports/table/{path.name}", Body=path.read_bytes())
    one = tmp_path / "one.csv"
    one.write_bytes(b"".join(line + b"\n" for line in [HEADER, *lines]))
    cv = CVSpec(strategy="stratified_group", n_splits=4, random_state=3, holdout=0.1)

    def spec(uri: str) -> InputSpec:
        return InputSpec(uri=uri, label="class", group="patient", csv_header=True)

    on_s3 = split_dataset(spec("s3://bucket/exports/table/"), cv, "s3://bucket/runs/r1/folds")
    local = split_dataset(spec(one.as_uri()), cv, (tmp_path / "out").as_uri())
    for ours, theirs in zip([*on_s3.folds, on_s3], [*local.folds, local], strict=True):
        key = (ours.validation if hasattr(ours, "validation") else ours.holdout).removeprefix("s3://bucket/")
        theirs_uri = theirs.validation if hasattr(theirs, "validation") else theirs.holdout
        assert s3.get_object(Bucket="bucket", Key=key)["Body"].read() == Path(theirs_uri[7:]).read_bytes()
    assert on_s3.input["files"] == 7 and on_s3.n_holdout == local.n_holdout


def test_a_prefix_on_s3_is_sized_without_a_read_and_split_reading_each_file_once(s3, tmp_path, monkeypatch):
    """Sizing a many-file input (what the task does to pick where to split, what every instance of
    a several-instance split does) only lists it; a split reads each file once, and tells gzip
    from text as it reads, not with a request per file."""
    monkeypatch.setattr("airflow_smx.core.folds.stage.STAGE_MIN_BYTES", 0)  # this small input is fetched too
    keys = []
    for path in write_parts(tmp_path / "parts", csv_lines(make_records(300, seed=2)), 5):
        keys.append(f"exports/t/{path.name}")
        s3.put_object(Bucket="bucket", Key=keys[-1], Body=path.read_bytes())
    gets = []
    fs = storage.filesystem("s3://bucket/")[0]  # fsspec's cached instance: the one the split uses
    fs.s3.meta.events.register("before-parameter-build.s3.GetObject", lambda params, **_: gets.append(params["Key"]))

    source = open_input("s3://bucket/exports/t/")
    assert stored_size(source) == sum(path.stat().st_size for path in (tmp_path / "parts").iterdir())
    assert gets == []
    spec = InputSpec(uri=source.uri, label="class", csv_header=True)
    plan = split_dataset(spec, CVSpec(), "", write=False)
    assert sorted(gets) == keys
    assert plan.n_records == 300 and plan.input["compression"] == "mixed"  # as read from the copies

    gets.clear()  # read from S3 where it lies (a small input, or no local room): told as each file is read
    monkeypatch.setattr("airflow_smx.core.folds.stage.STAGE_MIN_BYTES", 10**9)
    assert split_dataset(spec, CVSpec(), "", write=False).input == plan.input
    assert Counter(gets) == {key: 1 for key in keys} | {keys[0]: 2}  # the first also for its first record


def test_a_bad_record_is_named_by_its_file_and_line(tmp_path):
    paths = write_parts(tmp_path / "in", csv_lines(make_records(300, seed=1)), 4, header=None)
    plain = paths[2]  # part 2 is not compressed
    lines = plain.read_bytes().splitlines()
    lines[4] = b'7,"c0,p1'  # an unclosed quote on line 5 of that file
    plain.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(SplitError, match=rf"{plain.as_uri()} line 5: malformed CSV"):
        split_dataset(InputSpec(uri=(tmp_path / "in").as_uri() + "/", label=1), CVSpec(), (tmp_path / "o").as_uri())
    assert not (tmp_path / "o").exists()


def test_parts_must_share_the_header(tmp_path):
    paths = write_parts(tmp_path / "in", csv_lines(make_records(200, seed=1)), 3)
    other = paths[1]  # not compressed
    other.write_bytes(other.read_bytes().replace(HEADER, b"id,label,patient", 1))
    spec = InputSpec(uri=(tmp_path / "in").as_uri() + "/", label="class", csv_header=True)
    with pytest.raises(SplitError, match=rf"{other.as_uri()} line 1: the CSV header differs from the first file's"):
        split_dataset(spec, CVSpec(), (tmp_path / "o").as_uri())


def test_a_prefix_with_no_parts_is_refused(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "_SUCCESS").write_bytes(b"")
    with pytest.raises(SplitError, match=r"input.uri: no files under the prefix"):
        split_dataset(InputSpec(uri=(tmp_path / "in").as_uri() + "/"), CVSpec(), (tmp_path / "o").as_uri())


def test_a_jobs_staging_folders_and_markers_are_not_parts(tmp_path):
    """Spark leaves ``_temporary/`` behind a failed job; Delta keeps ``_delta_log/``: neither is data."""
    write_parts(tmp_path / "in", csv_lines(make_records(100, seed=2)), 2, header=None)
    for stray in ("_temporary/0/_temporary/attempt_1/part-00000.csv", "_delta_log/00000.json", ".hidden/part-9.csv"):
        (tmp_path / "in" / stray).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / stray).write_bytes(b"999,c9,p9\n")
    (tmp_path / "in" / "2026" / "part-00002.csv").parent.mkdir()
    (tmp_path / "in" / "2026" / "part-00002.csv").write_bytes(b"100,c0,p0\n")  # a partition folder is data
    plan = split_dataset(InputSpec(uri=(tmp_path / "in").as_uri() + "/", label=1), CVSpec(), (tmp_path / "o").as_uri())
    assert (plan.input["files"], plan.n_records) == (3, 101)


def test_a_part_removed_while_it_is_read_is_named(tmp_path):
    write_parts(tmp_path / "in", csv_lines(make_records(90, seed=3)), 3, header=None)
    source = open_input((tmp_path / "in").as_uri() + "/")
    (tmp_path / "in" / "part-00001.csv").unlink()
    gone = (tmp_path / "in" / "part-00001.csv").as_uri()
    with pytest.raises(SplitError, match=rf"input.uri: {gone} was removed while it was being split; run again"):
        list(source.chunks())
    assert source.fingerprint() != source.opened_as


def test_the_same_bytes_cut_into_other_files_are_another_input(tmp_path):
    """The identity a rerun reuses a split by counts the files' names and sizes, not only their bytes:
    the folds reference parts, so parts cut elsewhere are not the same split."""
    lines = csv_lines(make_records(60, seed=5))
    for name, cut in (("a", 20), ("b", 30)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "part-0.csv").write_bytes(b"".join(line + b"\n" for line in lines[:cut]))
        (tmp_path / name / "part-1.csv").write_bytes(b"".join(line + b"\n" for line in lines[cut:]))
    plans = [
        split_dataset(InputSpec(uri=(tmp_path / name).as_uri() + "/", label=1), CVSpec(), "", write=False)
        for name in "ab"
    ]
    assert plans[0].n_records == plans[1].n_records == 60
    assert plans[0].input["sha256"] != plans[1].input["sha256"]
    digest = hashlib.sha256()  # each file's name and size, then the sha256 of its bytes as stored
    for name in ("part-0.csv", "part-1.csv"):
        body = (tmp_path / "a" / name).read_bytes()
        digest.update(f"{name}\0{len(body)}\0".encode() + hashlib.sha256(body).digest())
    assert plans[0].input["sha256"] == digest.hexdigest()


def written(out: Path) -> dict[Path, bytes]:
    """Every file a split wrote, its own folder's path replaced (the manifests name it)."""
    files = sorted(p for p in out.rglob("*") if p.is_file())
    return {p.relative_to(out): p.read_bytes().replace(str(out).encode(), b"OUT") for p in files}


@pytest.mark.parametrize("strategy", ["stratified", "stratified_group"])
def test_many_files_scanned_and_written_by_several_processes_give_the_same_split(tmp_path, strategy, caplog):
    """Runs of whole files (every third gzip) read by 2, 3 or 4 processes: the same plan, checksum
    included, and the same bytes in every part as one process writes, and scikit-learn's folds."""
    caplog.set_level(logging.INFO, logger="airflow_smx")
    records = make_records(2500, seed=11)
    write_parts(tmp_path / "in", csv_lines(records), 37)
    spec = InputSpec(uri=(tmp_path / "in").as_uri() + "/", label="class", group="patient", csv_header=True)
    cv = CVSpec(strategy=strategy, n_splits=4, holdout=0.1, random_state=5)
    outputs, plans = {}, {}
    for workers in (1, 2, 3, 4):
        out = tmp_path / f"w{workers}"
        plans[workers] = split_dataset(spec, cv, out.as_uri(), workers=workers, final=True)
        outputs[workers] = written(out)
    read_in = [r.getMessage().rsplit(" in ", 1)[1] for r in caplog.records if r.getMessage().startswith("reading ")]
    assert read_in == ["2 processes", "3 processes", "4 processes"]  # one process logs no such line
    assert outputs[1] == outputs[2] == outputs[3] == outputs[4] and len(outputs[1]) > 10
    assert plans[1].input == plans[4].input and plans[1].input["files"] == 37
    if strategy == "stratified":  # without a hold-out drawn first, the folds are StratifiedKFold's own
        plain = split_dataset(spec, CVSpec(strategy=strategy, n_splits=4, random_state=5), "", workers=3, write=False)
        y = np.array([r["class"] for r in records])
        expected = [test.size for _, test in StratifiedKFold(4, shuffle=True, random_state=5).split(y, y)]
        assert [f.n_validation for f in plain.folds] == expected


def test_gzip_files_small_as_stored_but_large_to_read_get_several_processes(tmp_path, caplog, monkeypatch):
    """Whether forking pays is judged by the bytes the files hold, not by their stored size."""
    caplog.set_level(logging.INFO, logger="airflow_smx")
    monkeypatch.setattr("airflow_smx.core.folds.scan.PARALLEL_MIN_BYTES", 100_000)  # 64 MiB, scaled down
    monkeypatch.setattr("airflow_smx.core.folds.processes.cpu_count", lambda: 2)  # whatever this machine has
    lines = csv_lines(make_records(12_000, seed=4))
    (tmp_path / "in").mkdir()
    for i in range(4):
        body = b"".join(line + b"\n" for line in lines[i * 3000 : (i + 1) * 3000])
        (tmp_path / "in" / f"part-{i}.csv.gz").write_bytes(gzip.compress(body))
    stored = sum(path.stat().st_size for path in (tmp_path / "in").iterdir())
    assert stored < 100_000 < sum(map(len, lines))
    spec = InputSpec(uri=(tmp_path / "in").as_uri() + "/", label=1)
    assert split_dataset(spec, CVSpec(), "", write=False).n_records == 12_000
    assert any(r.getMessage().endswith("in 2 processes") for r in caplog.records)


def test_the_first_bad_file_in_key_order_is_named_whichever_process_reads_it(tmp_path):
    """Several files are broken; the processes meet them in any order, the error is the one a
    single process meets first: a later run of files' gzip error does not mask an earlier bad line."""
    paths = write_parts(tmp_path / "in", csv_lines(make_records(600, seed=1)), 12, header=None)
    early, late = paths[4], paths[10]  # neither compressed; the one process meets part 4 first
    lines = early.read_bytes().splitlines()
    lines[2] = b'7,"c0,p1'
    early.write_bytes(b"\n".join(lines) + b"\n")
    late.write_bytes(b"\x1f\x8b" + b"not gzip at all")  # gzip by its first bytes: unreadable
    spec = InputSpec(uri=(tmp_path / "in").as_uri() + "/", label=1)
    messages = set()
    for workers in (1, 2, 4):
        with pytest.raises(SplitError) as error:
            split_dataset(spec, CVSpec(), (tmp_path / "o").as_uri(), workers=workers)
        messages.add(str(error.value))
    (message,) = messages
    assert message.startswith(f"{early.as_uri()} line 3: malformed CSV"), message
    assert not (tmp_path / "o").exists()


def test_a_file_whose_header_differs_is_named_by_any_process(tmp_path):
    paths = write_parts(tmp_path / "in", csv_lines(make_records(400, seed=2)), 9)
    other = paths[7]  # not compressed, in the last run of files whatever the number of processes
    other.write_bytes(other.read_bytes().replace(HEADER, b"id,label,patient", 1))
    spec = InputSpec(uri=(tmp_path / "in").as_uri() + "/", label="class", csv_header=True)
    for workers in (2, 3):
        with pytest.raises(SplitError, match=rf"{other.as_uri()} line 1: the CSV header differs from the first file's"):
            split_dataset(spec, CVSpec(), (tmp_path / "o").as_uri(), workers=workers)


def test_a_run_of_files_holding_only_the_first_folds_still_writes_every_part(tmp_path):
    """A host of a several-instance split writes only its run's records: unshuffled, its run may
    hold fold 0 alone. The write in several processes must still give every part (empty ones too)."""
    from airflow_smx.core import storage
    from airflow_smx.core.folds.scan import scan
    from airflow_smx.core.folds.write import write_parts as write_fold_parts

    lines = csv_lines(make_records(300, seed=3))
    write_parts(tmp_path / "in", lines, 4, header=None)
    source = open_input((tmp_path / "in").as_uri() + "/")
    found = scan(source, InputSpec(uri=(tmp_path / "in").as_uri() + "/", label=1), workers=2)
    assert found.cuts is not None  # the write below runs in processes too
    targets = {code: str(tmp_path / f"part{code}") for code in (-1, 0, 1, 2)}
    local, _ = storage.filesystem("file:///")
    write_fold_parts(local, source, found, np.zeros(found.n_records, dtype=np.int8), targets)
    assert Path(targets[0]).read_bytes() == b"".join(line + b"\n" for line in lines)
    assert [Path(targets[code]).read_bytes() for code in (-1, 1, 2)] == [b"", b"", b""]


def test_runs_of_whole_files_are_as_even_as_whole_files_allow():
    """Each process (or split instance) reads a run of whole files; the largest run sets the time."""
    rng = random.Random(5)
    for _ in range(400):
        sizes = [rng.choice([0, 1, 2, 3, 5, 8, 40, 300]) for _ in range(rng.randint(1, 8))]
        parts = rng.randint(1, 5)
        cuts = runs_of(sizes, parts)
        runs = [sum(sizes[a:b]) for a, b in itertools.pairwise(cuts)]
        assert cuts[0] == 0 and cuts[-1] == len(sizes) and len(runs) == min(parts, len(sizes)), (sizes, parts, cuts)
        assert all(a < b for a, b in itertools.pairwise(cuts)), (sizes, parts, cuts)  # no run is empty
        best = min(  # every way to cut the files into that many runs
            max(sum(sizes[a:b]) for a, b in itertools.pairwise((0, *inner, len(sizes))))
            for inner in itertools.combinations(range(1, len(sizes)), len(runs) - 1)
        )
        assert max(runs) == best, (sizes, parts, cuts)
