"""The split of a many-file input by several instances of one SageMaker Processing job.

Each instance (a "host": SageMaker names them ``algo-1``, ``algo-2``...) takes a run of whole
files, contiguous in key order (``PartedInput.cuts``): its records are one stretch of the
input's numbering and, in every part, one stretch of bytes. Then:

1. every host scans its run (in as many processes as it has cores) and publishes what it found:
   each range's record and line counts, its label and group values and each record's codes;
2. the first host merges those in run order, exactly as one machine merges its ranges, hashes
   the input (read once more, while the hosts scan), assigns the folds and makes the plan, then
   publishes the plan and every record's fold;
3. every host writes its run's records of each part as a segment;
4. the first host joins each part's segments, server-side on S3 where the sizes allow, and
   writes the train manifests, the header and the plan, last.

So the plan and the parts are byte for byte those of :func:`split_dataset` on one machine, and
the folds land whole or not at all. The hosts talk through files in the attempt's own work
folder, JSON and ``.npy`` only (nothing is unpickled: the bucket may be writable by others);
each waits for the others' files. A host that fails fails the job, which SageMaker then stops,
as it does one that outlives its MaxRuntimeInSeconds.
"""

from __future__ import annotations

import io
import json
import logging
import posixpath
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from airflow_smx.core import storage
from airflow_smx.core.folds.assign import assign_folds
from airflow_smx.core.folds.plan import FoldPlan
from airflow_smx.core.folds.records import PartedInput, SplitError, open_input
from airflow_smx.core.folds.scan import (
    RangeScan,
    Scan,
    begin_scan,
    checksum,
    in_background,
    merge,
    processes_for,
    scan_ranges,
)
from airflow_smx.core.folds.split import already_split, fs_path, make_plan, part_targets, write_channels
from airflow_smx.core.folds.stage import staged
from airflow_smx.core.folds.write import write_parts
from airflow_smx.core.request import CVSpec, InputSpec

log = logging.getLogger(__name__)

RESOURCE_CONFIG = "/opt/ml/config/resourceconfig.json"  # where SageMaker tells a job's container its hosts
POLL_SECONDS = 2.0


