"""Reading newline-delimited records in blocks, and extracting labels and groups.

A record is one non-blank line. Records are never re-serialized: the writer receives the
exact bytes of each line (without its ``\\n``). Labels and groups become small integer codes
(4 bytes a record) numbered in the sorted order of their values, so the codes sort exactly
as the values would in numpy and scikit-learn.
"""

from __future__ import annotations

import copy
import csv
import gzip
import hashlib
import itertools
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from operator import attrgetter
from typing import IO, Any, Union

import msgspec
import numpy as np

from airflow_smx.core import storage
from airflow_smx.core.request import format_from_name

CHUNK = 8 << 20
GZIP_MAGIC = b"\x1f\x8b"
_BLANK_LINE = re.compile(rb"\n[ \t\r\f\v]*\n")  # starts with a literal: a fast scan in C


class SplitError(ValueError):
    """The input or the request cannot be split; the message names the line or the numbers."""


class LineError(SplitError):
    """A record that cannot be read, at a 1-based line number of the input (of ``part``, for an
    input of many files)."""

    def __init__(self, line: int, reason: str, part: str = ""):
        self.line, self.reason, self.part = line, reason, part
        super().__init__(f"{part + ' ' if part else ''}line {line}: {reason}")

    def shifted(self, lines: int) -> LineError:
        """The same error, for a range of the input that starts ``lines`` lines into it."""
        return LineError(self.line + lines, self.reason, self.part)


@dataclass
class Chunk:
    """Consecutive records of the input: their bytes and where they came from."""

    records: list[bytes]
    first_line: int  # 1-based line number of the chunk's first line
    kept: list[int] | None  # 0-based offsets of the records among the chunk's lines; None: all lines kept
    n_lines: int = 0  # lines in the chunk, blank ones included
    part: str = ""  # the file it is from, for an input of many files

    def line_number(self, index: int) -> int:
        return self.first_line + (index if self.kept is None else self.kept[index])

    def error(self, index: int, reason: str) -> LineError:
        """The error of record ``index``, naming its line (and its file)."""
        return LineError(self.line_number(index), reason, self.part)

    def without_first(self) -> Chunk:
        """The chunk without its first record (a CSV header)."""
        kept = self.kept if self.kept is not None else list(range(len(self.records)))
        return Chunk(self.records[1:], self.first_line, kept[1:], self.n_lines, self.part)


class HashingReader:
    """Counts and hashes the bytes read from a stream, as stored (compressed or not).

    hashlib releases the GIL on large buffers, so hashing runs on a second thread while this
    one splits and parses: the checksum costs no wall time on a machine with two cores.

    The files of a many-file input are each hashed apart (:meth:`mark` starts the next), and the
    input's digest is that of every file's mark and own sha256 (:func:`files_sha256`): so runs of
    files hashed by several processes, or several hosts, join into the very digest one pass makes.
    """

    def __init__(self, stream: IO[bytes] | None, hashing: bool = True):
        self.stream = stream  # the files of a many-file input are read through it one by one
        self.size = 0
        self._digest = hashlib.sha256() if hashing else None
        self._hasher = ThreadPoolExecutor(max_workers=1) if hashing else None
        self._mark: bytes | None = None  # the file being read, of a many-file input
        self._files: list[bytes] = []  # the files read before it: each one's mark and sha256

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        if self._hasher is not None:
            self._hasher.submit(self._update, data)  # one worker: blocks are hashed in order
        self.size += len(data)
        return data

    def mark(self, data: bytes) -> None:
        """The next file of a many-file input starts; ``data`` names it (not counted as read)."""
        if self._hasher is not None:
            self._hasher.submit(self._next_file, data)

    def _update(self, data: bytes) -> None:  # on the hashing thread, as are the two below
        self._digest.update(data)

    def _next_file(self, mark: bytes) -> None:
        self._end_file()
        self._mark, self._digest = mark, hashlib.sha256()

    def _end_file(self) -> None:
        if self._mark is not None:
            self._files.append(self._mark + self._digest.digest())
            self._mark = None

    def hashed_files(self) -> bytes:
        """Each file's mark and sha256, of the files read (a many-file input): what
        :func:`files_sha256` joins with the other runs'."""
        self._finish()
        return b"".join(self._files)

    def hexdigest(self) -> str:
        self._finish()
        return files_sha256([b"".join(self._files)]) if self._files else self._digest.hexdigest()

    def _finish(self) -> None:
        if self._hasher is None:
            raise ValueError("this pass did not hash its input")
        self._hasher.shutdown(wait=True)
        self._end_file()

    def close(self) -> None:
        """Stop the hashing thread once it has hashed everything read (the digest is read after)."""
        if self._hasher is not None:
            self._hasher.shutdown(wait=True)


