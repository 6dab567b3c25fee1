"""The split of a many-file input by several instances of one SageMaker Processing job.

Each instance (a "host": SageMaker names them ``algo-1``, ``algo-2``...) takes a run of whole
files, contiguous in key order (``PartedInput.cuts``): its records are one stretch of the
input's numbering and, in every part, one stretch of bytes. Then:

1. every host scans its run (in as many processes as it has cores) and publishes what it found:
   each range's record and line counts, its label and group values, each record's codes and
   each file's sha256;
2. the first host merges those in run order, exactly as one machine merges its ranges (the
   input's sha256 included: no host reads more than its run), assigns the folds and makes the
   plan, then publishes the plan and every record's fold;
3. every host writes its run's records of each part as a segment;
4. the first host joins each part's segments, server-side on S3 where the sizes allow, and
   writes the train manifests, the header and the plan, last.

So the plan and the parts are byte for byte those of :func:`split_dataset` on one machine, and
the folds land whole or not at all. The hosts talk through files in the attempt's own work
folder, JSON and ``.npy`` only (nothing is unpickled: the bucket may be writable by others);
each waits for the others' files, and every outcome is published, failures too, so that none
waits in vain: the input's first error ends the job with that error, another failure ends it
failed. Every host checks that it listed the same files as the first.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import posixpath
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from airflow_smx.core import storage
from airflow_smx.core.folds.assign import assign_folds
from airflow_smx.core.folds.plan import FoldPlan
from airflow_smx.core.folds.records import PartedInput, SplitError, combined, no_records, open_input
from airflow_smx.core.folds.scan import (
    RangeScan,
    Scan,
    begin_scan,
    merge,
    processes_for,
    scan_ranges,
)
from airflow_smx.core.folds.split import already_split, fs_path, make_plan, part_targets, write_channels
from airflow_smx.core.folds.stage import staged
from airflow_smx.core.folds.write import write_parts
from airflow_smx.core.request import CVSpec, InputSpec

log = logging.getLogger(__name__)

RESOURCE_CONFIG = "config/resourceconfig.json"  # under /opt/ml: where SageMaker tells a container its hosts
POLL_SECONDS = 2.0


@dataclass(frozen=True)
class Host:
    """This instance's place among the job's instances."""

    index: int
    count: int

    @classmethod
    def of_job(cls, ml_root: Path) -> Host:
        """From SageMaker's resource config under the container's ``/opt/ml`` (``ml_root``); one
        host where there is none (a job of one instance)."""
        try:
            with (ml_root / RESOURCE_CONFIG).open(encoding="utf-8") as handle:
                config = json.load(handle)
        except FileNotFoundError:
            return cls(0, 1)
        hosts = sorted(config["hosts"])
        return cls(hosts.index(config["current_host"]), len(hosts))

    @property
    def leads(self) -> bool:
        return self.index == 0


@dataclass
class Shared:
    """The work folder the hosts talk through."""

    fs: Any
    path: str

    def publish(self, name: str, message: dict[str, Any]) -> None:
        """Write ``name`` whole or not at all (an S3 PUT is; a local file is renamed into place)."""
        target = self.join(name)
        storage.write_bytes(self.fs, target + ".partial", json.dumps(message).encode())
        self.fs.mv(target + ".partial", target)

    def wait_for(self, name: str) -> dict[str, Any]:
        target = self.join(name)
        while True:
            self.fs.invalidate_cache()  # a listing cached by s3fs would hide the file for good
            if self.fs.exists(target):
                return json.loads(self.fs.cat_file(target))
            time.sleep(POLL_SECONDS)

    def save_array(self, name: str, array: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        storage.write_bytes(self.fs, self.join(name), buffer.getvalue())

    def load_array(self, name: str) -> np.ndarray:
        return np.load(io.BytesIO(self.fs.cat_file(self.join(name))), allow_pickle=False)

    def join(self, *names: str) -> str:
        return posixpath.join(self.path, *names)


def split_sharded(
    spec: InputSpec,
    cv: CVSpec,
    folds_uri: str,
    work_uri: str,
    host: Host,
    *,
    assemble_train: bool = False,
    final: bool = False,
    workers: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> FoldPlan | None:
    """This host's share of the split of the many-file input ``spec.uri`` (see the module).

    :param work_uri: the attempt's own folder for the hosts' messages (removed at the end)
    :param host: this instance's index and the job's instance count
    :param workers: processes on this host (None: as ``split_dataset`` picks)
    :return: the plan, on the first host; None on the others
    :raises SplitError: on the first host, the input's first problem in key order, whichever
        host met it
    """
    shared = Shared(*storage.filesystem(work_uri, storage_options))
    job = Job(spec, cv, folds_uri, assemble_train, final, workers, storage_options)
    if host.leads:
        return _lead(shared, host, job)
    _follow(shared, host, job)
    return None


@dataclass
class Job:
    """What the document asks, as every host reads it."""

    spec: InputSpec
    cv: CVSpec
    folds_uri: str
    assemble_train: bool
    final: bool
    workers: int | None
    storage_options: dict[str, Any] | None


@dataclass
class Share:
    """The input as this host listed it, and its run of files."""

    whole: PartedInput
    listing: str  # a digest of the listing: every host must have cut the same files
    template: Scan  # format and header, from the input's first record
    reader: Any
    cuts: list[int]

    @classmethod
    def of(cls, job: Job, count: int) -> Share:
        whole = open_input(job.spec.uri, job.spec.compression, job.storage_options)
        if not isinstance(whole, PartedInput):
            raise SplitError(f"input.uri: {job.spec.uri} is one file; only a prefix of files is split by several hosts")
        template, reader = begin_scan(whole, job.spec)
        listing = hashlib.sha256(json.dumps(whole.opened_as).encode()).hexdigest()
        return cls(whole, listing, template, reader, whole.cuts(count))

    @property
    def runs(self) -> int:
        return len(self.cuts) - 1

    def run(self, index: int) -> PartedInput:
        return self.whole.run(self.cuts[index], self.cuts[index + 1])


def _outcome(error: BaseException) -> dict[str, str]:
    """A failure as a message: the input's fault (reported to the user), or anything else."""
    return {"error": str(error)} if isinstance(error, SplitError) else {"failed": f"{error!r}"}


