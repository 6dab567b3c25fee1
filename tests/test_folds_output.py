"""What a split writes: every record once and unchanged, manifests, plan.json, determinism, S3."""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
import traceback
from collections import Counter
from pathlib import Path

import pytest

from airflow_smx.core.folds import FoldPlan, SplitError, split_dataset
from airflow_smx.core.request import CVSpec, InputSpec
from tests.conftest import make_records, write_jsonl

PLAN_KEYS = {"strategy", "n_splits", "n_repeats", "random_state", "n_records", "input", "holdout", "folds"}
FOLD_KEYS = {"index", "repeat", "validation", "train_manifest", "train_file", "n_train", "n_validation", "class_counts"}


def local(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def lines_of(uri: str) -> list[bytes]:
    return local(uri).read_bytes().splitlines(keepends=True)


def test_every_record_lands_in_exactly_one_part_unchanged(tmp_path):
    # CRLF, non-ASCII, key order and spacing that re-serializing would change, blank lines, no final newline
    raw = (
        b'{"b": 1,   "class": "x", "t": "caf\xc3\xa9"}\r\n'
        b"\n"
        b'{"class":"y","b":2}\n'
        b"   \n"
        b'{"class": "x", "b": 3.50}\n'
        + b"".join(b'{"class": "%s", "i": %d}\n' % (b"xy"[i % 2 : i % 2 + 1], i) for i in range(40))
        + b'{"class": "y", "last": true}'
    )
    source = tmp_path / "in.jsonl"
    source.write_bytes(raw)
    plan = split_dataset(
        InputSpec(uri=source.as_uri(), label="class"),
        CVSpec(strategy="stratified", n_splits=3),
        (tmp_path / "o").as_uri(),
    )
    records = [line for line in raw.split(b"\n") if line.strip()]
    written = [line for f in plan.folds for line in lines_of(f.validation)]
    assert all(line.endswith(b"\n") for line in written)
    assert Counter(line[:-1] for line in written) == Counter(records)
    assert plan.n_records == len(records) == 44
    assert plan.input["bytes"] == len(raw)


def test_plan_json_manifests_and_no_copies(tmp_path, jsonl_file):
    out = tmp_path / "out" / "run-1" / "folds"
    plan = split_dataset(
        InputSpec(uri=jsonl_file.as_uri(), label="class"), CVSpec(strategy="stratified", n_splits=4), out.as_uri()
    )
    data = json.loads((out / "plan.json").read_text())
    assert set(data) >= PLAN_KEYS
    assert all(set(f) >= FOLD_KEYS for f in data["folds"])
    assert data["input"]["sha256"] == __import__("hashlib").sha256(jsonl_file.read_bytes()).hexdigest()
    assert data["n_records"] == 400 and data["holdout"] is None
    assert FoldPlan.from_json(data) == plan
    assert sorted(p.name for p in out.iterdir()) == [
        *(f"fold-0000{i}" for i in range(4)),
        *(f"part-0000{i}.jsonl" for i in range(4)),
        "plan.json",
    ]
    written = sum(p.stat().st_size for p in out.glob("part-*"))
    assert written == jsonl_file.stat().st_size  # each record written once, nothing added
    for fold in plan.folds:
        manifest = json.loads(local(fold.train_manifest).read_text())
        assert manifest[0] == {"prefix": out.as_uri() + "/"}
        assert manifest[1:] == [f"part-0000{i}.jsonl" for i in range(4) if i != fold.index]
        assert fold.train_file is None
        train = sum(fold.class_counts["train"].values())
        assert train == fold.n_train == 400 - fold.n_validation
        assert sum(fold.class_counts["validation"].values()) == fold.n_validation


def test_assembled_train_file_holds_the_other_parts(tmp_path, jsonl_file):
    plan = split_dataset(
        InputSpec(uri=jsonl_file.as_uri()), CVSpec(n_splits=3), (tmp_path / "o").as_uri(), assemble_train=True
    )
    for fold in plan.folds:
        others = b"".join(local(p).read_bytes() for p in fold.train_parts)
        assert local(fold.train_file).read_bytes() == others
        assert len(lines_of(fold.train_file)) == fold.n_train


def test_the_refit_trains_on_every_record_but_the_hold_out_and_validates_on_the_hold_out(tmp_path, jsonl_file):
    spec, cv = InputSpec(uri=jsonl_file.as_uri(), label="class"), CVSpec(n_splits=3, n_repeats=2, holdout=0.2)
    plan = split_dataset(spec, cv, (tmp_path / "o").as_uri(), assemble_train=True, final=True)
    final = plan.final
    everything = sorted(jsonl_file.read_bytes().splitlines())
    trained, held = lines_of(final.train_file), lines_of(plan.holdout)
    assert sorted(line.rstrip(b"\n") for line in trained + held) == everything  # each record once
    assert final.validation == plan.holdout and (final.n_train, final.n_validation) == (len(trained), len(held))
    assert json.loads(local(final.train_manifest).read_text())[1:] == [
        "part-00000.jsonl",
        "part-00001.jsonl",
        "part-00002.jsonl",
    ]
    assert sum(final.class_counts["train"].values()) == final.n_train
    assert FoldPlan.from_json(json.loads((tmp_path / "o" / "plan.json").read_text())) == plan
    # the folds are those of a split without the refit's files: a gate compares them fold by fold
    without = split_dataset(spec, cv, (tmp_path / "p").as_uri(), assemble_train=True, write=False)
    assert without.final is None
    assert {**without.identity(), "prefix": None} == {**plan.identity(), "prefix": None}


def test_same_input_and_seed_give_byte_identical_parts(tmp_path, jsonl_file):
    spec, cv = InputSpec(uri=jsonl_file.as_uri(), label="class"), CVSpec(strategy="stratified", random_state=9)
    first = split_dataset(spec, cv, (tmp_path / "a").as_uri())
    second = split_dataset(spec, cv, (tmp_path / "b").as_uri())
    for a, b in zip(first.folds, second.folds, strict=True):
        assert local(a.validation).read_bytes() == local(b.validation).read_bytes()
    plan_a = (tmp_path / "a" / "plan.json").read_text()
    assert plan_a == (tmp_path / "b" / "plan.json").read_text().replace(str(tmp_path / "b"), str(tmp_path / "a"))
    other_seed = split_dataset(spec, CVSpec(strategy="stratified", random_state=10), (tmp_path / "c").as_uri())
    assert local(other_seed.folds[0].validation).read_bytes() != local(first.folds[0].validation).read_bytes()


def test_retried_split_reuses_a_complete_one_and_replaces_a_partial_one(tmp_path, jsonl_file):
    spec, cv, out = InputSpec(uri=jsonl_file.as_uri()), CVSpec(n_splits=3), tmp_path / "o"
    split_dataset(spec, cv, out.as_uri())
    stamp = (out / "plan.json").stat().st_mtime_ns
    split_dataset(spec, cv, out.as_uri())
    assert (out / "plan.json").stat().st_mtime_ns == stamp  # nothing rewritten
    (out / "plan.json").unlink()  # as if the worker died before the plan was written
    (out / "part-00009.jsonl").write_text("stale\n")
    plan = split_dataset(spec, cv, out.as_uri())
    assert not (out / "part-00009.jsonl").exists()
    assert (out / "plan.json").exists() and len(plan.folds) == 3


def test_gzip_input_is_read_transparently(tmp_path):
    records = make_records(300, seed=5)
    plain = write_jsonl(tmp_path / "data.jsonl", records)
    packed = tmp_path / "data.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    spec = {"label": "class"}
    cv = CVSpec(strategy="stratified", n_splits=3)
    from_plain = split_dataset(InputSpec(uri=plain.as_uri(), **spec), cv, (tmp_path / "p").as_uri())
    from_gzip = split_dataset(InputSpec(uri=packed.as_uri(), **spec), cv, (tmp_path / "g").as_uri())
    assert from_gzip.input["compression"] == "gzip" and from_gzip.input["bytes"] == packed.stat().st_size
    assert from_gzip.folds[0].validation.endswith("part-00000.jsonl")
    for a, b in zip(from_plain.folds, from_gzip.folds, strict=True):
        assert local(a.validation).read_bytes() == local(b.validation).read_bytes()


def test_gzip_detected_by_content_without_extension(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(gzip.compress(b"".join(b'{"i": %d}\n' % i for i in range(20))))
    plan = split_dataset(InputSpec(uri=path.as_uri()), CVSpec(n_splits=2), (tmp_path / "o").as_uri())
    assert plan.input["format"] == "jsonl" and plan.input["compression"] == "gzip" and plan.n_records == 20


@pytest.mark.parametrize("header", [True, False])
def test_csv_with_and_without_header(tmp_path, header):
    rows = [f'{i},{"ab"[i % 3 == 0]},"q, {i}",g{i % 7}\n' for i in range(90)]
    path = tmp_path / "data.csv"
    path.write_text(("id,label,note,grp\n" if header else "") + "".join(rows))
    label, group = ("label", "grp") if header else (1, 3)
    plan = split_dataset(
        InputSpec(uri=path.as_uri(), label=label, group=group, csv_header=header),
        CVSpec(strategy="stratified_group", n_splits=3),
        (tmp_path / "o").as_uri(),
    )
    assert plan.n_records == 90 and plan.classes == {"a": 60, "b": 30} and plan.n_groups == 7
    written = [line for f in plan.folds for line in lines_of(f.validation)]
    assert sorted(written) == sorted(line.encode() for line in rows)
    assert plan.input["csv_header"] == ("id,label,note,grp" if header else None)
    assert (tmp_path / "o" / "header.csv").exists() == header


def test_repeats_write_one_part_set_per_repeat(tmp_path, jsonl_file):
    plan = split_dataset(InputSpec(uri=jsonl_file.as_uri()), CVSpec(n_splits=3, n_repeats=2), (tmp_path / "o").as_uri())
    assert [(f.index, f.repeat) for f in plan.folds] == [(0, 0), (1, 0), (2, 0), (3, 1), (4, 1), (5, 1)]
    for repeat in (0, 1):
        parts = [f for f in plan.folds if f.repeat == repeat]
        assert sum(f.n_validation for f in parts) == 400
        assert {p for f in parts for p in f.train_parts} == {f.validation for f in parts}


def test_holdout_is_its_own_part_and_in_no_fold(tmp_path, jsonl_file):
    plan = split_dataset(
        InputSpec(uri=jsonl_file.as_uri(), label="class"),
        CVSpec(strategy="stratified", n_splits=3, holdout=0.25),
        (tmp_path / "o").as_uri(),
    )
    held = set(lines_of(plan.holdout))
    assert plan.n_holdout == len(held) == 100
    assert not held & {line for f in plan.folds for line in lines_of(f.validation)}
    assert all(f.n_train + f.n_validation == 300 for f in plan.folds)


def test_split_on_s3(s3, tmp_path):
    records = make_records(500, seed=2)
    body = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    s3.put_object(Bucket="bucket", Key="in/data.jsonl.gz", Body=gzip.compress(body))
    split_dataset(
        InputSpec(uri="s3://bucket/in/data.jsonl.gz", label="class", group="meta.patient"),
        CVSpec(strategy="stratified_group", n_splits=4),
        "s3://bucket/out/run-1/folds",
        assemble_train=True,
    )
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="bucket", Prefix="out/")["Contents"]}
    assert "out/run-1/folds/plan.json" in keys and "out/run-1/folds/fold-00003/train.manifest" in keys
    parts = [s3.get_object(Bucket="bucket", Key=f"out/run-1/folds/part-0000{i}.jsonl")["Body"].read() for i in range(4)]
    assert sorted(b"".join(parts).splitlines()) == sorted(body.splitlines())
    manifest = json.loads(
        s3.get_object(Bucket="bucket", Key="out/run-1/folds/fold-00000/train.manifest")["Body"].read()
    )
    assert manifest == [
        {"prefix": "s3://bucket/out/run-1/folds/"},
        "part-00001.jsonl",
        "part-00002.jsonl",
        "part-00003.jsonl",
    ]
    train = s3.get_object(Bucket="bucket", Key="out/run-1/folds/fold-00000/train.jsonl")["Body"].read()
    assert train == b"".join(parts[1:])


