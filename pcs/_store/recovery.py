"""The recovery engine behind :mod:`pcs.recovery` (``pcs.recover``, ``pcs recover``).

A dead process's journal is replayed through a recovering sink
(:meth:`Backend.make_sink <pcs._store.facade.Backend.make_sink>` with
``recovering=True``): delivery is idempotent, so a record that had already
arrived is not duplicated, and every run the journal started but never ended
is marked KILLED with the tag ``pcs.reaped``. :mod:`pcs._store.lifecycle` runs
it once in the background when a process starts its first journaled writer.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcs import _journal, _records
from pcs._records import EndRun, SetTags
from pcs._store.facade import get_backend, now_ms
from pcs._store.uri import absolute_uri, current_tracking_uri
from pcs._writer import BATCH, Sink
from pcs.conventions import REAPED_TAG
from pcs.exceptions import StoreError, UnknownRecordError

__all__ = ["RecoveryReport", "recover"]

_log = logging.getLogger("pcs")
_lock = threading.Lock()


@dataclass
class RecoveryReport:
    """What :func:`recover` did."""

    journals: list[str] = field(default_factory=list)
    records: int = 0
    killed_runs: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    #: what was damaged in the recovered journals (one line per damaged journal)
    damaged: list[str] = field(default_factory=list)
    #: journals left alone because they were recorded for another store: (path, store)
    other_stores: list[tuple[str, str]] = field(default_factory=list)
    #: journals kept because they hold records this pcs cannot read: (path, why)
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        text = (
            f"recovered {len(self.journals)} journal(s): {self.records} record(s) delivered, "
            f"{len(self.killed_runs)} run(s) marked KILLED"
        )
        if self.failed:
            text += f"; {len(self.failed)} journal(s) could not be delivered (kept for later)"
        if self.damaged:
            text += f"; damage in {len(self.damaged)} journal(s): " + " | ".join(self.damaged)
        if self.other_stores:
            text += (f"; {len(self.other_stores)} journal(s) of other stores left alone "
                     "(deliver them with `pcs recover --store URI`)")
        if self.unreadable:
            text += (f"; {len(self.unreadable)} journal(s) written by a newer pcs kept "
                     "(upgrade pcs, or recover them with the pcs that wrote them)")
        return text


def recover(
    journal_dir: str | os.PathLike[str] | None = None, *, store: str | None = None
) -> RecoveryReport:
    """Deliver dead processes' journals and mark their open runs KILLED.

    A journal is data, never instructions: its records go only to ``store``
    (default: the store this process is configured for, ``MLFLOW_TRACKING_URI``
    or MLflow's default), and only when the journal was recorded for that
    same store — never to a URI read from the file. Journals of other stores
    are left alone and reported (``pcs recover --store URI`` delivers them).
    """
    directory = Path(journal_dir) if journal_dir is not None else _journal.default_directory()
    target = absolute_uri(store) if store else current_tracking_uri()
    report = RecoveryReport()
    with _lock:
        for found in _journal.dead_journals(directory):
            recorded = found.header.get("tracking_uri") if found.header else None
            other = not isinstance(recorded, str) or absolute_uri(recorded) != target
            if other and not (store and recorded is None):  # a damaged header: only when told
                found.release()
                report.other_stores.append((str(found.path), str(recorded)))
                _log.warning(
                    "pcs: journal %s holds records for the store %r, not for %r; it is "
                    "left alone. Deliver it with `pcs recover --store <that store>` if "
                    "you trust it.", found.path, recorded, target,
                )
                continue
            problem = _unreadable(found)
            if problem:
                found.release()
                report.unreadable.append((str(found.path), problem))
                _log.warning(
                    "pcs: journal %s is kept, nothing of it delivered: %s", found.path, problem,
                )
                continue
            try:
                delivered, killed = _recover_one(found, target)
            except Exception as exc:
                found.release()
                report.failed.append(str(found.path))
                _log.warning(
                    "pcs: could not recover journal %s (%s: %s); it is kept and retried later.",
                    found.path, type(exc).__name__, exc,
                )
                continue
            damage = found.damage_report()
            if damage:
                report.damaged.append(f"{found.path}: {damage}")
            found.finish()
            report.journals.append(str(found.path))
            report.records += delivered
            report.killed_runs.extend(killed)
    if report.journals:
        _log.warning("pcs: %s", report)
    return report


def _unreadable(found: _journal.JournalFile) -> str:
    """Why this pcs must not deliver any of the journal ("" when it may): a newer wire
    form named in its header, or a record of a kind this pcs cannot read — checked
    before anything is delivered, so such a journal is never half delivered."""
    version = found.wire_version
    if version is not None and version > _records.WIRE_VERSION:
        return (f"its records are in wire form {version}, and this pcs reads up to "
                f"{_records.WIRE_VERSION}; upgrade pcs, or recover it with the pcs that wrote it")
    try:
        for _is_new, record in found.records(check_only=True):
            _records.decode(record)
    except UnknownRecordError as exc:
        return str(exc)
    return ""


def _recover_one(found: _journal.JournalFile, target: str) -> tuple[int, list[str]]:
    header = found.header or {}
    backend = get_backend(target)
    sink = backend.make_sink(recovering=True)
    # A later segment's header names the runs open when it began (their starts were in the
    # segment before, delivered and removed): they are reaped too unless they end here.
    carried = header.get("open")
    started: set[str] = {str(r) for r in carried} if isinstance(carried, list) else set()
    ended: set[str] = set()
    pending: list[list[Any]] = []
    delivered = 0
    last_seen = _modified_ms(found)
    for is_new, record in found.records():
        kind = record[0]
        last_seen = max(last_seen, _record_time(record))
        if kind in ("R", "T"):
            started.add(str(record[1]))
        elif kind == "E":
            ended.add(str(record[1]))
        if is_new or kind == "K":  # components are needed by later calls
            pending.append(record)
        if len(pending) >= BATCH:
            _deliver(sink, pending)
            delivered += len(pending)
            pending = []
    # A segment whose successor exists names no run to reap: the successor does.
    open_runs = [] if found.superseded else sorted(started - ended)
    reason = (
        f"process {header.get('pid')} on {header.get('host')} ended without ending this run; "
        "reaped by pcs recovery"
    )
    # The process was last seen alive at its journal's last write or newest record: the
    # runs it left open end then, not now (their duration is the time they really ran).
    end = min(last_seen, now_ms()) if last_seen else now_ms()
    for run_id in open_runs:
        pending.append(SetTags.wire(run_id, {REAPED_TAG: reason}))
        pending.append(EndRun.wire(run_id, "KILLED", end))
    if pending:
        _deliver(sink, pending)
        delivered += len(pending)
    # Client stores: report the MLflow ids the local ids were created as.
    return delivered, [backend.run_ids.get(run_id, run_id) for run_id in open_runs]


def _record_time(record: list[Any]) -> int:
    """The newest time (ms) a journal record names: a start, an end or a metric's."""
    kind = record[0]
    index = {"R": 4, "T": 3, "E": 3}.get(kind)
    try:
        if index is not None and len(record) > index:
            return int(record[index])
        if kind == "M" and len(record) > 2:
            return max((int(row[2]) for row in record[2]), default=0)
    except (TypeError, ValueError, IndexError):
        pass  # a malformed time never decides the end of a run
    return 0


def _modified_ms(found: _journal.JournalFile) -> int:
    """When the journal was last written (its file's modification time, in ms)."""
    try:
        return int(found.path.stat().st_mtime * 1000)
    except OSError:
        return 0


def _deliver(sink: Sink, records: list[list[Any]]) -> None:
    rejected = sink.deliver(records)
    if rejected:
        reasons = "; ".join(sorted(rejected))
        raise StoreError(f"{sum(map(len, rejected.values()))} record(s) cannot be delivered: "
                         f"{reasons}", None)
