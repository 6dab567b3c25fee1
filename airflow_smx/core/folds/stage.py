"""An object-store input fetched to local disk first, at the network's pace.

Read straight from S3, the split streams the object through one connection twice (the scan,
then the write). Fetched first with ranged GETs in parallel (fsspec's ``cat_ranges``), the
object crosses the network once, as fast as a parallel download, and every pass after it
reads a local file: the scan in several processes, the checksum, the write. The files of a
many-file input are fetched side by side (fsspec's ``get``), each once.

The copy needs local disk as large as the object; an input the worker has no room for is read
from S3 as before. The copy is of one version: if the object is rewritten while it is fetched
(its size, ETag or modification time changes), the split stops rather than mix two versions.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from airflow_smx.core import storage
from airflow_smx.core.folds.records import Input, InputFile, PartedInput, SplitError

log = logging.getLogger(__name__)

STAGE_MIN_BYTES = 64 << 20  # below this, one stream is about as fast as the parallel fetch
RANGE_BYTES = 8 << 20
IN_FLIGHT = 4  # ranges fetched at once; with the batch being written, at most 64 MiB of buffers


@contextlib.contextmanager
def staged(source: Input) -> Iterator[Input]:
    """``source``, or a local copy of it that reads as the same input (errors name ``source``)."""
    if not _worth_staging(source):
        yield source
        return
    with tempfile.TemporaryDirectory(prefix="smx-input-") as folder:
        if isinstance(source, PartedInput):
            yield _fetch_parts(source, Path(folder))
        else:
            yield _fetch(source, Path(folder) / "input")


def _worth_staging(source: Input) -> bool:
    if storage.is_local(source.fs):
        return False
    size = stored_size(source)
    return size >= STAGE_MIN_BYTES and storage.local_room_for(size)


def stored_size(source: Input) -> int:
    """The input's bytes (every file's), as listed when it was opened: no request."""
    parts = source.parts if isinstance(source, PartedInput) else [source]
    return sum(part.listed_size for part in parts)


def _fetch(source: InputFile, local: Path) -> InputFile:
    size = source.listed_size
    log.info(
        "fetching %s (%d MB) in ranges of %d MiB, %d at once", source.uri, size // 10**6, RANGE_BYTES >> 20, IN_FLIGHT
    )
    starts, digest = list(range(0, size, RANGE_BYTES)), hashlib.sha256()

    def keep(blocks: list[bytes]) -> None:
        for block in blocks:
            out.write(block)
            digest.update(block)  # the checksum, without reading the copy again

    # a batch is written and hashed on a thread (both release the GIL) while the next is fetched
    with local.open("wb") as out, ThreadPoolExecutor(max_workers=1) as keeper:
        kept = None
        for at in range(0, len(starts), IN_FLIGHT):
            batch = starts[at : at + IN_FLIGHT]
            ends = [min(start + RANGE_BYTES, size) for start in batch]
            blocks = source.fs.cat_ranges([source.path] * len(batch), batch, ends, on_error="raise")
            if kept is not None:
                kept.result()
            kept = keeper.submit(keep, blocks)
        if kept is not None:
            kept.result()
    if source.fingerprint() != source.opened_as or os.path.getsize(local) != size:
        raise SplitError(f"input.uri: {source.uri} changed while it was being read; run the split again")
    copy = InputFile(local.as_uri(), source.asked)  # gzip or not, told by the local copy
    copy.uri = copy.sample_uri = source.uri  # what errors and the format's detection see
    copy.checksum = (size, digest.hexdigest())
    return copy


def _fetch_parts(source: PartedInput, folder: Path) -> PartedInput:
    """Every file to the same name under ``folder``: the copy lists, numbers and hashes as the input."""
    log.info("fetching the %d files under %s", len(source.parts), source.uri)
    locals_ = [folder / source.below(part.path) for part in source.parts]  # no "..": those are not parts
    source.fs.get([part.path for part in source.parts], [str(path) for path in locals_])
    if source.fingerprint() != source.opened_as:
        raise SplitError(f"input.uri: {source.uri} changed while it was being read; run the split again")
    copy = PartedInput(folder.as_uri() + "/", source.asked)  # each gzip or not, told by the local copy
    for mine, theirs in zip(copy.parts, source.parts, strict=True):
        mine.uri = theirs.uri  # errors name the object, not the copy
    copy.uri, copy.sample_uri = source.uri, source.sample_uri
    return copy
