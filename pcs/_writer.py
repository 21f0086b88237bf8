"""Write-behind: callers journal and enqueue records; one thread per store delivers them.

The calling thread does no MLflow I/O: it appends the record to the journal
(:mod:`pcs._journal`) and puts it on a bounded queue. A background thread takes
up to :data:`BATCH` records at a time and hands them to a *sink* (the part of
:mod:`pcs._store` that talks to MLflow), which writes many runs per
transaction. When the queue is full the caller waits (backpressure): memory
stays bounded and nothing is dropped.

If the store is unavailable the records stay queued and journaled, a warning
is logged once, and delivery is retried with backoff until it succeeds —
also by a later process, from the journal, if this one dies first.

The records are defined once, in :mod:`pcs._records`: one typed class per kind
(``StartCall``, ``EndRun``, ...), its wire form — the JSON array ``[kind,
field, ...]`` that callers build with the kind's typed constructor and the
journal holds — documented and versioned there (:data:`~pcs._records.WIRE_VERSION`).
The queue holds wire forms (also those reloaded from the journal); the sink's
materializer (:mod:`pcs._materialize`) decodes each into its typed record and
dispatches it by kind.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from pcs import settings
from pcs._journal import Journal
from pcs._records import DefineComponent, StartCall, Wire, merged_into_start
from pcs.exceptions import UnknownRecordError

__all__ = ["BATCH", "LINGER", "MAX_PENDING", "STALL", "Sink", "Writer", "transient"]

_log = logging.getLogger("pcs")
#: where a call's component key sits in its record (typed, or a JSON array from the journal)
_KEY = StartCall._fields.index("key")

#: Records delivered per batch (one transaction on the SQLite fast path).
BATCH = 2000
#: Records that may wait in memory before callers are slowed down.
MAX_PENDING = 20_000
#: Seconds the writer waits for a batch to fill before delivering a small one.
LINGER = 0.02
#: Seconds without progress after which a delivery counts as failing (``PCS_STALL_SECONDS``).
STALL = settings.STALL_SECONDS.default


#: when the exit budget (PCS_EXIT_FLUSH_TIMEOUT) runs out, once exit has begun
_exit_deadline: float | None = None


class Sink(Protocol):
    """Delivers records to a store; must be idempotent (a record may be delivered twice).

    ``deliver`` returns the records it set aside because they can never be
    delivered as they are (their experiment does not exist), by reason.
    """

    def deliver(self, records: list[Wire]) -> dict[str, list[Wire]] | None: ...


def transient(exc: Exception) -> bool:
    """Errors that retrying can fix: the store is down, locked, full or unreachable."""
    if isinstance(exc, OSError | ConnectionError | TimeoutError):
        return True
    module = type(exc).__module__
    if module.startswith(("sqlite3", "sqlalchemy", "requests", "urllib3", "mlflow")):
        return True
    from pcs.exceptions import StoreError

    return isinstance(exc, StoreError)


class Writer:
    """The write-behind queue and delivery thread of one tracking store."""

    def __init__(
        self,
        sink_factory: Callable[[], Sink],
        journal: Journal | None,
        *,
        max_pending: int = MAX_PENDING,
        batch: int = BATCH,
        store: str = "",
    ) -> None:
        #: the store's URI, for messages
        self.store = store
        self._sink_factory = sink_factory
        self._sink: Sink | None = None
        #: sinks inherited through fork(): kept referenced so they are never closed here
        self.inherited: list[Sink | None] = []
        self.journal = journal
        self._max_pending = max_pending
        self._batch = batch
        self._queue: deque[Wire] = deque()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._enqueued = 0  # records accepted so far
        self._delivered = 0  # records delivered so far
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._failing_since: float | None = None
        self._spilled = 0  # the newest records, kept only in the journal while the store is down
        self._flushing = 0  # threads waiting in flush(): deliver at once, do not linger
        self._idle = False  # the writer sleeps on an empty queue
        self._warned = False
        self._closed = False
        self._known_components: set[str] = set()
        #: each component's record, for records set aside (see _set_aside)
        self._component_records: dict[str, Wire] = {}
        #: the journal of records set aside (their experiment is missing); kept at exit
        self._aside: Journal | None = None
        self._aside_reported: set[str] = set()
        #: held by the delivery thread while it talks to the store; taken around fork()
        self.delivery_lock = threading.Lock()
        self._fork_held: list[threading.Lock] = []
        self._delivering_since: float | None = None  # a delivery is under way since then
        self._stall = settings.STALL_SECONDS.get()
        #: calls started but not yet published: (records, (component key, spec fields))
        self._starts: deque[tuple[list[Wire], tuple[str, Callable[[], dict[str, Any]]]]] = \
            deque()
        #: run id -> the records of its call started but not yet published
        self._open_starts: dict[str, list[Wire]] = {}
        atexit.register(self._at_exit)

    # -- caller side ------------------------------------------------------------
    def start(self, records: list[Wire],
              component: tuple[str, Callable[[], dict[str, Any]]]) -> None:
        """Accept the start of a tracked call, without taking the lock (the hot path).

        The records are *published* — journaled and enqueued, after the
        component's record the first time — by the next :meth:`submit`
        from any thread (at the latest the call's own end), by :meth:`flush`,
        or by the writer thread before its next batch. Every record submitted
        later is ordered after them. They are not acknowledged to the
        user before the call ends, so the journal may receive them late.
        """
        self._open_starts[records[0][1]] = records  # dict and deque: atomic operations
        self._starts.append((records, component))
        if self._thread is None or self._idle:
            with self._lock:  # let the writer publish it soon: a long call shows RUNNING
                if self._thread is None:
                    self._start()
                else:
                    self._cond.notify_all()

    def submit(
        self,
        records: tuple[Wire, ...] | list[Wire],
        sync: bool = True,
    ) -> None:
        """Journal and enqueue ``records`` in order; waits while the queue is full.

        ``sync=False`` may leave the records in the journal's buffer until the
        next synced submit (or the next delivery): use it only for records that
        are not acknowledged to the user yet.
        """
        with self._lock:  # the Condition's own lock: cheaper to take than the Condition
            if self._starts and self._amended(records):
                return  # merged into a start not published yet: takes no room
            spill = self._make_room()  # may release the lock while it waits
            # From here to the end the lock is held: what is taken is enqueued in order.
            if self._starts:
                records = [*self._take_starts(), *records]
            self._enqueue(records, sync, spill)

    def _make_room(self) -> bool:
        """Wait while the queue is full (the lock is held); True: spill to the journal."""
        if self._spilled or len(self._queue) >= self._max_pending:
            return self._wait_for_room()
        return False

    def _amended(self, records: tuple[Wire, ...] | list[Wire]) -> bool:
        """Tags set on a call whose start is not published yet (the lock is held): merged
        into the start's record instead of a record of their own (the environment tags of
        a top-level call, a plugin's tags): one journal line and one row write less."""
        if len(records) != 1 or records[0][0] != "G":  # SetTags
            return False
        group = self._open_starts.get(records[0][1])
        return group is not None and merged_into_start(group[0], records[0])

    def _take_starts(self) -> list[Wire]:
        """The records of the calls started since the last publication (the lock is held)."""
        out: list[Wire] = []
        starts = self._starts
        known = self._known_components
        open_starts = self._open_starts
        while starts:
            records, (key, fields) = starts.popleft()
            open_starts.pop(records[0][1], None)
            if key not in known:
                # A component's record precedes its first call, in every thread.
                known.add(key)
                component = DefineComponent.wire(key, fields())
                self._component_records[key] = component
                out.append(component)
            out.extend(records)
        return out

    def _publish_starts(self) -> None:
        """Journal and enqueue the calls started so far (the lock is held; never waits)."""
        self._enqueue(self._take_starts(), False, bool(self._spilled))

    def _enqueue(self, records: list[Wire] | tuple[Wire, ...], sync: bool,
                 spill: bool) -> None:
        """Journal and enqueue, or with ``spill`` journal only (the lock is held)."""
        queue = self._queue
        journal = self.journal
        if journal is not None:
            try:
                self._journal_append(journal, records, sync or spill)
            except OSError as exc:
                self._disable_journal(exc)
                spill = False
        if self._delivering_since is not None and not self._warned:
            self._check_stall()
        was_empty = not queue
        if spill:
            self._spilled += len(records)
        else:
            queue.extend(records)
        self._enqueued += len(records)
        if self._thread is None:
            self._start()
        elif was_empty and self._idle:
            self._cond.notify_all()  # wake the writer only when it sleeps on an empty queue

    def _journal_append(self, journal: Journal, records: list[Wire] | tuple[Wire, ...],
                        sync: bool) -> None:
        """Append to the journal, going on in a new segment first if this one is full and
        delivered (the lock is held; OSError: the journal cannot be written)."""
        if journal.full and self._all_delivered():
            self._rotate(journal)
        journal.append(records, sync)

    def _all_delivered(self) -> bool:
        """Every record journaled so far is in the store (the lock is held)."""
        return self._delivered == self._enqueued and not self._spilled

    def _rotate(self, journal: Journal) -> None:
        """Go on in the journal's next segment; the delivered one is removed (lock held)."""
        journal.rotate()
        self._known_components.clear()  # a segment is recovered alone: its components too

    def _wait_for_room(self) -> bool:
        """Backpressure (the lock is held): wait for room; True to spill to the journal."""
        while self._spilled or len(self._queue) >= self._max_pending:
            self._check_stall()
            if self._spilled or (self._failing_since is not None and self.journal):
                # The store is down: memory stays bounded, the journal keeps the rest.
                return True
            if not self._thread_alive():
                return False
            self._cond.wait(0.5)
        return False

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record submitted so far is delivered; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        cond = self._cond
        with cond:
            if self._starts:
                self._publish_starts()
            target = self._enqueued
            self._flushing += 1
            try:
                cond.notify_all()
                while self._delivered < target:
                    if not self._thread_alive():
                        if self._closed:
                            return False  # what is left stays in the journal
                        self._start()
                    self._check_stall()
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    cond.wait(0.5 if remaining is None else min(remaining, 0.5))
            finally:
                self._flushing -= 1
        return True

    @property
    def failing(self) -> bool:
        """True while deliveries fail (the store is down, or stalled)."""
        return self._failing_since is not None

    @property
    def pending(self) -> int:
        """Records accepted but not yet delivered (a call's start counts as one)."""
        return self._enqueued - self._delivered + len(self._starts)

    def _thread_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pcs-writer", daemon=True)
        self._thread.start()

    # -- delivery thread --------------------------------------------------------
    def _run(self) -> None:
        cond = self._cond
        backoff = 0.05
        failures = 0
        while True:
            with cond:
                if self._closed:
                    return  # closed with records left: they stay in the journal
                while not self._queue:
                    if self._starts:
                        self._publish_starts()
                        continue
                    if self._spilled and self.journal is not None:
                        self._reload_spilled(self.journal)
                        continue
                    self._idle = True
                    cond.wait(1.0)
                    self._idle = False
                if len(self._queue) < self._batch and not self._flushing:
                    # Linger a moment: larger batches, fewer transactions, less GIL churn.
                    cond.wait(LINGER)
                if self._starts:
                    self._publish_starts()
                batch = [self._queue[i] for i in range(min(self._batch, len(self._queue)))]
                journal = self.journal
                if journal is not None:
                    try:
                        journal.sync()  # write-ahead: nothing reaches MLflow unjournaled
                    except OSError as exc:
                        self._disable_journal(exc)
            self._delivering_since = time.monotonic()
            try:
                self._deliver(batch)
            except Exception as exc:  # the store is down, locked, full, or pcs has a bug
                self._delivering_since = None
                if not transient(exc) and self._sink is not None:
                    self._deliver_one_by_one(batch, exc)
                else:
                    self._report_failure(exc)
                    failures += 1
                    reopen = getattr(self._sink, "reopen", None)
                    if failures % 5 == 0 and reopen is not None:
                        # A new connection: a store that was read-only or missing when
                        # it was opened stays so through the old one.
                        try:
                            reopen()
                        except Exception as again:
                            _log.debug("pcs: reopening the store failed: %s", again)
                    time.sleep(backoff * (1 + random.random()))  # noqa: S311 - jitter
                    backoff = min(backoff * 2, 5.0)
                    continue
            failures = 0
            self._delivering_since = None
            backoff = 0.05
            if self._failing_since is not None:
                _log.warning("pcs: the tracking store is reachable again; delivery resumed.")
                self._failing_since = None
                self._warned = False
            with cond:
                for _ in range(len(batch)):
                    self._queue.popleft()
                self._delivered += len(batch)
                # Under the lock: close() never closes the journal under this write.
                if self.journal is not None and not self._closed:
                    try:
                        self.journal.mark_done(self._delivered)
                    except OSError as exc:
                        self._disable_journal(exc)
                cond.notify_all()

    def _deliver_one_by_one(self, batch: list[Wire], error: Exception) -> None:
        """A batch failed for a reason retrying cannot fix: isolate the record(s) at fault."""
        _log.error("pcs: a batch of %d record(s) failed (%s: %s); delivering one by one.",
                   len(batch), type(error).__name__, error)
        for record in batch:
            for attempt in range(3):
                try:
                    self._deliver([record])
                    break
                except Exception as exc:
                    if transient(exc) and attempt < 2:
                        time.sleep(0.2)
                        continue
                    if self.journal is not None:
                        self.journal.keep = True
                    if isinstance(exc, UnknownRecordError):
                        _log.error("pcs: a record of run %s is skipped here and kept in the "
                                   "journal %s: %s", record[1] if len(record) > 1 else "?",
                                   self.journal.path if self.journal is not None else "(none)",
                                   exc)
                        break
                    _log.error(
                        "pcs: could not deliver record %r of run %s (%s: %s); it is skipped "
                        "here and kept in the journal %s. Please report this as a pcs bug.",
                        record[0], record[1] if len(record) > 1 else "?",
                        type(exc).__name__, exc,
                        self.journal.path if self.journal is not None else "(none)",
                    )
                    break

    def _deliver(self, records: list[Wire]) -> None:
        """Hand ``records`` to the sink (made on first use), under the delivery lock, and
        keep what it set aside."""
        with self.delivery_lock:
            if self._sink is None:
                self._sink = self._sink_factory()
            rejected = self._sink.deliver(records)
        if rejected:
            self._set_aside(rejected)

    def _set_aside(self, rejected: dict[str, list[Wire]]) -> None:
        """Keep records that cannot be delivered (their experiment is missing) in a journal
        of their own, which outlives this process: ``pcs recover`` delivers it once the
        experiment exists again. Each reason is reported once."""
        journal = self.journal
        aside = self._aside
        if aside is None and journal is not None:
            aside = self._aside = Journal(journal.directory, journal.tracking_uri)
        for reason, records in rejected.items():
            kept = "(not kept: the journal is off)"
            if aside is not None:
                keys = {str(r[_KEY]) for r in records if r[0] == "T"}  # StartCall.key
                components = [self._component_records[k] for k in sorted(keys)
                              if k in self._component_records]
                try:
                    aside.append([*components, *records], True)
                    kept = f"kept in the journal {aside.path}"
                except OSError as exc:
                    kept = f"(not kept: {exc})"
            if reason not in self._aside_reported:
                self._aside_reported.add(reason)
                _log.error(
                    "pcs: cannot deliver runs: %s. Their records are %s. Restore the "
                    "experiment (MlflowClient().restore_experiment) and run `pcs recover`, or "
                    "record into an existing experiment (experiment_id=...).",
                    reason, kept,
                )

    def _reload_spilled(self, journal: Journal) -> None:
        """Bring the oldest spilled records back from the journal (caller holds the lock)."""
        count = min(self._spilled, self._batch)
        first = self._delivered + 1
        self._queue.extend(journal.read(first, count))
        self._spilled -= count

    def _check_stall(self) -> None:
        """A delivery that has made no progress for :data:`STALL` seconds counts as a
        failure: warn once, and let callers spill to the journal instead of waiting.

        (MLflow's REST client retries a refused connection for minutes before it
        raises; pcs does not wait for that to tell the user, or to stop blocking.)
        """
        since = self._delivering_since
        if since is None:
            return
        last = max(since, getattr(self._sink, "progress", 0.0))
        quiet = time.monotonic() - last
        if quiet > self._stall:
            self._report_failure(TimeoutError(f"no answer for {quiet:.0f} s"))

    def _report_failure(self, exc: Exception) -> None:
        """Remember when delivery began failing; warn once (until it delivers again)."""
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        if not self._warned:
            self._warned = True
            _log.warning("%s", self._failure_message(exc))

    def _failure_message(self, exc: Exception) -> str:
        journal = self.journal
        return (
            f"pcs: cannot write to the tracking store "
            f"{self.store or (journal.tracking_uri if journal is not None else '?')} "
            f"({type(exc).__name__}: {exc}). Your code keeps running; {self.pending} record(s) "
            f"wait in memory and in the journal "
            f"{journal.path if journal is not None else '(none)'} and will be delivered when "
            "the store is reachable (or by `pcs recover` after this process ends)."
        )

    def _disable_journal(self, exc: OSError) -> None:
        self.journal = None
        _log.warning(
            "pcs: cannot write the journal (%s); records are still delivered, but would not "
            "survive a crash. Set PCS_JOURNAL_DIR to a writable directory.",
            exc,
        )

    # -- shutdown and fork --------------------------------------------------------
    def close(self, timeout: float | None = 30.0) -> bool:
        """Deliver what is pending (up to ``timeout``), stop the thread, tidy the journal."""
        if os.getpid() != self._pid:
            return True
        if self._closed:
            return self.pending == 0
        delivered = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            journal = self.journal
            if journal is not None:
                journal.close(delete=delivered and self.pending == 0 and not journal.keep)
            if self._aside is not None:
                self._aside.close(delete=False)
                self._aside = None
        return delivered

    def _at_exit(self) -> None:
        global _exit_deadline
        if (self._enqueued == 0 and self.journal is None) or self._closed:
            return
        if _exit_deadline is None:  # one budget for the whole shutdown, every store
            _exit_deadline = time.monotonic() + settings.EXIT_FLUSH_TIMEOUT.get()
        if not self.close(timeout=max(0.0, _exit_deadline - time.monotonic())):
            _log.warning(
                "pcs: %d record(s) were not delivered before exit; they are kept in the "
                "journal %s and delivered by the next pcs process here (or `pcs recover`).",
                self.pending,
                self.journal.path if self.journal is not None else "(none)",
            )

    def before_fork(self, timeout: float) -> None:
        """Quiesce for ``os.fork()``: wait (bounded) for the delivery under way to end, and
        hold the queue's lock, so the child never inherits a lock taken by another thread
        or a store connection in the middle of a request."""
        held = []
        deadline = time.monotonic() + timeout
        for lock in (self.delivery_lock, self._lock):
            if lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                held.append(lock)
        self._fork_held = held

    def after_fork_in_parent(self) -> None:
        """Release what :meth:`before_fork` took."""
        held, self._fork_held = self._fork_held, []
        for lock in reversed(held):
            lock.release()

    def after_fork_in_child(self) -> None:
        """The child must not deliver (or journal) the parent's records."""
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue = deque()
        self._enqueued = self._delivered = self._spilled = 0
        self._thread = None
        self._pid = os.getpid()
        self.inherited.append(self._sink)  # the parent's connection: never used nor closed
        self._sink = None
        self._known_components = set()
        self._component_records = {}
        self._starts = deque()
        self._open_starts = {}
        self.delivery_lock = threading.Lock()
        self._fork_held = []
        if self._aside is not None:
            self._aside.forget_after_fork()
        self._aside = None
        self._failing_since = None
        self._delivering_since = None
        self._warned = False
        if self.journal is not None:
            self.journal.forget_after_fork()
            self.journal = Journal(self.journal.directory, self.journal.tracking_uri)
