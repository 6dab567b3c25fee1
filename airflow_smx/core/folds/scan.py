"""The first pass: count and check every record, hash the input, extract label and group codes.

A large local input is scanned by several processes at once (forked, so nothing is imported
again), each over a range: a byte range of whole lines of one uncompressed file, or a run of
whole files (gzip or not) of a many-file input. Their results are merged in input order, so the
outcome, errors and line numbers included, equals a single-process scan.
"""

from __future__ import annotations

import hashlib
import logging
from array import array
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from airflow_smx.core import storage
from airflow_smx.core.folds import processes as forked
from airflow_smx.core.folds.assign import CHUNK
from airflow_smx.core.folds.records import (
    Chunk,
    Coder,
    CsvFieldReader,
    Input,
    InputFile,
    JsonFieldReader,
    LineError,
    PartedInput,
    SplitError,
    compact_table,
    detect_format,
    files_sha256,
    no_records,
    parse_csv_value,
    resolve_columns,
)
from airflow_smx.core.request import InputSpec

log = logging.getLogger(__name__)

PARALLEL_MIN_BYTES = 64 << 20  # below this, forking costs more than it saves
MAX_WORKERS = 4
_FORKED: dict[str, Any] = {}  # what forked workers inherit from the parent


class Records:
    """The input's records (of one range, or all), chunk by chunk, the CSV header set apart.

    :param header: the input's CSV header, skipped at the start of each file (which must start
        with it); None: nothing to skip (no header, or a byte range after the file's first)
    :param start: with ``end``, a range: bytes of one uncompressed file, or files of a many-file input
    """

    def __init__(
        self,
        source: Input,
        header: bytes | None,
        hashing: bool = True,
        blank_free: bool = False,
        start: int = 0,
        end: int | None = None,
    ):
        self.source = source
        self.header = header
        self.options: dict[str, Any] = {"hashing": hashing, "blank_free": blank_free}
        if start or end is not None:
            self.options |= {"start": start, "end": end}
        self.n_lines = 0

    @classmethod
    def of_range(cls, source: Input, header: bytes | None, cuts: list[int], index: int, **options: Any) -> Records:
        """Range ``index`` of ``cuts`` (``source.cuts(n)``); a byte range after the first starts past the header."""
        first_line_is_header = index == 0 or isinstance(source, PartedInput)
        return cls(source, header if first_line_is_header else None, start=cuts[index], end=cuts[index + 1], **options)

    def __iter__(self) -> Iterator[Chunk]:
        waiting_for_header, part = self.header is not None, None
        for chunk in self.source.chunks(**self.options):
            self.n_lines += chunk.n_lines
            if chunk.part != part:  # the next file of a many-file input: it starts with the header too
                waiting_for_header, part = self.header is not None, chunk.part
            if waiting_for_header and chunk.records:
                if chunk.records[0] != self.header:
                    raise chunk.error(0, "the CSV header differs from the first file's; the files are not one table")
                chunk, waiting_for_header = chunk.without_first(), False
            if chunk.records:
                yield chunk


@dataclass
class Scan:
    """What the first pass learned: record count, input identity, label and group codes."""

    format: str
    compression: str = "none"
    header: bytes | None = None
    n_records: int = 0
    n_lines: int = 0  # blank lines and the header included
    bytes: int = 0
    sha256: str = ""
    checksum: Future[tuple[int, str]] | None = None  # bytes and sha256, still being computed
    codes: dict[str, np.ndarray] = field(default_factory=dict)
    values: dict[str, list[Any]] = field(default_factory=dict)
    cuts: list[int] | None = None  # byte ranges scanned apart (parallel scans only)
    range_records: list[int] | None = None  # records per range
    lengths: np.ndarray | None = None  # bytes per record, without "\n" (parallel scans only)
    files: int = 1  # files read as one input (a prefix of part files)
    record_bytes: int = 0  # the records' bytes as the parts hold them ("\n" each; no header, no blank line)

    def identify(self) -> None:
        """Wait for the input's size and sha256 if they are still being computed."""
        if self.checksum is not None:
            self.bytes, self.sha256 = self.checksum.result()
            self.checksum = None

    @property
    def blank_free(self) -> bool:
        return self.n_lines == self.n_records + (self.header is not None)