def _raise(message: dict[str, Any], host: int) -> None:
    if "error" in message:
        raise SplitError(message["error"])
    if "failed" in message:
        raise RuntimeError(f"host {host + 1} failed: {message['failed']}")


def _follow(shared: Shared, host: Host, job: Job) -> None:
    """Every host but the first: scan its run, publish it, then write its segments as told.
    Whatever fails is published too, so that the first host never waits for a message in vain."""
    scanned, written = f"scan-{host.index:05d}", f"written-{host.index:05d}.json"
    with contextlib.ExitStack() as stack:
        try:
            share = Share.of(job, host.count)
            if host.index >= share.runs:  # fewer runs (files) than hosts
                shared.publish(f"{scanned}.json", {"listing": share.listing, "ranges": []})
                return
            run = stack.enter_context(staged(share.run(host.index)))
            mine = _scan_run(shared, scanned, run, share, job.workers)
        except BaseException as error:
            if _published_failure(shared, f"{scanned}.json", error):
                return
            raise
        go = shared.wait_for("plan.json")
        if "plan" in go:
            try:
                _write_segments(shared, host.index, run, mine, go)
            except BaseException as error:
                if _published_failure(shared, written, error):
                    return
                raise
        if "plan" in go or "reuse" in go:  # the first host clears the work folder once all have said so
            shared.publish(written, {})


def _published_failure(shared: Shared, name: str, error: BaseException) -> bool:
    """Publish ``error`` as ``name``; whether it is the input's (the first host reports it, this
    host ends well) rather than a failure of this host (which ends the job)."""
    shared.publish(name, _outcome(error))
    return isinstance(error, SplitError)


def _scan_run(shared: Shared, name: str, run: PartedInput, share: Share, workers: int | None) -> Scan:
    """Scan this host's run and publish its ranges; this host's own view of them, for its write."""
    ranges, cuts = scan_ranges(run, share.reader, share.template.header, processes_for(run, workers))
    for r, found in enumerate(ranges):
        for role, codes in found.codes.items():
            shared.save_array(f"{name}-{r}-{role}.npy", codes)
    summaries = [_range_summary(found) for found in ranges]
    # its files' compression, as read (from the copy, if staged): the first host asks no other host's
    shared.publish(f"{name}.json", {"listing": share.listing, "ranges": summaries, "compression": run.compression})
    template = share.template
    mine = Scan(format=template.format, compression=run.compression, header=template.header, files=len(run.parts))
    merge(mine, ranges)  # its bytes too, for the write's check that nothing changed
    mine.cuts = cuts
    return mine


def _range_summary(found: RangeScan) -> dict[str, Any]:
    return {
        "n_records": found.n_records,
        "n_lines": found.n_lines,
        "record_bytes": found.record_bytes,
        "values": found.values,
        "stored": found.stored,
        "hashed": found.hashed,
    }


def _gather(shared: Shared, share: Share) -> tuple[list[RangeScan], list[int], str]:
    """Every run's ranges in key order, each run's record count and the input's compression; the
    first error in key order is raised, as is a host that listed other files than this one."""
    gathered, counts, kinds = [], [], []
    for index in range(share.runs):
        name = f"scan-{index:05d}"
        message = shared.wait_for(f"{name}.json")
        _raise(message, index)
        if message["listing"] != share.listing:
            raise SplitError(f"input.uri: {share.whole.uri} changed while it was being split; run the split again")
        for r, summary in enumerate(message["ranges"]):
            codes = {role: shared.load_array(f"{name}-{r}-{role}.npy") for role in summary["values"]}
            gathered.append(RangeScan(codes=codes, lengths=None, **summary))
        counts.append(sum(summary["n_records"] for summary in message["ranges"]))
        kinds.append(message["compression"])
    return gathered, counts, combined(kinds)