def test_records_across_read_blocks(tmp_path, monkeypatch):
    from airflow_smx.core.folds import records as records_module

    monkeypatch.setattr(records_module, "CHUNK", 7)  # lines longer than a block, blocks ending mid-line
    raw = b'{"class": "a", "pad": "xxxxxxxxxxxxxxxx"}\n\n{"class":"b"}\r\n \n' * 20 + b'{"class": "a"}'
    source = tmp_path / "in.jsonl"
    source.write_bytes(raw)
    plan = split_dataset(InputSpec(uri=source.as_uri(), label="class"), CVSpec(n_splits=4), (tmp_path / "o").as_uri())
    written = [line[:-1] for f in plan.folds for line in lines_of(f.validation)]
    assert sorted(written) == sorted(line for line in raw.split(b"\n") if line.strip())
    assert plan.classes == {"a": 21, "b": 20}
    with pytest.raises(SplitError, match="line 82: malformed JSON"):
        source.write_bytes(raw + b"\n{oops\n")
        split_dataset(InputSpec(uri=source.as_uri(), label="class"), CVSpec(n_splits=4), (tmp_path / "p").as_uri())


PARALLEL_CASES = {
    "jsonl, blank and CRLF lines": (
        "in.jsonl",
        b"".join(
            b'{"class": "%s", "g": %d, "p": "%s"}%s\n'
            % (b"abc"[i % 3 : i % 3 + 1], i % 17, b"y" * (i % 40), b"\r" * (i % 2))
            + (b"\n" if i % 97 == 0 else b"")
            for i in range(5000)
        ),
        {"label": "class", "group": "g"},
    ),
    "csv with header": (
        "in.csv",
        b"id,label,grp\n" + b"".join(b"%d,%s,%d\n" % (i, b"xy"[i % 2 : i % 2 + 1], i % 23) for i in range(4000)),
        {"label": "label", "group": "grp", "csv_header": True},
    ),
}