def files_sha256(runs: Sequence[bytes]) -> str:
    """The sha256 of a many-file input from its runs' :meth:`HashingReader.hashed_files`, in key order."""
    return hashlib.sha256(b"".join(runs)).hexdigest()


class InputFile:
    """One pass over the input's records, gzip or not, hashing the stored bytes on the way."""

    def __init__(
        self,
        uri: str,
        compression: str = "auto",
        storage_options: dict[str, Any] | None = None,
        listed: dict[str, Any] | None = None,
    ):
        """:param listed: the file's details from a listing (a part's): no request to learn them again"""
        self.uri = uri
        self.fs, self.path = storage.filesystem(uri, storage_options)
        if listed is None:
            try:
                listed = self.fs.info(self.path)
            except FileNotFoundError:
                listed = {"type": "directory"}
            if listed.get("type") == "directory":
                raise SplitError(f"input.uri: no such file: {uri}")
        self.asked = compression  # as the request says: gzip, none or auto
        self._compression = compression  # auto until the file's first bytes are read (once asked)
        self.sample_uri = uri  # whose name may say the format
        self.opened_as = _version(listed)
        self.checksum: tuple[int, str] | None = None  # (bytes, sha256), where known before a pass

    @property
    def compression(self) -> str:
        """gzip or none: as asked, or as the file's first two bytes tell (read the first time only)."""
        if self._compression == "auto":
            self._compression = _kind(self.fs.cat_file(self.path, start=0, end=2))
        return self._compression

    def detect(self, raw: IO[bytes]) -> None:
        """Where not yet known, tell gzip from text by the first bytes of ``raw`` (the file, just
        opened): no request of its own, as the read-ahead block fetched serves them again."""
        if self._compression == "auto":
            self._compression = _kind(raw.read(2))
            raw.seek(0)

    def fingerprint(self) -> tuple[Any, ...]:
        """Size and version (mtime, ETag): changes when the file is rewritten."""
        return _version(self.fs.info(self.path))

    @property
    def listed_size(self) -> int:
        """The stored size when the input was opened (no request)."""
        return int(self.opened_as[0])

    @property
    def size(self) -> int:
        return self.fs.size(self.path)

    def text_size(self) -> int:
        """The bytes its records take, uncompressed: what reading it costs. A gzip file's from its
        trailer (a size mod 4 GiB, and the last member's only: never taken below the stored size)."""
        size = self.size
        if self.compression != "gzip" or size < 4:
            return size
        with self.fs.open(self.path, "rb") as handle:
            handle.seek(size - 4)
            return max(size, int.from_bytes(handle.read(4), "little"))

    def splittable(self) -> bool:
        """Whether byte ranges can be read apart (by several processes): local and uncompressed."""
        return storage.is_local(self.fs) and self.compression == "none"

    def cuts(self, parts: int) -> list[int]:
        """``parts + 1`` offsets cutting the file into about equal byte ranges of whole lines."""
        size = self.size
        cuts = [0]
        with self.fs.open(self.path, "rb") as handle:
            for i in range(1, parts):
                handle.seek(max(size * i // parts - 1, cuts[-1]))
                handle.readline()  # to the start of the next line
                cuts.append(max(min(handle.tell(), size), cuts[-1]))
        return [*cuts, size]

    def first_record(self) -> bytes | None:
        """The first non-blank line, without reading the whole file."""
        with storage.open_read(self.fs, self.path) as raw:
            self.detect(raw)
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if self.compression == "gzip" else raw
            try:
                for line in stream:
                    if line.strip():
                        return line.rstrip(b"\n")
            except (OSError, EOFError) as error:
                raise SplitError(f"input.uri: cannot read {self.uri} as {self.compression}: {error}") from None
        return None

    def chunks(
        self, hashing: bool = True, blank_free: bool = False, start: int = 0, end: int | None = None
    ) -> Iterator[Chunk]:
        """The records block by block, of the bytes ``start:end`` (uncompressed input only) or all.

        :param hashing: hash the stored bytes (``self.reader.hexdigest()`` after the pass)
        :param blank_free: an earlier pass found no blank line: skip looking for them
        """
        with storage.open_read(self.fs, self.path) as raw:
            self.detect(raw)  # before a range's seek
            if start or end is not None:
                raw.seek(start)
                raw = _Bounded(raw, (self.size if end is None else end) - start)
            self.reader = HashingReader(raw, hashing)
            stream = gzip.GzipFile(fileobj=self.reader, mode="rb") if self.compression == "gzip" else self.reader
            try:
                yield from _chunks(stream, blank_free)
            except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
                raise SplitError(f"input.uri: cannot read {self.uri} as {self.compression}: {error}") from None
            finally:
                self.reader.close()


MAX_PARTS = 10_000  # files one input may have (a listing beyond is a wrong prefix, not data)
HIDDEN = ("_", ".")  # names Spark and Hadoop give markers and checksums (_SUCCESS, .part.crc)


def no_records(uri: str) -> SplitError:
    return SplitError(f"input.uri: {uri} holds no records (empty, or only blank lines)")


def open_input(uri: str, compression: str = "auto", storage_options: dict[str, Any] | None = None) -> Any:
    """The input at ``uri``: one file, or every file under a prefix (a ``uri`` ending in ``/``)."""
    if uri.endswith("/"):
        return PartedInput(uri, compression, storage_options)
    return InputFile(uri, compression, storage_options)


class PartedInput:
    """Every file under a prefix, in key order, read as one input: what Spark, Glue, Athena or
    Firehose write. Records are numbered across the files; each may be gzip or not; each
    starts with the CSV header when the input has one (Records checks and skips it).

    Files under a folder or with a name that starts with ``_`` or ``.`` (markers, checksums, a
    job's ``_temporary/`` or ``_delta_log/``) and empty files are not parts.
    """

    def __init__(self, uri: str, compression: str = "auto", storage_options: dict[str, Any] | None = None):
        self.uri = uri
        self.fs, self.path = storage.filesystem(uri, storage_options)
        listed = self._list()
        if not listed:
            raise SplitError(f"input.uri: no files under the prefix {uri}")
        self.opened_as = _listing_fingerprint(listed)  # of the very listing the parts are
        self.asked = compression
        # no file is read yet: sizing the input, or fetching it to read the copy, asks for none
        self.parts = [
            InputFile(self.fs.unstrip_protocol(path), compression, storage_options, listed[path]) for path in listed
        ]
        self.sample_uri = self.parts[0].uri

    @property
    def compression(self) -> str:
        """gzip, none or mixed: every file's first two bytes, where asked, read at once (the first time only)."""
        unknown = [part for part in self.parts if part._compression == "auto"]
        if unknown:
            paths = [part.path for part in unknown]
            heads = self.fs.cat_ranges(paths, [0] * len(paths), [2] * len(paths), on_error="raise")
            for part, head in zip(unknown, heads, strict=True):
                part._compression = _kind(head)
        return combined(part.compression for part in self.parts)

    def _list(self) -> dict[str, dict[str, Any]]:
        found = self.fs.find(self.path, detail=True)
        parts = {
            path: info
            for path, info in sorted(found.items())
            if info.get("type") != "directory" and info.get("size") and not self._hidden(path)
        }
        if len(parts) > MAX_PARTS:
            raise SplitError(
                f"input.uri: {len(parts)} files under {self.uri}; at most {MAX_PARTS} are read as one input"
            )
        return parts

    def below(self, path: str) -> str:
        """``path`` relative to the prefix, as listed (not normalized: ``a/../b`` stays so)."""
        return path[len(self.path.rstrip("/")) + 1 :]

    def _hidden(self, path: str) -> bool:
        # so are ".." and empty segments: such a key must not reach a local path outside (or
        # shared within) the copy the input is fetched to
        return any(not segment or segment.startswith(HIDDEN) for segment in self.below(path).split("/"))

    def fingerprint(self) -> tuple[Any, ...]:
        """Every file's key, size and version, listed anew: changes when a file is added or rewritten."""
        return _listing_fingerprint(self._list())

    @property
    def size(self) -> int:
        return sum(part.size for part in self.parts)

    def text_size(self) -> int:
        return sum(part.text_size() for part in self.parts)

    def splittable(self) -> bool:
        """Whether groups of files can be read apart (by several processes): local, two files or more."""
        return storage.is_local(self.fs) and len(self.parts) > 1

    def cuts(self, parts: int) -> list[int]:
        """``parts + 1`` file indices cutting the files into runs (:func:`runs_of`)."""
        return runs_of([part.listed_size for part in self.parts], parts)

    def first_record(self) -> bytes | None:
        return next((r for r in (part.first_record() for part in self.parts) if r is not None), None)

    def run(self, start: int, end: int) -> PartedInput:
        """Files ``start:end`` alone, read as an input of their own; errors still name each file,
        and a change anywhere under the prefix still shows in :meth:`fingerprint`."""
        view = copy.copy(self)
        view.parts = self.parts[start:end]
        return view

    def mark(self, part: InputFile) -> bytes:
        """What names a file in the input's sha256, beside the file's own: names and sizes count,
        as the same bytes cut into other files are other parts to reference."""
        return f"{self.below(part.path)}\0{part.listed_size}\0".encode()

    def chunks(
        self, hashing: bool = True, blank_free: bool = False, start: int = 0, end: int | None = None
    ) -> Iterator[Chunk]:
        """The records of files ``start:end`` (all by default) in turn, every chunk naming its file;
        the stored bytes of all hashed as one."""
        self.reader = HashingReader(None, hashing)
        try:
            for part in self.parts[start:end]:
                self.reader.mark(self.mark(part))
                yield from self._part_chunks(part, blank_free)
        finally:
            self.reader.close()

    def _part_chunks(self, part: InputFile, blank_free: bool) -> Iterator[Chunk]:
        try:
            with storage.open_read(self.fs, part.path) as raw:
                part.detect(raw)
                self.reader.stream = raw
                stream = gzip.GzipFile(fileobj=self.reader, mode="rb") if part.compression == "gzip" else self.reader
                for chunk in _chunks(stream, blank_free):
                    chunk.part = part.uri
                    yield chunk
        except FileNotFoundError:  # S3 says so at the first read, not at open
            raise SplitError(f"input.uri: {part.uri} was removed while it was being split; run again") from None
        except (OSError, EOFError) as error:
            raise SplitError(f"input.uri: cannot read {part.uri} as {part.compression}: {error}") from None


Input = InputFile | PartedInput


def runs_of(sizes: Sequence[int], parts: int) -> list[int]:
    """``parts + 1`` indices cutting files of ``sizes`` bytes (in key order) into runs, each file
    whole (gzip cannot be read from the middle), the largest run as small as whole files allow
    (the slowest reader sets the time); fewer runs if there are fewer files."""
    runs = min(parts, len(sizes))
    low, high = max(sizes, default=0), sum(sizes)
    while low < high:  # the fewest bytes a run may hold for ``runs`` runs to take every file
        middle = (low + high) // 2
        if len(_packed(sizes, middle, runs)) - 1 <= runs:
            high = middle
        else:
            low = middle + 1
    return _packed(sizes, low, runs)


def _packed(sizes: Sequence[int], most: int, runs: int) -> list[int]:
    """Files in key order into runs of at most ``most`` bytes, each as full as it can be until
    only one file is left for each run still to start (so ``runs`` runs where ``most`` allows)."""
    cuts, held = [0], sizes[0] if sizes else 0
    for i in range(1, len(sizes)):
        if held + sizes[i] > most or len(sizes) - i == runs - len(cuts):
            cuts.append(i)
            held = 0
        held += sizes[i]
    return [*cuts, len(sizes)]


def largest_run(sizes: Sequence[int], parts: int) -> int:
    """The bytes of the largest of the runs :func:`runs_of` cuts: what one of ``parts`` readers holds at most."""
    return max(sum(sizes[start:end]) for start, end in itertools.pairwise(runs_of(sizes, parts)))


def combined(kinds: Iterable[str]) -> str:
    """The compression of files read as one: theirs if all agree, else mixed."""
    distinct = set(kinds)
    return distinct.pop() if len(distinct) == 1 else "mixed"


def _kind(head: bytes) -> str:
    return "gzip" if head == GZIP_MAGIC else "none"


def _version(info: dict[str, Any]) -> tuple[str, ...]:
    """A file's size and version (mtime, ETag), as fsspec lists or describes it."""
    return tuple(str(info.get(k)) for k in ("size", "mtime", "ETag", "LastModified", "VersionId"))


def _listing_fingerprint(listed: dict[str, dict[str, Any]]) -> tuple[Any, ...]:
    return tuple((path, *_version(info)) for path, info in listed.items())


class _Bounded:
    """At most ``remaining`` bytes of a stream."""

    def __init__(self, stream: IO[bytes], remaining: int):
        self.stream, self.remaining = stream, remaining

    def read(self, size: int = -1) -> bytes:
        size = self.remaining if size < 0 else min(size, self.remaining)
        data = self.stream.read(size) if size else b""
        self.remaining -= len(data)
        return data


def _chunks(stream: IO[bytes] | HashingReader, blank_free: bool = False) -> Iterator[Chunk]:
    tail = b""
    line = 1
    while True:
        block = stream.read(CHUNK)
        if not block:
            break
        text = tail + block
        lines = text.split(b"\n")
        tail = lines.pop()  # an unfinished line waits for the next block
        if lines:
            yield Chunk(lines, line, None, len(lines)) if blank_free else _chunk(text, lines, line)
            line += len(lines)
    if tail:
        yield Chunk([tail], line, None, 1) if blank_free else _chunk(tail, [tail], line)


def _chunk(text: bytes, lines: list[bytes], first_line: int) -> Chunk:
    # A regex scan in C looks for blank lines; only then is the list filtered line by line.
    # Every line but the first is preceded by "\n" in ``text``, and every line ends with "\n"
    # (the last line of the file comes alone, as the first line of its own chunk).
    if lines[0].strip() and _BLANK_LINE.search(text) is None:
        return Chunk(lines, first_line, None, len(lines))
    kept = [i for i, line in enumerate(lines) if line.strip()]
    return Chunk([lines[i] for i in kept], first_line, kept, len(lines))


def detect_format(uri: str, first_record: bytes | None) -> str:
    """csv or jsonl: from the extension (ignoring .gz), else from the first record."""
    named = format_from_name(uri)
    if named:
        return named
    return "jsonl" if first_record is not None and first_record.lstrip().startswith(b"{") else "csv"


class Coder:
    """Numbers the distinct values of one field, then renumbers them in sorted value order."""

    def __init__(self, name: str):
        self.name = name
        self.codes: dict[Any, int] = {}
        self.array = array("i")

    def add(self, values: Sequence[Any]) -> None:
        codes = self.codes
        for value in set(values).difference(codes):
            codes[value] = len(codes)
        self.array.extend(map(codes.__getitem__, values))

    def merge(self, values: list[Any]) -> np.ndarray:
        """Take in the distinct values another coder numbered; returns its code -> our code table."""
        return np.array([self.codes.setdefault(v, len(self.codes)) for v in values], dtype=np.int64)

    def ranks(self, parse: Callable[[Any], Any] = lambda v: v) -> tuple[np.ndarray, list[Any]]:
        """Each code's rank in sorted value order, and the values in that order."""
        raw = list(self.codes)
        values = [parse(v) for v in raw]
        order = sorted(range(len(raw)), key=lambda i: _sort_key(values[i]))
        rank = np.empty(len(raw), dtype=np.int64)
        rank[order] = np.arange(len(raw))
        return rank, [values[i] for i in order]


def compact_table(table: np.ndarray, n_values: int) -> np.ndarray:
    """``table`` in the smallest unsigned dtype that holds ``n_values`` codes (a code costs 1 to 4 bytes a record)."""
    dtype = np.uint8 if n_values <= 1 << 8 else np.uint16 if n_values <= 1 << 16 else np.uint32
    return table.astype(dtype)


def _sort_key(value: Any) -> tuple[int, Any]:
    # numbers before strings, as numpy would refuse to compare them at all
    return (0, value) if isinstance(value, int | float) else (1, str(value))


# ---- JSON Lines ---------------------------------------------------------------------------

_Value = Union[str, int, float, bool, None, msgspec.UnsetType]  # noqa: UP007 (msgspec needs a typing.Union)


def _struct_for(paths: Sequence[str], name: str = "Record") -> type:
    """A msgspec Struct that decodes only the (dotted) keys asked for and skips the rest."""
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = None
    return _struct_from_tree(tree, name)


def _struct_from_tree(tree: dict[str, Any], name: str) -> type:
    fields = []
    for i, (key, sub) in enumerate(tree.items()):
        kind = _Value if sub is None else Union[_struct_from_tree(sub, f"{name}_{i}"), None, msgspec.UnsetType]  # noqa: UP007
        fields.append((f"f{i}", kind, msgspec.field(name=key, default=msgspec.UNSET)))
    # gc=False: millions of short-lived records need no cycle tracking (a measured 10-15%).
    return msgspec.defstruct(name, fields, gc=False)


def _getter_for(path: str, paths: Sequence[str]) -> Callable[[Any], Any]:
    """Read a dotted path off a decoded record; a missing level reads as UNSET."""
    tree: dict[str, Any] = {}
    for p in paths:
        node = tree
        for key in p.split("."):
            node = node.setdefault(key, {})
    attributes, node = [], tree
    for key in path.split("."):
        attributes.append(f"f{list(node).index(key)}")
        node = node[key]
    if len(attributes) == 1:
        return attrgetter(attributes[0])

    def get(record: Any) -> Any:
        for attribute in attributes:
            if record is None or record is msgspec.UNSET:
                return msgspec.UNSET
            record = getattr(record, attribute)
        return record

    return get


class JsonFieldReader:
    """Checks every record is a JSON object and extracts label and group values (msgspec, ~1 us a record)."""

    def __init__(self, fields: dict[str, str]):
        self.fields = fields  # role ("label", "group") -> dotted key
        self.roles = list(fields)
        paths = list(dict.fromkeys(fields.values()))
        self.decoder = msgspec.json.Decoder(_struct_for(paths))
        self.getters = {role: _getter_for(path, paths) for role, path in fields.items()}

    def read(self, chunk: Chunk) -> dict[str, list[Any]]:
        try:
            decoded = list(map(self.decoder.decode, chunk.records))
        except (msgspec.DecodeError, msgspec.ValidationError):
            decoded = [self._decode_one(chunk, i) for i in range(len(chunk.records))]
        values = {}
        for role, get in self.getters.items():
            column = list(map(get, decoded))
            distinct = set(column)  # checking the few distinct values is cheaper than scanning the column
            if msgspec.UNSET in distinct or None in distinct:
                index = next(i for i, v in enumerate(column) if v is msgspec.UNSET or v is None)
                raise chunk.error(index, f"{role} {self.fields[role]!r} is missing or null")
            values[role] = column
        return values

    def _decode_one(self, chunk: Chunk, index: int) -> Any:
        try:
            return self.decoder.decode(chunk.records[index])
        except msgspec.ValidationError as error:
            raise chunk.error(index, _field_message(error, self.fields)) from None
        except msgspec.DecodeError as error:
            raise chunk.error(index, f"malformed JSON ({error})") from None


def _field_message(error: msgspec.ValidationError, fields: dict[str, str]) -> str:
    text = str(error)
    if "Expected `object`" in text and " - at `$" not in text:
        return "a JSON Lines record must be a JSON object"
    names = " / ".join(f"{role} {path!r}" for role, path in fields.items())
    return f"{names} must be a string, number, boolean or nested object on the path ({text})"


# ---- CSV ----------------------------------------------------------------------------------


class CsvFieldReader:
    """Checks every record parses as one CSV row and extracts label and group columns (C parser)."""

    def __init__(self, columns: dict[str, int], names: dict[str, str | int]):
        self.columns = columns  # role -> 0-based column index
        self.roles = list(columns)
        self.names = names  # role -> what the user called it, for messages
        self.width = max(columns.values()) + 1 if columns else 0

    def read(self, chunk: Chunk) -> dict[str, list[Any]]:
        texts = [_decode(chunk, i) for i in range(len(chunk.records))]
        try:
            rows = list(csv.reader(texts, strict=True))
        except csv.Error as error:
            raise self._locate(chunk, texts, str(error)) from None
        if len(rows) != len(texts):
            raise self._locate(chunk, texts, "a quoted field spans lines")
        short = [i for i, row in enumerate(rows) if len(row) < self.width]
        if short:
            index = short[0]
            role = next(r for r, c in self.columns.items() if c >= len(rows[index]))
            raise chunk.error(
                index,
                f"{role} column {self.names[role]!r} is missing (the record has {len(rows[index])} columns)",
            )
        return {role: [row[column] for row in rows] for role, column in self.columns.items()}

    @staticmethod
    def _locate(chunk: Chunk, texts: list[str], reason: str) -> LineError:
        for i, text in enumerate(texts):
            try:
                if len(list(csv.reader([text], strict=True))) != 1:
                    break
            except csv.Error as error:
                return chunk.error(i, f"malformed CSV ({error})")
        else:
            i = 0
        return chunk.error(i, f"malformed CSV ({reason}); records must be one per line")


def _decode(chunk: Chunk, index: int) -> str:
    try:
        return chunk.records[index].decode("utf-8")
    except UnicodeDecodeError as error:
        raise chunk.error(index, f"not UTF-8 text ({error.reason})") from None


def resolve_columns(header: bytes | None, fields: dict[str, str | int]) -> dict[str, int]:
    """Map label/group (header names or indexes) to 0-based column indexes."""
    names: list[str] = []
    if header is not None:
        names = next(csv.reader([header.decode("utf-8", errors="replace").rstrip("\r")]), [])
    columns = {}
    for role, key in fields.items():
        if isinstance(key, int) or (isinstance(key, str) and key.isdigit() and key not in names):
            columns[role] = int(key)
        elif key in names:
            columns[role] = names.index(key)
        else:
            where = f"header columns are {names}" if header is not None else "the CSV has no header (csv_header)"
            raise SplitError(f"input.{role}: column {key!r} not found: {where}")
    return columns


def parse_csv_value(values: list[str]) -> Callable[[str], Any]:
    """CSV cells are text; read a column as numbers when every value is one (as pandas does)."""
    for kind in (int, float):
        try:
            for value in values:
                kind(value)
        except ValueError:
            continue
        return kind
    return str