def _lead(shared: Shared, host: Host, job: Job) -> FoldPlan:
    """The first host: its own run as the others do theirs; then merge, assign and plan; then the
    segments of all joined into the parts. Until the plan is published, a failure is published
    instead (the others stop); after it, the folds written so far are removed."""
    out_fs, folds_path = storage.filesystem(job.folds_uri, job.storage_options)
    published = False
    try:
        share = Share.of(job, host.count)
        with staged(share.run(0)) as run:
            mine = _scan_run(shared, "scan-00000", run, share, job.workers)
            found = share.template
            ranges, counts, found.compression = _gather(shared, share)
            merge(found, ranges)
            if found.n_records == 0:
                raise no_records(job.spec.uri)
            labels, groups = found.codes.get("label"), found.codes.get("group")
            assignment = assign_folds(job.cv, found.n_records, labels, groups, found.values.get("label"))
            plan = make_plan(job.spec, job.cv, job.folds_uri, found, assignment, job.assemble_train, job.final)
            if already_split(out_fs, folds_path, plan):
                log.info("%s already holds this split; reusing it", job.folds_uri)
                shared.publish("plan.json", {"reuse": True})
                published = True
                _all_written(shared, share.runs)
            else:
                storage.remove(out_fs, [folds_path])  # an earlier, interrupted attempt at this same run
                shared.save_array("folds.npy", assignment.folds)
                go = {"plan": plan.to_json(), "starts": np.cumsum([0, *counts]).tolist()}
                shared.publish("plan.json", go)
                published = True
                _write_all(shared, out_fs, folds_path, share, run, mine, go, job, found)
    except BaseException as error:
        if not published:
            shared.publish("plan.json", _outcome(error))
        raise
    storage.remove(shared.fs, [shared.path])
    return plan


def _write_all(
    shared: Shared,
    out_fs: Any,
    folds_path: str,
    share: Share,
    run: PartedInput,
    mine: Scan,
    go: dict[str, Any],
    job: Job,
    found: Scan,
) -> None:
    """This host's segments, then (once every host has written its own) the parts and channels;
    all of them, or none."""
    plan = FoldPlan.from_json(go["plan"])
    try:
        _write_segments(shared, 0, run, mine, go)
        _all_written(shared, share.runs)
        _join(shared, out_fs, plan, share.runs)
        write_channels(out_fs, folds_path, job.spec, found, plan)
        if share.whole.fingerprint() != share.whole.opened_as:
            raise SplitError(f"input.uri: {job.spec.uri} changed while it was being split; run the split again")
    except BaseException:
        storage.remove(out_fs, [folds_path])
        raise


def _all_written(shared: Shared, runs: int) -> None:
    for index in range(1, runs):
        _raise(shared.wait_for(f"written-{index:05d}.json"), index)


def _segment(shared: Shared, repeat: int, code: int, index: int) -> str:
    return shared.join("segments", str(repeat), str(code), f"{index:05d}")


def _write_segments(shared: Shared, index: int, run: PartedInput, mine: Scan, go: dict[str, Any]) -> None:
    """Run ``index``'s records of every part, each part's as one segment."""
    plan = FoldPlan.from_json(go["plan"])
    start, end = go["starts"][index], go["starts"][index + 1]
    folds = shared.load_array("folds.npy")[:, start:end]
    if folds.shape[1] != mine.n_records:
        raise SplitError(f"input.uri: {plan.input['uri']} changed while it was being split; run the split again")
    for repeat in range(plan.n_repeats):
        targets = {code: _segment(shared, repeat, code, index) for code in part_targets(plan, repeat)}
        write_parts(shared.fs, run, mine, np.ascontiguousarray(folds[repeat]), targets)


def _join(shared: Shared, out_fs: Any, plan: FoldPlan, runs: int) -> None:
    """Each part from its runs' segments, in key order (an empty segment adds nothing)."""
    for repeat in range(plan.n_repeats):
        for code, uri in part_targets(plan, repeat).items():
            segments = [_segment(shared, repeat, code, index) for index in range(runs)]
            segments = [path for path in segments if shared.fs.size(path)]
            if segments:
                storage.concatenate(out_fs, fs_path(out_fs, uri), segments)
            else:
                storage.write_bytes(out_fs, fs_path(out_fs, uri), b"")
        log.info("joined the parts of repeat %d of %d from %d hosts", repeat + 1, plan.n_repeats, runs)