@dataclass(frozen=True)
class Host:
    """This instance's place among the job's instances."""

    index: int
    count: int

    @classmethod
    def of_job(cls, config_path: str = RESOURCE_CONFIG) -> Host:
        """From SageMaker's resource config; one host where there is none (a job of one instance)."""
        try:
            with open(config_path, encoding="utf-8") as handle:
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
        target = posixpath.join(self.path, name)
        storage.write_bytes(self.fs, target + ".partial", json.dumps(message).encode())
        self.fs.mv(target + ".partial", target)

    def wait_for(self, name: str) -> dict[str, Any]:
        target = posixpath.join(self.path, name)
        while True:
            self.fs.invalidate_cache()  # a listing cached by s3fs would hide the file for good
            if self.fs.exists(target):
                return json.loads(self.fs.cat_file(target))
            time.sleep(POLL_SECONDS)

    def save_array(self, name: str, array: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        storage.write_bytes(self.fs, posixpath.join(self.path, name), buffer.getvalue())

    def load_array(self, name: str) -> np.ndarray:
        return np.load(io.BytesIO(self.fs.cat_file(posixpath.join(self.path, name))), allow_pickle=False)

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
    try:
        whole = open_input(spec.uri, spec.compression, storage_options)
        if not isinstance(whole, PartedInput):
            raise SplitError(f"input.uri: {spec.uri} is one file; only a prefix of files is split by several hosts")
        template, reader = begin_scan(whole, spec)
        cuts = whole.cuts(host.count)
    except SplitError as error:  # every host meets it alike, but the first host reports what the others say
        if host.leads:
            raise
        shared.publish(f"scan-{host.index:05d}.json", {"error": str(error)})
        return None
    runs = len(cuts) - 1
    if host.index >= runs:
        log.info("host %d of %d: fewer runs of files (%d) than hosts: nothing to do", host.index + 1, host.count, runs)
        return None
    hashed = in_background(checksum, whole) if host.leads else None
    with staged(whole.run(cuts[host.index], cuts[host.index + 1])) as run:
        if not host.leads:
            mine = _scan_run(shared, host, run, reader, template, workers)
            go = shared.wait_for("plan.json")
            if mine is not None and "plan" in go:
                _write_segments(shared, host, run, mine, go)
            return None
        try:
            mine = _scan_run(shared, host, run, reader, template, workers)
        except SplitError as error:  # the first run's first error is the input's: the others stop
            shared.publish("plan.json", {"error": str(error)})
            raise
        options = {"assemble_train": assemble_train, "final": final, "storage_options": storage_options}
        return _lead(shared, whole, run, mine, template, runs, hashed, spec, cv, folds_uri, **options)


def _scan_run(
    shared: Shared, host: Host, run: PartedInput, reader: Any, template: Scan, workers: int | None
) -> Scan | None:
    """Scan this host's run and publish its ranges; this host's own view of them (for its write),
    or None if the run holds the input's error (published in its stead)."""
    name = f"scan-{host.index:05d}"
    try:
        ranges, cuts = scan_ranges(run, reader, template.header, processes_for(run, workers))
    except SplitError as error:
        shared.publish(f"{name}.json", {"error": str(error)})
        if host.leads:
            raise
        return None
    for r, found in enumerate(ranges):
        for role, codes in found.codes.items():
            shared.save_array(f"{name}-{r}-{role}.npy", codes)
    shared.publish(f"{name}.json", {"ranges": [_range_summary(found) for found in ranges]})
    mine = Scan(format=template.format, compression=run.compression, header=template.header, files=len(run.parts))
    merge(mine, ranges)
    mine.cuts = cuts
    if cuts is None:  # one process: what it read, for the write's check that nothing changed
        mine.bytes = run.reader.size
    return mine


def _range_summary(found: RangeScan) -> dict[str, Any]:
    return {
        "n_records": found.n_records,
        "n_lines": found.n_lines,
        "record_bytes": found.record_bytes,
        "values": found.values,
    }


def _gather(shared: Shared, runs: int) -> list[RangeScan]:
    """Every run's ranges, in key order; the first error in key order is raised."""
    gathered = []
    for index in range(runs):
        name = f"scan-{index:05d}"
        message = shared.wait_for(f"{name}.json")
        if "error" in message:
            raise SplitError(message["error"])
        for r, summary in enumerate(message["ranges"]):
            codes = {role: shared.load_array(f"{name}-{r}-{role}.npy") for role in summary["values"]}
            gathered.append(RangeScan(codes=codes, lengths=None, **summary))
    return gathered


def _lead(
    shared: Shared,
    whole: PartedInput,
    run: PartedInput,
    mine: Scan,
    found: Scan,
    runs: int,
    hashed: Any,
    spec: InputSpec,
    cv: CVSpec,
    folds_uri: str,
    *,
    assemble_train: bool,
    final: bool,
    storage_options: dict[str, Any] | None,
) -> FoldPlan:
    """The first host's part: merge, assign, plan; then its own segments; then join them all."""
    out_fs, folds_path = storage.filesystem(folds_uri, storage_options)
    try:
        merge(found, _gather(shared, runs))
        if found.n_records == 0:
            raise SplitError(f"input.uri: {whole.uri} holds no records (empty, or only blank lines)")
        labels, groups = found.codes.get("label"), found.codes.get("group")
        assignment = assign_folds(cv, found.n_records, labels, groups, found.values.get("label"))
        found.bytes, found.sha256 = hashed.result()
        plan = make_plan(spec, cv, folds_uri, found, assignment, assemble_train, final)
    except SplitError as error:
        shared.publish("plan.json", {"error": str(error)})
        raise
    if already_split(out_fs, folds_path, plan):
        log.info("%s already holds this split; reusing it", folds_uri)
        shared.publish("plan.json", {"reuse": True})
        storage.remove(shared.fs, [shared.path])  # the others read nothing after it
        return plan
    storage.remove(out_fs, [folds_path])  # an earlier, interrupted attempt at this same run
    try:
        shared.save_array("folds.npy", assignment.folds)
        starts = np.cumsum([0, *_records_per_run(shared, runs)]).tolist()
        shared.publish("plan.json", {"plan": plan.to_json(), "starts": starts})
        _write_segments(shared, Host(0, runs), run, mine, {"plan": plan.to_json(), "starts": starts})
        for index in range(1, runs):
            written = shared.wait_for(f"written-{index:05d}.json")
            if "error" in written:
                raise SplitError(written["error"])
        _join(shared, out_fs, plan, runs)
        write_channels(out_fs, folds_path, spec, found, plan)
        if whole.fingerprint() != whole.opened_as:
            raise SplitError(f"input.uri: {spec.uri} changed while it was being split; run the split again")
    except BaseException:
        storage.remove(out_fs, [folds_path])
        raise
    storage.remove(shared.fs, [shared.path])
    return plan


def _records_per_run(shared: Shared, runs: int) -> list[int]:
    return [sum(r["n_records"] for r in shared.wait_for(f"scan-{index:05d}.json")["ranges"]) for index in range(runs)]


def _segment(shared: Shared, repeat: int, code: int, index: int) -> str:
    return shared.join("segments", str(repeat), str(code), f"{index:05d}")


def _write_segments(shared: Shared, host: Host, run: PartedInput, mine: Scan, go: dict[str, Any]) -> None:
    """This run's records of every part, each part's as one segment; then say so."""
    plan = FoldPlan.from_json(go["plan"])
    start, end = go["starts"][host.index], go["starts"][host.index + 1]
    folds = shared.load_array("folds.npy")[:, start:end]
    try:
        if folds.shape[1] != mine.n_records:
            raise SplitError(f"input.uri: {plan.input['uri']} changed while it was being split; run the split again")
        for repeat in range(plan.n_repeats):
            targets = {code: _segment(shared, repeat, code, host.index) for code in part_targets(plan, repeat)}
            write_parts(shared.fs, run, mine, np.ascontiguousarray(folds[repeat]), targets)
    except SplitError as error:
        if host.leads:
            raise
        shared.publish(f"written-{host.index:05d}.json", {"error": str(error)})
        return
    if not host.leads:
        shared.publish(f"written-{host.index:05d}.json", {})


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
