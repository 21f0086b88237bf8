"""The delivery agent: one process per store and journal directory, delivering for all.

Started by :func:`pcs._store.agent_link.ensure_agent` (``python -m
pcs._store.agent --store URI --journal-dir DIR``) when a program records with
``PCS_DELIVERY=agent`` and none runs. It holds the lock file named by
:func:`~pcs._store.agent_link.agent_files` for its lifetime, so at most one
agent delivers to a store from a directory, and every process writing there
shares it: one writer to the SQLite file, one place for schema migrations.

The loop:

* every live journal of its store in the directory is *tailed*: the agent maps
  the file read-only and reads the lines its owner appended since the last
  look (a line is taken only once its checksum verifies: an owner's copy may
  be seen half done, and is read again a moment later);
* the records are delivered to MLflow in batches through the same sink as the
  in-process writer (:meth:`Backend.make_sink
  <pcs._store.facade.Backend.make_sink>`), and the number of the last record
  delivered is appended to the journal's ``.done`` file — the acknowledgement
  the owner's :meth:`~pcs._store.agent_link.AgentWriter.flush` waits for;
* a journal whose owner is gone (its lock is free) is finished by
  :func:`pcs._store.recovery.recover`: the rest delivered, open runs reaped,
  the files removed.

Exactly once: delivery is idempotent, and ``.done`` is written only after the
store committed. An agent killed between the two delivers those records again
when it (or ``pcs recover``) next reads the journal, harmlessly. Components
(:class:`~pcs._records.DefineComponent`) before the acknowledged number are
delivered again on a restart, since the calls after it need them.

The agent exits after ``PCS_AGENT_IDLE_SECONDS`` without a record to deliver;
a program with records to deliver starts it again.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import mmap
import os
import sys
import time
from pathlib import Path

from pcs import settings
from pcs._journal import SUFFIX, Journal, check_file
from pcs._journal.format import OPEN_FLAGS, DoneLog, acknowledged, loads, read_header, verify
from pcs._records import StartCall, Wire
from pcs._store.agent_link import agent_files
from pcs._store.facade import get_backend
from pcs._store.recovery import recover
from pcs._store.uri import absolute_uri
from pcs._writer import BATCH, Sink, transient
from pcs.exceptions import UnknownRecordError

__all__ = ["Agent", "main"]

_log = logging.getLogger("pcs")

#: seconds a line that does not verify is read again before it counts as damaged
_TORN_GRACE = 2.0
#: seconds between looks for new journals in the directory
_SCAN_EVERY = 0.2
#: journal bytes read into one batch at most (besides BATCH records)
_BATCH_BYTES = 1 << 20
#: bytes read past the start of a journal's mapping before it is mapped from further on
_WINDOW_SLACK = 4 << 20
#: where a call's component key sits in its record
_KEY = StartCall._fields.index("key")


class _Tail:
    """One live journal being followed: its mapping, how far it was read and acknowledged."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.mapped: mmap.mmap | None = None
        self.base = 0  # the file offset where the mapping starts
        self.size = 0
        self.cursor = 0  # the offset of the next line to read
        self.done = acknowledged(path)  # records up to this number are delivered
        self.read_to = self.done  # records up to this number are read (maybe not delivered)
        self.torn_at = -1  # the offset of a line that did not verify yet
        self.torn_since = 0.0
        self._done_log = DoneLog(path)

    def _remap(self) -> mmap.mmap | None:
        """Map the file from the page of the next line to read on (the part already read
        is not mapped again: the agent's memory stays bounded however long journals grow)."""
        size = os.fstat(self.fd).st_size
        cursor = self.cursor
        if size != self.size or self.mapped is None or cursor - self.base > _WINDOW_SLACK:
            if self.mapped is not None:
                self.mapped.close()
                self.mapped = None
            base = cursor - cursor % mmap.ALLOCATIONGRANULARITY
            self.size, self.base = size, base
            if size > base:
                self.mapped = mmap.mmap(self.fd, size - base, mmap.MAP_SHARED, mmap.PROT_READ,
                                        offset=base)
        return self.mapped

    def read(self, limit: int, out: list[Wire]) -> int:
        """Append the records written since the last read (up to about ``limit``) to
        ``out``; returns the number of the last record read (``read_to``).

        Offsets into the mapping are relative to :attr:`base` (the file offset where it
        starts); :attr:`cursor` and :attr:`size` are file offsets."""
        buffer = self.mapped
        cursor = self.cursor
        if buffer is None or cursor >= self.size or cursor - self.base > _WINDOW_SLACK or \
                buffer[cursor - self.base] == 0:
            buffer = self._remap()
        if buffer is None:
            return self.read_to
        base = self.base
        pos, end, taken = self.cursor - base, self.size - base, 0
        stop = self.cursor + _BATCH_BYTES  # a batch of big records is cut short: acked sooner
        while pos < end and taken < limit and base + pos < stop and buffer[pos] != 0:
            newline = buffer.find(b"\n", pos, end)
            if newline < 0:
                # A line running past the end of the mapping: the file grew since it was
                # mapped (or the line is still being copied). Map it again and look again.
                known = self.size
                self.cursor = base + pos
                grown = self._remap()
                if grown is None or self.size <= known:
                    break
                buffer, base = grown, self.base
                pos, end = self.cursor - base, self.size - base
                continue
            found = verify(buffer[pos:newline])
            if found is None:
                if not self._torn(base + pos):
                    break  # half copied, maybe: read it again at the next look
                pos = newline + 1
                continue
            seq, data = found
            pos = newline + 1
            if seq == 0:
                continue  # the header
            try:
                line = loads(data)
            except ValueError:
                continue  # verified but not JSON: recovery quarantines it later
            records = line if line and isinstance(line[0], list) else [line]
            for number, record in enumerate(records, seq):
                # Records up to ``done`` are read only on the first pass of a restarted
                # agent: of those, components are delivered again (later calls need them).
                if number > self.done or record[0] == "K":
                    out.append(record)
                    taken += 1
                self.read_to = max(self.read_to, number)
        self.cursor = base + pos
        return self.read_to

    def _torn(self, pos: int) -> bool:
        """A line that does not verify: True once it has not for :data:`_TORN_GRACE` s."""
        now = time.monotonic()
        if self.torn_at != pos:
            self.torn_at, self.torn_since = pos, now
            return False
        if now - self.torn_since < _TORN_GRACE:
            return False
        _log.warning("pcs: a damaged line at byte %d of the journal %s is skipped; "
                     "recovery keeps it in quarantine when the journal ends.", pos, self.path)
        return True

    def acknowledge(self, seq: int) -> None:
        """Append ``seq`` to ``<journal>.done``: everything up to it reached the store."""
        if seq <= self.done:
            return
        self._done_log.append(seq)
        self.done = seq

    def owner_gone(self) -> bool:
        """Whether the journal's owner has ended (its exclusive lock can be taken)."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        return True

    def close(self) -> None:
        if self.mapped is not None:
            self.mapped.close()
            self.mapped = None
        os.close(self.fd)
        self._done_log.close()


class Agent:
    """Tails the journals of one store in one directory and delivers their records."""

    def __init__(self, directory: Path, store: str) -> None:
        self.directory = directory
        self.store = store
        self._target = absolute_uri(store)
        self._backend = get_backend(store)
        self._sink: Sink | None = None
        self.tails: dict[Path, _Tail] = {}
        self._ignored: set[Path] = set()
        self._components: dict[str, Wire] = {}
        self._aside: Journal | None = None
        self._failing = False
        self._recover_due = True
        self.idle_limit = settings.AGENT_IDLE_SECONDS.get()

    def run(self) -> None:
        """Deliver until nothing was written for :attr:`idle_limit` seconds."""
        last_work = time.monotonic()
        scanned = 0.0
        try:
            while True:
                now = time.monotonic()
                if now - scanned >= _SCAN_EVERY:
                    self._scan()
                    scanned = now
                if self._step():
                    last_work = time.monotonic()
                    continue
                if self._recover_due:
                    self._recover_due = False
                    self._finish_dead()
                quiet = time.monotonic() - last_work
                if quiet >= self.idle_limit:
                    return
                time.sleep(0.002 if quiet < 0.2 else 0.01 if quiet < 2.0 else 0.05)
        finally:
            for tail in self.tails.values():
                tail.close()
            if self._aside is not None:
                self._aside.close(delete=False)

    # -- journals ---------------------------------------------------------------------
    def _scan(self) -> None:
        """Follow new journals of this store; let go of those whose owner is gone."""
        for path in list(self.tails):
            tail = self.tails[path]
            if tail.read_to == tail.done and tail.owner_gone():
                tail.close()
                del self.tails[path]
                self._recover_due = True  # recovery delivers its rest and removes it
        try:
            paths = sorted(self.directory.glob(f"*{SUFFIX}"))
        except OSError:
            return
        for path in paths:
            if path in self.tails or path in self._ignored:
                continue
            opened = self._open(path)
            if opened is not None:
                self.tails[path] = opened

    def _open(self, path: Path) -> _Tail | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | OPEN_FLAGS)
        except OSError:
            return None
        header = read_header(fd)
        recorded = header.get("tracking_uri") if header else None
        ours = (check_file(fd, path) is None and isinstance(recorded, str)
                and absolute_uri(recorded) == self._target)
        if not ours or (self._aside is not None and path == self._aside.path):
            os.close(fd)
            self._ignored.add(path)
            return None
        tail = _Tail(path, fd)
        if tail.owner_gone():
            tail.close()
            self._recover_due = True
            return None
        return tail

    def _finish_dead(self) -> None:
        """Journals whose owners are gone: delivered and removed by recovery."""
        try:
            recover(self.directory, store=self.store)
        except Exception as exc:
            _log.warning("pcs: recovering journals failed: %s", exc)

    # -- delivery ---------------------------------------------------------------------
    def _step(self) -> bool:
        """Read what the journals gained and deliver it; False when there was nothing."""
        batch: list[Wire] = []
        marks: list[tuple[_Tail, int]] = []
        for tail in list(self.tails.values()):
            if len(batch) >= BATCH:
                break
            try:
                before = len(batch)
                seq = tail.read(BATCH - len(batch), batch)
            except (OSError, ValueError):  # removed under us: recovery finished it
                tail.close()
                del self.tails[tail.path]
                continue
            if seq > tail.done or len(batch) > before:
                marks.append((tail, seq))
        if not batch and not marks:
            return False
        if batch:
            self._deliver(batch)
        for tail, seq in marks:
            try:
                tail.acknowledge(seq)
            except OSError as exc:
                _log.warning("pcs: cannot acknowledge delivery in %s: %s", tail.path, exc)
        return True

    def _deliver(self, batch: list[Wire]) -> None:
        """Deliver ``batch``, retrying with backoff while the store is unavailable."""
        backoff = 0.05
        failures = 0
        while True:
            try:
                self._hand(batch)
            except Exception as exc:
                if not transient(exc):
                    self._one_by_one(batch, exc)
                    return
                failures += 1
                if not self._failing:
                    self._failing = True
                    _log.warning("pcs: cannot write to the tracking store %s (%s: %s); "
                                 "retrying.", self.store, type(exc).__name__, exc)
                if failures % 5 == 0:
                    self._sink = None  # a new connection
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if self._failing:
                self._failing = False
                _log.warning("pcs: the tracking store %s is reachable again.", self.store)
            return

    def _hand(self, records: list[Wire]) -> None:
        if self._sink is None:
            self._sink = self._backend.make_sink()
        for record in records:
            if record[0] == "K":
                self._components[str(record[1])] = record
        rejected = self._sink.deliver(records)
        if rejected:
            self._set_aside(rejected)

    def _one_by_one(self, batch: list[Wire], error: Exception) -> None:
        _log.error("pcs: a batch of %d record(s) failed (%s: %s); delivering one by one.",
                   len(batch), type(error).__name__, error)
        for record in batch:
            try:
                self._hand([record])
            except Exception as exc:
                kind = "unknown record" if isinstance(exc, UnknownRecordError) else "record"
                _log.error("pcs: could not deliver %s %r of run %s (%s: %s); skipped here, "
                           "its journal keeps it.", kind, record[0],
                           record[1] if len(record) > 1 else "?", type(exc).__name__, exc)

    def _set_aside(self, rejected: dict[str, list[Wire]]) -> None:
        """Records whose experiment is missing: kept in a journal of the agent's own,
        which ``pcs recover`` delivers once the experiment exists again."""
        if self._aside is None:
            self._aside = Journal(self.directory, self.store)
        for reason, records in rejected.items():
            keys = sorted({str(r[_KEY]) for r in records if r[0] == "T"})
            components = [self._components[k] for k in keys if k in self._components]
            self._aside.append([*components, *records], True)
            self._ignored.add(self._aside.path)
            _log.error("pcs: cannot deliver runs: %s. Their records are kept in the journal "
                       "%s; restore the experiment and run `pcs recover`.", reason,
                       self._aside.path)


def main(argv: list[str] | None = None) -> int:
    """``python -m pcs._store.agent --store URI --journal-dir DIR``."""
    parser = argparse.ArgumentParser(prog="pcs-agent", description=__doc__.split("\n")[0])
    parser.add_argument("--store", required=True, help="the tracking URI to deliver to")
    parser.add_argument("--journal-dir", required=True, help="the journals' directory")
    parser.add_argument("--lock-fd", type=int, default=None,
                        help="the agent's lock, already taken by the process starting it")
    args = parser.parse_args(argv)
    directory = Path(args.journal_dir)
    if args.lock_fd is not None:
        fd = args.lock_fd  # inherited with its flock: this process holds it now
        os.set_inheritable(fd, False)
    else:
        lock_path, _ = agent_files(directory, args.store)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | OPEN_FLAGS, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return 0  # another agent delivers here
    os.ftruncate(fd, 0)
    os.write(fd, b"%d\n" % os.getpid())
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(asctime)s pcs-agent[%(process)d] %(message)s")
    try:
        Agent(directory, args.store).run()
    finally:
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