@dataclass
class RangeScan:
    n_records: int
    n_lines: int
    values: dict[str, list[Any]]
    codes: dict[str, np.ndarray]
    lengths: np.ndarray | None
    record_bytes: int
    stored: int = 0  # bytes read as stored (a many-file input's range)
    hashed: str | None = None  # a many-file input's range: its files' marks and sha256s, in hex


def scan(source: Input, spec: InputSpec, workers: int | None = None) -> Scan:
    """Scan ``source`` once; every problem is raised before anything is written.

    :param workers: processes for a splittable input; None picks by size and CPUs
    """
    result, reader = begin_scan(source, spec)
    processes = processes_for(source, workers)
    ranges, result.cuts = scan_ranges(source, reader, result.header, processes)
    result.compression = source.compression  # told as the files were read (those read here)
    merge(result, ranges)
    if isinstance(source, InputFile):  # a many-file input's is merged: each file hashed by the process that read it
        _identify(result, source)
    if result.n_records == 0:
        raise no_records(source.uri)
    return result


def _identify(result: Scan, source: InputFile) -> None:
    """The file's size and sha256, or their computation under way."""
    if result.cuts is None:  # one process: hashed as it read
        result.bytes, result.sha256 = source.reader.size, source.reader.hexdigest()
    elif source.checksum is not None:  # hashed as it was fetched
        result.bytes, result.sha256 = source.checksum
    else:  # read once more on a thread (hashlib releases the GIL) while the caller assigns folds
        result.checksum = in_background(checksum, source)


def begin_scan(source: Input, spec: InputSpec) -> tuple[Scan, JsonFieldReader | CsvFieldReader]:
    """The format and header the input's first record decides, and the reader of its fields."""
    first = source.first_record()
    if first is None:
        raise no_records(source.uri)
    fmt = spec.format if spec.format != "auto" else detect_format(source.sample_uri, first)
    header = first if spec.csv_header and fmt == "csv" else None
    fields = {role: key for role, key in (("label", spec.label), ("group", spec.group)) if key is not None}
    reader = _field_reader(fmt, fields, header)  # a CSV column missing from the header fails here
    # not the compression: every file of a many-file input would be asked (see sharded)
    result = Scan(format=fmt, header=header, files=len(getattr(source, "parts", [1])))
    return result, reader


def scan_ranges(
    source: Input, reader: JsonFieldReader | CsvFieldReader, header: bytes | None, processes: int
) -> tuple[list[RangeScan], list[int] | None]:
    """Each range's scan, in input order, and the cuts between them (None: one range, hashed as it
    was read, with no record lengths). The first error in input order is raised."""
    if processes == 1:
        return [_scan_range(Records(source, header), reader, lengths=False, progress=True)], None
    cuts = source.cuts(processes)
    log.info("reading %s in %d processes", source.uri, len(cuts) - 1)
    _FORKED["scan"] = (source, reader, header, cuts)
    try:
        outcomes = forked.run_forked(_scan_worker, len(cuts) - 1)
    finally:
        _FORKED.pop("scan", None)
    lines = 0
    for outcome in outcomes:  # the first error in input order, as a scan in one process meets it
        if isinstance(outcome, str):
            raise SplitError(outcome)
        if isinstance(outcome, tuple):  # (line, reason, file) of the range's first bad record
            error = LineError(*outcome)
            raise error if error.part else error.shifted(lines)  # a many-file input numbers lines by file
        lines += outcome.n_lines
    return outcomes, cuts


def in_background(function: Callable[..., Any], *args: Any) -> Future[Any]:
    """``function(*args)`` on a thread of its own; the caller waits for it later."""
    thread = ThreadPoolExecutor(max_workers=1)
    future = thread.submit(function, *args)
    thread.shutdown(wait=False)
    return future


def processes_for(source: Input, workers: int | None) -> int:
    if not source.splittable() or not forked.available():
        return 1
    if workers is None:
        if source.text_size() < PARALLEL_MIN_BYTES:  # gzip files by what they hold: 11 MB stored can be 300 read
            return 1
        workers = min(forked.cpu_count(), MAX_WORKERS)
    return max(1, workers)


def _field_reader(fmt: str, fields: dict[str, Any], header: bytes | None) -> JsonFieldReader | CsvFieldReader:
    if fmt == "jsonl":
        wrong = {role: key for role, key in fields.items() if not isinstance(key, str)}
        if wrong:
            role = next(iter(wrong))
            raise SplitError(f"input.{role}: JSON Lines records are read by key, not by column index {wrong[role]}")
        return JsonFieldReader(fields)
    return CsvFieldReader(resolve_columns(header, fields), fields)


