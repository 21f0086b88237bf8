"""The program's side of the delivery agent (``PCS_DELIVERY=agent``).

With the delivery agent, a program never talks to MLflow to record: its
:class:`AgentWriter` appends every record to the process's memory-mapped
journal (:mod:`pcs._journal`) and that is all the caller pays. A *delivery
agent* — one process per store and journal directory on this machine
(:mod:`pcs._store.agent`), shared by every pcs process writing there — tails
the journals, writes the records to MLflow in large transactions, and appends
what it delivered to each journal's ``.done`` file. The program's GIL is never
taken for delivery, so a program that computes does not slow delivery down,
and a program that records fast is not throttled to MLflow's pace: the journal
grows on disk instead (up to ``PCS_JOURNAL_BUDGET_MB``, then callers wait).

This module starts the agent when none runs (:func:`ensure_agent`), and keeps
one light *monitor* thread per store that publishes calls started but not yet
journaled, reads the agent's acknowledgements for :meth:`AgentWriter.flush`,
and restarts an agent that died. Nothing here imports MLflow.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pcs import settings
from pcs._journal import Journal
from pcs._journal.format import DoneLog
from pcs._records import Wire
from pcs._store.uri import import_lock
from pcs._writer import Sink, Writer

__all__ = ["AgentWriter", "agent_alive", "agent_files", "ensure_agent", "make_writer"]

_log = logging.getLogger("pcs")

#: how often the monitor looks at the agent's acknowledgements while records are pending
_TICK = 0.02
#: how often a waiting flush looks (it also wakes when the monitor sees progress)
_FLUSH_TICK = 0.002
#: how often the monitor checks that the agent is alive while records are pending
_LIVENESS = 0.5
#: seconds an agent may take to acknowledge its first records before it counts as stalled:
#: it imports MLflow and may create the store's tables first (many seconds on a busy machine)
_STARTUP_GRACE = 120.0

_launch_lock = threading.Lock()
#: the agent's lock while :func:`ensure_agent` hands it to a new agent
_handing: int | None = None
#: agents this process started, to reap them (no zombie) once they exit
_children: list[subprocess.Popen[bytes]] = []


def agent_files(directory: Path, tracking_uri: str) -> tuple[Path, Path]:
    """(lock file, log file) of the agent of ``tracking_uri`` for journals in ``directory``.

    The agent holds an exclusive ``flock`` on its lock file for its lifetime:
    the kernel releases it however the agent ends, so a free lock proves that
    no agent runs.
    """
    key = hashlib.sha256(f"{tracking_uri}\0{directory.resolve()}".encode()).hexdigest()[:16]
    return directory / f"agent-{key}.lock", directory / f"agent-{key}.log"


def agent_alive(lock_path: Path) -> bool:
    """Whether an agent holds ``lock_path`` (a shared lock cannot be taken beside it)."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return True
        raise
    finally:
        os.close(fd)  # closing drops a shared lock we took
    return False


def ensure_agent(directory: Path, tracking_uri: str) -> bool:
    """Start the agent of this store and directory unless one runs; True if one was started.

    The caller takes the agent's lock itself and hands it to the new process
    (the inherited descriptor keeps the ``flock``): from the moment an agent
    is decided on, the lock is held, so the other processes writing here see
    an agent at once and none starts a second while the first imports (on a
    busy machine, many would otherwise start and compete for the CPU the
    first one needs). A process forked meanwhile closes its copy at once
    (:func:`_after_fork_in_child`).
    """
    global _handing
    lock_path, log_path = agent_files(directory, tracking_uri)
    with _launch_lock:
        _reap()
        try:
            fd = _handing = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:  # the directory was removed: nothing to deliver from it
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False  # an agent holds it
                raise
            package_root = str(Path(__file__).resolve().parents[2])
            env = dict(os.environ)
            path = env.get("PYTHONPATH")
            env["PYTHONPATH"] = package_root if not path else f"{package_root}{os.pathsep}{path}"
            log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                             0o600)
            try:
                child = subprocess.Popen(
                    [sys.executable, "-m", "pcs._store.agent", "--store", tracking_uri,
                     "--journal-dir", str(directory), "--lock-fd", str(fd)],
                    stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                    start_new_session=True, close_fds=True, pass_fds=(fd,), env=env,
                )
            finally:
                os.close(log_fd)
        finally:
            _handing = None
            os.close(fd)  # the child's copy keeps the lock (or, if none started, it is freed)
        _children.append(child)
        return True


def _after_fork_in_child() -> None:
    """A child forked while an agent was being started must not keep its lock."""
    global _launch_lock, _handing
    _launch_lock = threading.Lock()
    if _handing is not None:
        try:
            os.close(_handing)  # the parent's descriptor still holds the lock
        except OSError:
            pass
        _handing = None
    _children.clear()  # the parent's to reap


os.register_at_fork(after_in_child=_after_fork_in_child)


