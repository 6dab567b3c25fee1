"""The second pass: each record goes to the part of the fold it validates in, in file order.

When the input was scanned in ranges (byte ranges of a local file or of an S3 object fetched to
one; runs of files of a many-file input, local or fetched), each range is written by its own
process: the first pass measured every record, so where each
range's records start in each part is known beforehand, and the processes write side by side
into the same files. Parts bound for S3 are written on local disk first, then uploaded at once
(fsspec's put: the files side by side, large ones in concurrent multipart chunks) rather than
streamed one buffer at a time. Every way gives the same bytes.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from operator import itemgetter
from typing import IO, Any

import numpy as np

from airflow_smx.core import storage
from airflow_smx.core.folds.assign import CHUNK
from airflow_smx.core.folds.processes import run_forked
from airflow_smx.core.folds.records import Input, SplitError
from airflow_smx.core.folds.scan import Records, Scan

log = logging.getLogger(__name__)

_FORKED: dict[str, Any] = {}


def write_parts(fs: Any, source: Input, found: Scan, folds: np.ndarray, targets: dict[int, str]) -> None:
    """Write the records whose fold code (in ``folds``, one per record) has a target path.

    :param targets: fold code (HOLDOUT for the hold-out) -> scheme-less output path
    """
    if not storage.is_local(fs) and storage.local_room_for(found.record_bytes):  # uncompressed, one repeat
        _write_then_upload(fs, source, found, folds, targets)
    elif found.cuts is not None and storage.is_local(fs):
        _write_parallel(fs, source, found, folds, targets)
    else:
        _write_sequential(fs, source, found, folds, targets)


def _write_then_upload(fs: Any, source: Input, found: Scan, folds: np.ndarray, targets: dict[int, str]) -> None:
    local_fs, _ = storage.filesystem("file:///")
    with tempfile.TemporaryDirectory(prefix="smx-parts-") as folder:
        local = {code: os.path.join(folder, str(i)) for i, code in enumerate(targets)}
        write_parts(local_fs, source, found, folds, local)
        log.info("uploading %d parts written on local disk in %s", len(local), folder)
        fs.put([local[code] for code in targets], [targets[code] for code in targets])


def _changed(source: Input) -> SplitError:
    return SplitError(f"input.uri: {source.uri} changed while it was being split; run the split again")


def _write_sequential(fs: Any, source: Input, found: Scan, folds: np.ndarray, targets: dict[int, str]) -> None:
    handles: dict[int, IO[bytes]] = {}
    try:
        for code, path in targets.items():
            handles[code] = storage.open_write(fs, path)
        start = 0
        records = Records(source, found.header, hashing=False, blank_free=found.blank_free)
        for chunk in records:
            end = start + len(chunk.records)
            if end > len(folds):
                raise _changed(source)
            for code, data in _by_fold(chunk.records, folds[start:end]):
                if code in handles:
                    handles[code].write(data)
                    handles[code].write(b"\n")
            start = end
        if start != found.n_records or source.reader.size != found.bytes:
            raise _changed(source)
    except BaseException:
        for handle in handles.values():
            storage.discard(handle)
        raise
    for handle in handles.values():
        handle.close()


def _by_fold(records: list[bytes], codes: np.ndarray) -> Iterator[tuple[int, bytes]]:
    """The chunk's records grouped by fold code, file order kept within a fold, joined by \\n (none after the last)."""
    order = np.argsort(codes, kind="stable")
    present, starts = np.unique(codes[order], return_index=True)
    ordered = itemgetter(*order.tolist())(records) if len(records) > 1 else tuple(records)
    ends = [*starts[1:].tolist(), len(records)]
    for code, begin, end in zip(present.tolist(), starts.tolist(), ends, strict=True):
        yield code, b"\n".join(ordered[begin:end])


def _write_parallel(fs: Any, source: Input, found: Scan, folds: np.ndarray, targets: dict[int, str]) -> None:
    codes = sorted(targets)
    # fold code + 1 -> column in the size table; a run of a sharded split may lack the highest codes
    slot = np.full(max(max(codes), int(folds.max(initial=-1))) + 2, -1, dtype=np.int64)
    slot[np.array(codes) + 1] = np.arange(len(codes))
    bounds = np.cumsum([0, *found.range_records])
    sizes = np.zeros((len(found.range_records), len(codes)), dtype=np.int64)
    for r in range(len(found.range_records)):
        for begin in range(bounds[r], bounds[r + 1], CHUNK):  # int64 scratch of CHUNK records, not of n
            end = min(begin + CHUNK, bounds[r + 1])
            columns = slot[folds[begin:end] + 1]
            wanted = columns >= 0
            record_bytes = found.lengths[begin:end][wanted].astype(np.int64) + 1
            sizes[r] += np.bincount(columns[wanted], weights=record_bytes, minlength=len(codes)).astype(np.int64)
    offsets = np.cumsum(sizes, axis=0) - sizes  # where range r starts in each part
    for code in codes:  # created (empty) here, so that no process races another to create them
        storage.open_write(fs, targets[code]).close()
    _FORKED["write"] = (source, found, folds, bounds, codes, offsets, targets)
    try:
        written = run_forked(_write_worker, len(found.range_records))
    finally:
        _FORKED.pop("write", None)
    if not np.array_equal(np.array(written), sizes):
        raise _changed(source)


def _write_worker(index: int) -> list[int]:
    source, found, folds, bounds, codes, offsets, targets = _FORKED["write"]
    positions = {code: int(offsets[index][i]) for i, code in enumerate(codes)}
    start_at = dict(positions)
    files = {code: os.open(targets[code], os.O_WRONLY) for code in codes}
    try:
        records = Records.of_range(source, found.header, found.cuts, index, hashing=False, blank_free=found.blank_free)
        start, stop = int(bounds[index]), int(bounds[index + 1])
        for chunk in records:
            end = start + len(chunk.records)
            if end > stop:
                break  # the input grew: the sizes will not match
            for code, data in _by_fold(chunk.records, folds[start:end]):
                if code in files:
                    positions[code] += _write_at(files[code], data, positions[code])
            start = end
    finally:
        for handle in files.values():
            os.close(handle)
    return [positions[code] - start_at[code] for code in codes]


def _write_at(handle: int, data: bytes, offset: int) -> int:
    """Write ``data`` and a newline at ``offset``; a short write continues where it stopped."""
    pending, written = [memoryview(data), memoryview(b"\n")], 0
    while pending:
        count = os.pwritev(handle, pending, offset + written)
        written += count
        while pending and count >= len(pending[0]):
            count -= len(pending[0])
            pending.pop(0)
        if pending and count:
            pending[0] = pending[0][count:]
    return written