def _scan_range(
    records: Records, reader: JsonFieldReader | CsvFieldReader, lengths: bool, progress: bool = False
) -> RangeScan:
    coders = {role: Coder(role) for role in reader.roles}
    sizes = array("I") if lengths else None
    n = record_bytes = 0
    for chunk in records:
        for role, values in reader.read(chunk).items():
            coders[role].add(values)
        if sizes is not None:
            sizes.extend(map(len, chunk.records))
        n += len(chunk.records)
        record_bytes += sum(map(len, chunk.records)) + len(chunk.records)
        if progress and n % 1_000_000 < len(chunk.records):
            log.info("scanned %d records", n)
    files = records.source.reader if isinstance(records.source, PartedInput) else None
    return RangeScan(
        n_records=n,
        n_lines=records.n_lines,
        values={role: list(c.codes) for role, c in coders.items()},
        # compact before they travel to the parent: 1 or 2 bytes a record instead of 4
        codes={role: compact_table(np.frombuffer(c.array, dtype=np.int32), len(c.codes)) for role, c in coders.items()},
        lengths=np.frombuffer(sizes, dtype=np.uint32) if sizes is not None else None,
        record_bytes=record_bytes,
        stored=files.size if files else 0,
        hashed=files.hashed_files().hex() if files else None,
    )


def merge(result: Scan, ranges: list[RangeScan]) -> None:
    """Join range scans in file order; label and group codes end up numbered in value order.

    Each range's arrays are let go as soon as they are copied, so that the whole input's
    codes and lengths never exist twice."""
    n = result.n_records = sum(r.n_records for r in ranges)
    result.n_lines = sum(r.n_lines for r in ranges)
    result.record_bytes = sum(r.record_bytes for r in ranges)
    if ranges[0].hashed is not None:  # a many-file input: its identity joins the ranges' (or hosts') hashes
        result.bytes = sum(r.stored for r in ranges)
        result.sha256 = files_sha256([bytes.fromhex(r.hashed) for r in ranges])
    for role in list(ranges[0].codes):
        coder = Coder(role)
        tables = [coder.merge(part.values[role]) for part in ranges]
        parse = parse_csv_value(list(coder.codes)) if result.format == "csv" else (lambda v: v)
        rank, result.values[role] = coder.ranks(parse)
        codes = result.codes[role] = np.empty(n, dtype=compact_table(rank, len(rank)).dtype)
        for part, table, (begin, _) in zip(ranges, tables, _bounds(ranges), strict=True):
            table, local = compact_table(rank[table], len(rank)), part.codes.pop(role)
            for at in range(0, len(local), CHUNK):  # numpy would index with an int64 copy of all of them
                chunk = local[at : at + CHUNK]
                codes[begin + at : begin + at + len(chunk)] = table[chunk]
    if ranges[0].lengths is not None:
        result.range_records = [r.n_records for r in ranges]
        result.lengths = np.empty(n, dtype=np.uint32)
        for part, (begin, end) in zip(ranges, _bounds(ranges), strict=True):
            result.lengths[begin:end], part.lengths = part.lengths, None


def _bounds(ranges: list[RangeScan]) -> list[tuple[int, int]]:
    ends = np.cumsum([r.n_records for r in ranges]).tolist()
    return list(zip([0, *ends[:-1]], ends, strict=True))


def _scan_worker(index: int) -> RangeScan | tuple[int, str, str] | str:
    """A range's scan, or its first error as data (an exception's own arguments may not survive pickling)."""
    source, reader, header, cuts = _FORKED["scan"]
    try:
        records = Records.of_range(source, header, cuts, index, hashing=isinstance(source, PartedInput))
        return _scan_range(records, reader, lengths=True)
    except LineError as error:  # line numbers are the range's own; the parent shifts them
        return (error.line, error.reason, error.part)
    except SplitError as error:  # a file that is not gzip after all, one removed meanwhile
        return str(error)


def checksum(source: InputFile) -> tuple[int, str]:
    """One file's stored bytes' count and sha256, as a scan in one process hashes them."""
    digest, size = hashlib.sha256(), 0
    with storage.open_read(source.fs, source.path) as handle:
        for block in iter(lambda: handle.read(storage.BLOCK), b""):
            digest.update(block)  # here, not on HashingReader's thread: reading outpaces hashing
            size += len(block)
    return size, digest.hexdigest()
