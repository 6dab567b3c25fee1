"""Inputs that cannot be split fail with a message naming the line or the numbers, and leave nothing."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from airflow_smx.core.folds import SplitError, split_dataset
from airflow_smx.core.request import CVSpec, InputSpec


def split_text(tmp_path: Path, text: bytes, name: str = "in.jsonl", cv: CVSpec | None = None, **spec) -> Path:
    path = tmp_path / name
    path.write_bytes(text)
    out = tmp_path / "out" / "folds"
    split_dataset(InputSpec(uri=path.as_uri(), **spec), cv or CVSpec(n_splits=2), out.as_uri())
    return out


def jsonl(n: int, fmt: str = '{"class": "c%d", "g": %d}') -> bytes:
    return b"".join((fmt % (i % 3, i % 5)).encode() + b"\n" for i in range(n))


CASES = [
    ("malformed JSON", jsonl(10) + b'{"class": "c1", \n' + jsonl(3), {"label": "class"}, "line 11: malformed JSON"),
    ("not an object", jsonl(4) + b"[1, 2]\n", {"label": "class"}, "line 5: a JSON Lines record must be a JSON object"),
    ("missing label", jsonl(6) + b'{"other": 1}\n', {"label": "class"}, "line 7: label 'class' is missing or null"),
    ("null label", jsonl(2) + b"\n\n" + b'{"class": null}\n', {"label": "class"}, "line 5: label 'class' is missing"),
    ("missing group", jsonl(3) + b'{"class": "c1"}\n', {"group": "g"}, "line 4: group 'g' is missing or null"),
    ("missing nested", b'{"m": {"a": 1}}\n{"m": 3}\n', {"label": "m.a"}, "line 2: label 'm.a'"),
    ("object label", b'{"class": {"x": 1}}\n', {"label": "class"}, "line 1: label 'class' must be a string"),
    ("empty input", b"", {}, "holds no records"),
    ("only blank lines", b"\n \n\r\n", {}, "holds no records"),
]


@pytest.mark.parametrize(("text", "spec", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_records_name_their_line(tmp_path, text, spec, message):
    with pytest.raises(SplitError, match=message):
        split_text(tmp_path, text, **spec)
    assert not (tmp_path / "out").exists()


def test_csv_errors_name_their_line(tmp_path):
    with pytest.raises(SplitError, match=r"line 4: label column 5 is missing \(the record has 2 columns\)"):
        split_text(tmp_path, b"1,a,x,y,z,q\n2,b,x,y,z,q\n3,c,x,y,z,q\n4,d\n", "in.csv", label=5)
    with pytest.raises(SplitError, match=r"line 3: malformed CSV"):
        split_text(tmp_path, b'1,a\n2,b\n3,"open\n4,d\n', "in.csv", label=1)
    with pytest.raises(SplitError, match=r"input.label: column 'kind' not found: header columns are \['id', 'cls'\]"):
        split_text(tmp_path, b"id,cls\n1,a\n2,b\n", "in.csv", label="kind", csv_header=True)


def test_too_few_records_groups_and_class_members(tmp_path):
    with pytest.raises(SplitError, match=r"cv.n_splits: 5 folds need at least 5 records; the input has 4"):
        split_text(tmp_path, jsonl(4), cv=CVSpec(n_splits=5))
    with pytest.raises(SplitError, match=r"5 folds need at least 5 records; the input has 6 \(3 after the hold-out\)"):
        split_text(tmp_path, jsonl(6), cv=CVSpec(n_splits=5, holdout=0.5))
    with pytest.raises(SplitError, match=r"cv.n_splits: 6 folds need at least 6 groups; the input has 5"):
        split_text(tmp_path, jsonl(40), cv=CVSpec(strategy="group", n_splits=6), group="g")
    rare = jsonl(30) + b'{"class": "rare", "g": 1}\n' * 2
    with pytest.raises(SplitError, match=r"class 'rare' has 2 records, fewer than 3 folds"):
        split_text(tmp_path, rare, cv=CVSpec(strategy="stratified", n_splits=3), label="class")
    assert not (tmp_path / "out").exists()
    out = split_text(
        tmp_path, rare, cv=CVSpec(strategy="stratified", n_splits=3, allow_small_classes=True), label="class"
    )
    assert (out / "plan.json").exists()


def test_missing_and_corrupt_input(tmp_path):
    with pytest.raises(SplitError, match=r"input.uri: no such file"):
        split_dataset(InputSpec(uri=(tmp_path / "nope.jsonl").as_uri()), CVSpec(), (tmp_path / "o").as_uri())
    broken = gzip.compress(jsonl(2000))[:-40]
    with pytest.raises(SplitError, match=r"cannot read .* as gzip"):
        split_text(tmp_path, broken, "in.jsonl.gz")
    assert not (tmp_path / "out").exists()


def test_a_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    from airflow_smx.core import storage

    calls = []

    def failing_concatenate(fs, target, sources):
        calls.append(target)
        raise OSError("disk full")

    monkeypatch.setattr(storage, "concatenate", failing_concatenate)
    path = tmp_path / "in.jsonl"
    path.write_bytes(jsonl(50))
    out = tmp_path / "run" / "folds"
    with pytest.raises(OSError, match=r"disk full"):
        split_dataset(InputSpec(uri=path.as_uri()), CVSpec(n_splits=3), out.as_uri(), assemble_train=True)
    assert calls and not out.exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_input_changed_between_passes_is_refused(tmp_path, monkeypatch, workers):
    from airflow_smx.core.folds import split as split_module

    path = tmp_path / "in.jsonl"
    path.write_bytes(jsonl(50))
    real_scan = split_module.scan

    def scan_then_append(*args):
        found = real_scan(*args)
        with path.open("ab") as handle:
            handle.write(b'{"class": "late"}\n')
        return found

    monkeypatch.setattr(split_module, "scan", scan_then_append)
    out = tmp_path / "run" / "folds"
    with pytest.raises(SplitError, match=r"changed while it was being split"):
        split_dataset(InputSpec(uri=path.as_uri()), CVSpec(n_splits=3), out.as_uri(), workers=workers)
    assert not out.exists()


def test_records_are_checked_even_without_label_or_group(tmp_path):
    with pytest.raises(SplitError, match=r"line 3: malformed JSON"):
        split_text(tmp_path, jsonl(2) + b"not json\n" + jsonl(4))
    with pytest.raises(SplitError, match=r"line 2: malformed CSV"):
        split_text(tmp_path, b'1,a\n2,"b\n3,c\n', "in.csv")


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_line_numbers_are_the_same_when_scanned_in_parallel(tmp_path, workers):
    good = b"".join(b'{"class": "c%d", "pad": "%s"}\n' % (i % 3, b"x" * (i % 50)) for i in range(3000))
    bad_at = good.count(b"\n", 0, len(good) * 3 // 4) + 1  # in the last range
    lines = good.split(b"\n")
    lines[bad_at - 1] = b'{"class": '
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(SplitError, match=rf"^line {bad_at}: malformed JSON"):
        split_dataset(InputSpec(uri=path.as_uri(), label="class"), CVSpec(), (tmp_path / "o").as_uri(), workers=workers)
    lines[bad_at - 1] = b'{"klass": 1}'
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(SplitError, match=rf"^line {bad_at}: label 'class' is missing"):
        split_dataset(InputSpec(uri=path.as_uri(), label="class"), CVSpec(), (tmp_path / "o").as_uri(), workers=workers)
    assert not (tmp_path / "o").exists()