@pytest.mark.parametrize("case", PARALLEL_CASES)
@pytest.mark.parametrize("strategy", ["stratified", "stratified_group"])
@pytest.mark.parametrize("holdout", [0.0, 0.2])
def test_parallel_split_writes_the_same_bytes(tmp_path, case, strategy, holdout):
    name, raw, spec = PARALLEL_CASES[case]
    source = tmp_path / name
    source.write_bytes(raw)
    cv = CVSpec(strategy=strategy, n_splits=4, holdout=holdout, random_state=3)
    outputs = {}
    for workers in (1, 2, 3):
        out = tmp_path / f"w{workers}"
        split_dataset(InputSpec(uri=source.as_uri(), **spec), cv, out.as_uri(), workers=workers)
        outputs[workers] = {
            p.relative_to(out): p.read_bytes().replace(str(out).encode(), b"OUT")
            for p in sorted(out.rglob("*"))
            if p.is_file()
        }
    assert outputs[1] == outputs[2] == outputs[3]
    assert len(outputs[1]) > 5


def test_large_parts_go_to_s3_in_multipart_uploads(s3):
    # Parts are uploaded whole; the assembled train files are joined by server-side part copies
    # (a multipart upload: moto enforces S3's 5 MiB minimum part).
    body = b"".join(b'{"class": "c%d", "pad": "%s"}\n' % (i % 4, b"z" * 120) for i in range(130_000))
    s3.put_object(Bucket="bucket", Key="in/big.jsonl", Body=body)
    plan = split_dataset(
        InputSpec(uri="s3://bucket/in/big.jsonl", label="class"),
        CVSpec(strategy="stratified", n_splits=2),
        "s3://bucket/out/big/folds",
        assemble_train=True,
    )
    part = s3.head_object(Bucket="bucket", Key="out/big/folds/part-00000.jsonl")
    assert part["ContentLength"] > 8 << 20
    assert "-" in s3.head_object(Bucket="bucket", Key="out/big/folds/fold-00000/train.jsonl")["ETag"]  # multipart
    joined = b"".join(
        s3.get_object(Bucket="bucket", Key=f"out/big/folds/part-0000{i}.jsonl")["Body"].read() for i in range(2)
    )
    assert sorted(joined.splitlines()) == sorted(body.splitlines())
    train = s3.get_object(Bucket="bucket", Key="out/big/folds/fold-00000/train.jsonl")["Body"].read()
    assert train == joined[len(joined) - len(train) :] and plan.folds[0].n_train == train.count(b"\n")