def _reap() -> None:
    """Collect agents this process started that have exited (no zombie is left)."""
    _children[:] = [child for child in _children if child.poll() is None]


def make_writer(sink_factory: Callable[[], Sink], journal: Journal | None, store: str) -> Writer:
    """The writer of a store: an :class:`AgentWriter` with ``PCS_DELIVERY=agent`` on a SQLite
    store whose journal is on (pcs makes its run ids there: no answer from the store is
    ever awaited), else the in-process :class:`~pcs._writer.Writer`."""
    if journal is not None and store.startswith("sqlite:") and \
            settings.DELIVERY.get() == "agent":
        return AgentWriter(sink_factory, journal, store=store)
    import_before_exit()
    return Writer(sink_factory, journal, store=store)


def import_before_exit() -> None:
    """Import now what a delivery thread's import of MLflow needs that Python refuses to
    import once the interpreter exits: ``concurrent.futures.thread`` registers a shutdown
    callback as it is imported. A short program may end before its writer thread has
    imported MLflow; its exit then delivers (~1.5 ms, once; under the import lock, which
    ``fork()`` waits for)."""
    if "concurrent.futures.thread" not in sys.modules:
        with import_lock():
            import concurrent.futures.thread  # noqa: F401


class AgentWriter(Writer):
    """The write path when a delivery agent delivers: records are journaled, nothing more.

    The queue of :class:`~pcs._writer.Writer` stays empty; ``_delivered`` is
    what the agent acknowledged in this journal's ``.done`` file. The thread of
    the base class is the *monitor* here (see the module's description); if the
    journal cannot be written, the writer falls back to delivering in this
    process, as :class:`~pcs._writer.Writer` does.
    """

    def __init__(self, sink_factory: Callable[[], Sink], journal: Journal, *,
                 store: str) -> None:
        super().__init__(sink_factory, journal, store=store)
        self.directory = journal.directory
        self._lock_path, self.log_path = agent_files(journal.directory, store)
        self._done_log = DoneLog(journal.path)  # the agent's acknowledgements
        self._budget = settings.JOURNAL_BUDGET_MB.get() * 1024 * 1024
        self._progress_at = time.monotonic()  # when the agent last acknowledged something
        self._checked_at = 0.0  # when the agent's liveness was last checked
        self._fallback = False  # the journal failed: deliver in this process instead

    # -- caller side ------------------------------------------------------------
    def _make_room(self) -> bool:
        if self._fallback:
            return super()._make_room()
        journal = self.journal
        # Only a journal that wrote more than the budget can hold that much undelivered.
        if (self._budget and journal is not None and journal.written > self._budget
                and self._over_budget()):
            self._wait_for_budget()
        return False

    def _enqueue(self, records: list[Wire] | tuple[Wire, ...], sync: bool,
                 spill: bool) -> None:
        journal = self.journal
        if self._fallback or journal is None:
            super()._enqueue(records, sync, spill)
            return
        try:
            self._journal_append(journal, records, sync)
        except OSError as exc:
            self._fall_back(exc)
            super()._enqueue(records, sync, False)
            return
        self._enqueued += len(records)
        if self._thread is None:
            self._start()
        elif self._idle:
            self._cond.notify_all()

    def _rotate(self, journal: Journal) -> None:
        super()._rotate(journal)
        self._done_log.close()
        self._done_log = DoneLog(journal.path)  # the agent acknowledges in the new segment

    def _fall_back(self, exc: OSError) -> None:
        """The journal cannot be written: deliver in this process from now on."""
        self._fallback = True
        import_before_exit()
        self._disable_journal(exc)

    def _over_budget(self) -> bool:
        """Whether the journal holds more undelivered bytes than the disk budget allows."""
        journal = self.journal
        if journal is None or not self._enqueued:
            return False
        waiting = self._enqueued - self._delivered
        return waiting * (journal.written / self._enqueued) > self._budget

    def _wait_for_budget(self) -> None:
        """Backpressure (the lock is held): wait until the agent catches up below the budget."""
        while self._over_budget() and not self._fallback:
            self._read_done()
            self._check_agent(force=False)
            self._cond.wait(0.05)

    # -- acknowledgements ----------------------------------------------------------
    def _read_done(self) -> None:
        """Take up what the agent acknowledged (the last number in ``<journal>.done``)."""
        if self.journal is None:
            return
        done = self._done_log.latest()
        if done > self._delivered:
            self._delivered = min(done, self._enqueued)
            self._progress_at = time.monotonic()
            if self._failing_since is not None:
                _log.warning("pcs: the delivery agent delivers again.")
                self._failing_since = None
                self._warned = False
            self._cond.notify_all()

    def _check_agent(self, force: bool) -> None:
        """Start the agent when none runs (at most every :data:`_LIVENESS` seconds)."""
        now = time.monotonic()
        if not force and now - self._checked_at < _LIVENESS:
            return
        self._checked_at = now
        try:
            if ensure_agent(self.directory, self.store):
                self._progress_at = now
        except OSError as exc:
            self._report_failure(OSError(f"cannot start the delivery agent: {exc}"))
            return
        stall = self._stall if self._delivered else max(self._stall, _STARTUP_GRACE)
        if now - self._progress_at > stall and self._enqueued > self._delivered:
            self._report_failure(TimeoutError(
                f"nothing acknowledged for {now - self._progress_at:.0f} s; see its log "
                f"{self.log_path}"))

    @property
    def pending(self) -> int:
        return self._enqueued - self._delivered + len(self._starts)

    def _failure_message(self, exc: Exception) -> str:
        return (
            f"pcs: the delivery agent of {self.store} is not delivering ({exc}). Your code "
            f"keeps running; {self.pending} record(s) wait in the journal "
            f"{self.journal.path if self.journal is not None else '(none)'} and are delivered "
            "when it catches up (or by `pcs recover`)."
        )

    def flush(self, timeout: float | None = None) -> bool:
        if self._fallback:
            return super().flush(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        cond = self._cond
        with cond:
            if self._starts:
                self._publish_starts()
            if self.journal is not None:
                self.journal.sync()
            target = self._enqueued
            if self._delivered >= target:
                return True
            self._check_agent(force=True)
            self._flushing += 1
            try:
                wait = _FLUSH_TICK
                while self._delivered < target and not self._fallback:
                    self._read_done()
                    if self._delivered >= target:
                        break
                    self._check_agent(force=False)
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    cond.wait(wait if remaining is None else min(remaining, wait))
                    wait = min(wait * 2, 0.05)
            finally:
                self._flushing -= 1
        return True

    # -- the monitor thread ------------------------------------------------------------
    def _publish_starts(self) -> None:
        if self._fallback:
            super()._publish_starts()
            return
        self._enqueue(self._take_starts(), False, False)

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                if self._closed:
                    return
                if self._fallback:
                    break
                if self._starts:
                    self._publish_starts()
                journal = self.journal
                if journal is not None:
                    try:
                        journal.sync()  # a long call's start becomes visible (RUNNING)
                    except OSError as exc:
                        self._fall_back(exc)
                        break
                self._read_done()
                if self._enqueued > self._delivered:
                    self._check_agent(force=False)
                    cond.wait(_TICK)
                else:
                    self._idle = True
                    cond.wait(1.0)
                    self._idle = False
        super()._run()  # the fallback: deliver in this process

    # -- shutdown and fork --------------------------------------------------------------
    def close(self, timeout: float | None = 30.0) -> bool:
        """Journal what is left and hand it to the agent; wait only when asked to.

        Without ``PCS_EXIT_WAIT`` (and at a timeout of 0) the process does not
        wait for delivery: the agent delivers the rest of the journal once the
        process is gone (the journal is then a dead process's, see
        :mod:`pcs._store.recovery`).
        """
        if self._fallback:
            return super().close(timeout)
        if os.getpid() != self._pid:
            return True
        if self._closed:
            return self.pending == 0
        with self._cond:
            if self._starts:
                self._publish_starts()
            if self.journal is not None:
                self.journal.sync()
        delivered = self.pending == 0
        if not delivered and (timeout is None or timeout > 0):
            delivered = self.flush(timeout)
            if not delivered and not self._fallback:
                _log.warning(
                    "pcs: the delivery agent has not delivered %d record(s) of this process "
                    "within %s s; it delivers them after this process ends (its log: %s). "
                    "Raise PCS_EXIT_FLUSH_TIMEOUT to wait longer.",
                    self.pending, timeout, self.log_path)
        if not delivered and self._enqueued > self._delivered:
            try:
                ensure_agent(self.directory, self.store)
            except OSError as exc:
                _log.warning("pcs: cannot start the delivery agent (%s); the journal %s is "
                             "delivered by the next pcs process here (or `pcs recover`).",
                             exc, self.journal.path if self.journal is not None else "?")
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            journal = self.journal
            if journal is not None:
                self._read_done()
                everything = self._delivered >= self._enqueued and not journal.keep
                journal.close(delete=everything, trim=False)  # the agent reads it
            self._done_log.close()
        return True

    def _at_exit(self) -> None:
        if self._fallback:
            super()._at_exit()
            return
        if self._closed or (self._enqueued == 0 and not self._starts):
            if not self._closed and self.journal is not None:
                self.journal.close(delete=True)
                self._closed = True
            return
        wait = settings.EXIT_WAIT.get()
        self.close(timeout=settings.EXIT_FLUSH_TIMEOUT.get() if wait else 0.0)

    def after_fork_in_child(self) -> None:
        super().after_fork_in_child()
        self._done_log.close()  # the parent's journal's: this process has a journal of its own
        if self.journal is not None:
            self._done_log = DoneLog(self.journal.path)
        self._progress_at = time.monotonic()
        self._checked_at = 0.0
