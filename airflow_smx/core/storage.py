"""One code path for ``file://`` and ``s3://`` (fsspec; s3fs for S3). No Airflow import.

Writers use a bounded block size: s3fs buffers one block per open file before each
multipart part is sent, so memory stays at (open files x block) whatever the data size.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from typing import IO, Any

import fsspec
from fsspec import AbstractFileSystem

BLOCK = 8 << 20  # s3fs multipart part size on write and read-ahead on read (S3's minimum part is 5 MiB)
S3_MIN_PART = 5 << 20
S3_MAX_COPY_PART = 5 << 30
LOCAL_ROOM = 1.5  # a local copy of n bytes is made only where 1.5 x n is free: room for the rest


def local_room_for(nbytes: int) -> bool:
    """Whether the temporary folder can take a copy of ``nbytes`` (an S3 input, or parts for S3)."""
    return shutil.disk_usage(tempfile.gettempdir()).free > LOCAL_ROOM * nbytes


def filesystem(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[AbstractFileSystem, str]:
    """The filesystem and the scheme-less path of ``uri``."""
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    return fs, path


def join(uri: str, *parts: str) -> str:
    """Join path segments onto a URI with exactly one ``/`` between them."""
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])


def relative(uri: str, prefix: str) -> str:
    """``uri`` relative to ``prefix`` (which ``uri`` must lie under)."""
    prefix = prefix.rstrip("/") + "/"
    if not uri.startswith(prefix):
        raise ValueError(f"{uri} is not under {prefix}")
    return uri[len(prefix) :]


def is_local(fs: AbstractFileSystem) -> bool:
    return "file" in _protocols(fs)


def _protocols(fs: AbstractFileSystem) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def open_write(fs: AbstractFileSystem, path: str, content_type: str | None = None) -> IO[bytes]:
    """Open ``path`` for binary writing, creating local parent folders.

    :param content_type: the S3 object's Content-Type (a browser opens text/html rather than
        downloading it); local files have none
    """
    if is_local(fs):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        return fs.open(path, "wb")
    return fs.open(path, "wb", block_size=BLOCK, **({"ContentType": content_type} if content_type else {}))


def open_read(fs: AbstractFileSystem, path: str) -> IO[bytes]:
    if is_local(fs):
        return fs.open(path, "rb")
    return fs.open(path, "rb", block_size=BLOCK, cache_type="readahead")


def discard(handle: IO[bytes]) -> None:
    """Abandon a file being written: abort an S3 multipart upload, close a local file."""
    with contextlib.suppress(Exception):
        if hasattr(handle, "discard") and not is_local_handle(handle):
            handle.discard()
        else:
            handle.close()


def is_local_handle(handle: IO[bytes]) -> bool:
    fs = getattr(handle, "fs", None)
    return fs is None or is_local(fs)


def upload(local_path: Any, uri: str, storage_options: dict[str, Any] | None = None) -> None:
    """Copy a local file to ``uri`` in blocks."""
    fs, path = filesystem(uri, storage_options)
    with open(local_path, "rb") as source, open_write(fs, path) as out:
        shutil.copyfileobj(source, out, BLOCK)


def download(uri: str, local_path: Any, storage_options: dict[str, Any] | None = None) -> None:
    """Copy ``uri`` to a local file in blocks."""
    fs, path = filesystem(uri, storage_options)
    with open_read(fs, path) as source, open(local_path, "wb") as out:
        shutil.copyfileobj(source, out, BLOCK)


def write_bytes(fs: AbstractFileSystem, path: str, data: bytes, content_type: str | None = None) -> None:
    with open_write(fs, path, content_type) as handle:
        handle.write(data)


def write_json(fs: AbstractFileSystem, path: str, value: Any) -> None:
    """JSON with sorted keys and a final newline: the same value always gives the same bytes."""
    write_bytes(fs, path, _json_bytes(value))


def create_json(fs: AbstractFileSystem, path: str, value: Any) -> None:
    """:func:`write_json`, but only where no file is: FileExistsError otherwise. Atomic on local
    disks; on S3 a check, then the write (two writers within that moment: the last one wins)."""
    data = _json_bytes(value)
    if is_local(fs):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        with open(path, "xb") as handle:
            handle.write(data)
        return
    if fs.exists(path):
        raise FileExistsError(path)
    write_bytes(fs, path, data)


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def read_json(fs: AbstractFileSystem, path: str) -> Any:
    with fs.open(path, "rb") as handle:
        return json.load(handle)


def concatenate(fs: AbstractFileSystem, target: str, sources: Sequence[str]) -> None:
    """Write ``sources`` one after another into ``target``.

    On S3, parts big enough for a multipart copy are joined server-side (no byte passes
    through this process); otherwise the bytes are streamed through in blocks.
    """
    sizes = [fs.size(s) for s in sources]
    if hasattr(fs, "merge") and not is_local(fs) and _copyable(sizes):
        fs.merge(target, list(sources))
        return
    with open_write(fs, target) as out:
        for source in sources:
            with open_read(fs, source) as handle:
                shutil.copyfileobj(handle, out, BLOCK)


def _copyable(sizes: Sequence[int]) -> bool:
    return bool(sizes) and all(s >= S3_MIN_PART for s in sizes[:-1]) and all(0 < s <= S3_MAX_COPY_PART for s in sizes)


def remove(fs: AbstractFileSystem, paths: Iterator[str] | Sequence[str]) -> None:
    """Remove what exists of ``paths``; a failed clean-up must not hide the error that caused it."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError, OSError):
            if fs.exists(path):
                fs.rm(path, recursive=True)