def test_parallel_split_ends_its_processes_under_a_task_runners_sigterm_handler(tmp_path):
    # Airflow's task runner handles SIGTERM itself; forked children must still end with the pool.
    import signal

    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        path = write_jsonl(tmp_path / "in.jsonl", make_records(2000, seed=1))
        plan = split_dataset(InputSpec(uri=path.as_uri()), CVSpec(n_splits=3), (tmp_path / "o").as_uri(), workers=2)
        assert plan.n_records == 2000
    finally:
        signal.signal(signal.SIGTERM, previous)


def _split_in_a_forked_task(path: Path, out: Path) -> None:
    """What Airflow's supervisor does under CeleryExecutor: fork the task from the pool process."""
    pid = os.fork()
    if pid == 0:
        try:
            plan = split_dataset(InputSpec(uri=path.as_uri()), CVSpec(n_splits=3), out.as_uri(), workers=2)
            os._exit(0 if plan.n_records == 2000 else 1)
        except BaseException:
            traceback.print_exc()
            os._exit(2)
    os._exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))


def test_a_parallel_split_runs_in_a_task_forked_from_a_daemonic_celery_pool_process(tmp_path):
    # Celery's prefork pool processes are daemonic, and a task forked from one inherits the flag
    # that made multiprocessing refuse it children ("daemonic processes are not allowed to have children").
    path = write_jsonl(tmp_path / "in.jsonl", make_records(2000, seed=1))
    pool_process = multiprocessing.get_context("fork").Process(
        target=_split_in_a_forked_task, args=(path, tmp_path / "o"), daemon=True
    )
    pool_process.start()
    pool_process.join()
    assert pool_process.exitcode == 0
    assert sorted(p.name for p in (tmp_path / "o").glob("part-*")) == [f"part-0000{i}.jsonl" for i in range(3)]
