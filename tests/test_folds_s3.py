"""An S3 input large enough is fetched to local disk in parallel ranges, then split there in
several processes and its parts uploaded together: the same folds, byte for byte, as read
straight from S3; the copies are gone afterwards; an object rewritten while it is fetched
stops the split."""

from __future__ import annotations

import logging
import tempfile

import pytest

from airflow_smx.core.folds import SplitError, split_dataset, stage
from airflow_smx.core.folds.records import open_input
from airflow_smx.core.request import CVSpec, InputSpec
from tests.conftest import make_records, write_jsonl

CV = CVSpec(strategy="stratified_group", n_splits=4, random_state=11, holdout=0.1)


def parts_of(s3, plan) -> list[bytes]:
    uris = [f.validation for f in plan.folds] + [plan.holdout]
    return [s3.get_object(Bucket="bucket", Key=u.removeprefix("s3://bucket/"))["Body"].read() for u in uris]


def test_a_fetched_input_splits_as_one_read_from_s3(s3, tmp_path, monkeypatch, caplog):
    local = write_jsonl(tmp_path / "train.jsonl", make_records(6000, seed=12))
    s3.put_object(Bucket="bucket", Key="data/train.jsonl", Body=local.read_bytes())
    spec = InputSpec(uri="s3://bucket/data/train.jsonl", label="class", group="meta.patient")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    streamed = split_dataset(spec, CV, "s3://bucket/runs/streamed/folds")  # 0.8 MB: below the threshold
    # lowered so a test-sized object is fetched, in 48 ranges of 16 KiB, 8 at a time, in 2 processes
    monkeypatch.setattr(stage, "STAGE_MIN_BYTES", 0)
    monkeypatch.setattr(stage, "RANGE_BYTES", 16 << 10)
    with caplog.at_level(logging.INFO, logger="airflow_smx.core.folds"):
        fetched = split_dataset(spec, CV, "s3://bucket/runs/fetched/folds", workers=2)
    assert "fetching s3://bucket/data/train.jsonl" in caplog.text
    assert "reading s3://bucket/data/train.jsonl in 2 processes" in caplog.text
    assert "uploading 5 parts written on local disk" in caplog.text  # 4 folds and the hold-out

    assert fetched.input == streamed.input  # the same object, records, bytes and sha256
    assert parts_of(s3, fetched) == parts_of(s3, streamed)  # and the same folds, byte for byte
    assert list(scratch.iterdir()) == []  # the copy is removed


def test_an_object_rewritten_while_it_is_fetched_stops_the_split(s3, monkeypatch):
    s3.put_object(Bucket="bucket", Key="data/train.csv", Body=b"1,a\n2,b\n" * 1000)
    monkeypatch.setattr(stage, "STAGE_MIN_BYTES", 0)
    source = open_input("s3://bucket/data/train.csv")
    s3.put_object(Bucket="bucket", Key="data/train.csv", Body=b"1,a\n2,b\n" * 999 + b"3,c\n")  # same size
    changed = r"input.uri: s3://bucket/data/train.csv changed while it was being read"
    with pytest.raises(SplitError, match=changed), stage.staged(source):
        pass


def test_a_bad_line_in_a_fetched_input_reads_as_in_the_object(s3, monkeypatch):
    s3.put_object(Bucket="bucket", Key="data/bad.jsonl", Body=b'{"class": "a"}\n' * 50 + b"{oops\n")
    monkeypatch.setattr(stage, "STAGE_MIN_BYTES", 0)
    with pytest.raises(SplitError, match=r"^line 51: malformed JSON") as error:
        split_dataset(InputSpec(uri="s3://bucket/data/bad.jsonl", label="class"), CVSpec(), "s3://bucket/o/folds")
    assert "smx-input" not in str(error.value)  # never the local copy's path


def test_the_files_of_a_prefix_are_fetched_side_by_side_and_split_as_read_from_s3(s3, tmp_path, monkeypatch, caplog):
    records = make_records(3000, seed=13)
    for i in range(6):  # nested, as a partitioned table is; Spark's marker beside them
        body = write_jsonl(tmp_path / f"{i}.jsonl", records[i * 500 : (i + 1) * 500]).read_bytes()
        s3.put_object(Bucket="bucket", Key=f"table/day={i % 2}/part-{i}.jsonl", Body=body)
    s3.put_object(Bucket="bucket", Key="table/_SUCCESS", Body=b"")
    spec = InputSpec(uri="s3://bucket/table/", label="class", group="meta.patient")
    streamed = split_dataset(spec, CV, "s3://bucket/runs/streamed/folds")
    monkeypatch.setattr(stage, "STAGE_MIN_BYTES", 0)
    with caplog.at_level(logging.INFO, logger="airflow_smx.core.folds"):
        fetched = split_dataset(spec, CV, "s3://bucket/runs/fetched/folds")
    assert "fetching the 6 files under s3://bucket/table/" in caplog.text
    assert fetched.input == streamed.input and fetched.input["files"] == 6
    assert parts_of(s3, fetched) == parts_of(s3, streamed)

    bad = b'{"class": "a", "meta": {"patient": 1}}\n' * 3 + b"{oops\n"
    s3.put_object(Bucket="bucket", Key="table/day=1/part-5.jsonl", Body=bad)
    with pytest.raises(SplitError, match=r"^s3://bucket/table/day=1/part-5.jsonl line 4: malformed JSON"):
        split_dataset(spec, CV, "s3://bucket/runs/bad/folds")


def test_keys_that_would_leave_the_copy_are_not_parts(s3, tmp_path, monkeypatch):
    """Whoever may write under the prefix names the keys: ``..`` or an empty segment must not
    become a local path outside the fetched copy, nor two keys one file."""
    body = b'{"class": "a"}\n{"class": "b"}\n'
    for key in ("t/part-0.jsonl", "t/x/../../escaped.jsonl", "t/a//b.jsonl", "t/a/b.jsonl"):
        s3.put_object(Bucket="bucket", Key=key, Body=body)
    scratch = tmp_path / "tmp" / "inner"
    scratch.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setattr(stage, "STAGE_MIN_BYTES", 0)
    plan = split_dataset(InputSpec(uri="s3://bucket/t/", label="class"), CVSpec(n_splits=2), "", write=False)
    assert (plan.input["files"], plan.n_records) == (2, 4)  # part-0 and a/b
    assert not (tmp_path / "tmp" / "escaped.jsonl").exists() and list(scratch.iterdir()) == []
