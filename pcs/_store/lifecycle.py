"""The process around the stores: fork, exit, SIGTERM, multiprocessing children, recovery.

Every hook here is installed once per process: the fork hooks when this
module is imported, the rest when the first backend starts its writer
(through :func:`pcs._store.facade.on_writer_started`). They reach the
backends only through their public methods.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from pcs import settings
from pcs._store import facade, uri
from pcs._store.recovery import recover

__all__ = ["close_all", "end_open_runs", "flush_all", "process_id"]

_log = logging.getLogger("pcs")

#: This process's id, kept current across fork (cheaper than os.getpid() per call).
process_id = os.getpid()

#: what a forked child inherited and must neither use nor close (connections, clients)
_inherited: list[Any] = []
_fork_held: list[Any] = []


def _before_fork() -> None:
    """Take pcs's locks around ``os.fork()`` (bounded): no delivery, import or store
    opening of another thread is half done in the child. Imports and store openings
    always end, so fork waits for them up to ``uri.IMPORT_FORK_WAIT``; a delivery (which
    may wait on an unreachable server) up to ``PCS_FORK_WAIT_SECONDS``."""
    wait = settings.FORK_WAIT_SECONDS.get()
    held = _fork_held
    # An import under way in another thread always ends, and a child forked in its middle
    # is broken: wait for it longer than for the rest.
    if uri.import_lock().acquire(timeout=max(wait, uri.IMPORT_FORK_WAIT)):
        held.append(uri.import_lock())
    deadline = time.monotonic() + wait
    for lock in (facade.registry_lock(),):
        if lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            held.append(lock)
    for backend in facade.all_backends():
        if backend.started_writer is not None:
            backend.started_writer.before_fork(max(0.0, deadline - time.monotonic()))
        # Opening a store (MLflow's engines, schema checks) also always ends, and a child
        # forked in its middle inherits MLflow's and SQLAlchemy's locks half taken.
        client_lock = backend.client_lock
        if client_lock.acquire(timeout=max(wait, uri.IMPORT_FORK_WAIT)):
            held.append(client_lock)


def _after_fork_in_parent() -> None:
    for backend in facade.all_backends():
        if backend.started_writer is not None:
            backend.started_writer.after_fork_in_parent()
    while _fork_held:
        _fork_held.pop().release()


def _after_fork_in_child() -> None:
    global process_id
    process_id = os.getpid()
    _fork_held.clear()
    uri.renew_import_lock()
    # Database connections, client state, queued records and open runs belong to
    # the parent process: every backend starts afresh in the child, and what it
    # inherited is kept referenced (never closed from here) and never used again.
    _inherited.extend(facade.renew_after_fork())
    _renew_mlflow_after_fork()


def _renew_mlflow_after_fork() -> None:
    """MLflow caches one SQLAlchemy engine per database URI (with a lock): in a forked
    child, give each a new connection pool without closing the parent's connections
    (SQLAlchemy's documented recipe) and a new lock."""
    module = sys.modules.get("mlflow.store.tracking.sqlalchemy_store")
    store = getattr(module, "SqlAlchemyStore", None)
    if store is None:
        return
    try:
        store._engine_map_lock = threading.Lock()
        for engine in list(getattr(store, "_engine_map", {}).values()):
            engine.dispose(close=False)
    except Exception as exc:  # never break the child
        _log.debug("pcs: could not renew MLflow's engines after fork: %s", exc)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


# -- exit, multiprocessing children, recovery: once the first writer starts ------------
_lifecycle_done: set[str] = set()
#: True once the process has ended its open runs at exit: a run a daemon thread starts
#: later ends at once (see pcs.run.register_open), so none is left RUNNING
exiting = False


def _on_writer_started(journaled: bool) -> None:
    _end_open_runs_at_exit()  # registered after the writer's: runs before it
    _install_sigterm_handler()
    _flush_in_multiprocessing_children()
    if journaled:
        _recover_in_background()


facade.on_writer_started(_on_writer_started)


def _end_open_runs_at_exit() -> None:
    """At normal exit, no run of this process stays RUNNING."""
    if "exit" in _lifecycle_done:
        return
    _lifecycle_done.add("exit")
    import atexit

    def end_all() -> None:
        global exiting
        exiting = True  # runs started from now on (daemon threads) end at once
        for backend in facade.all_backends():
            for run in list(backend.open_runs.values()):
                # A run still open at exit was interrupted (a daemon thread, an
                # unfinished block or call) — except an explicit Run() the program
                # never ended, which ends FINISHED as MLflow's own runs do.
                status = getattr(run, "status_at_exit", "KILLED")
                try:
                    run.end(status)
                except Exception as exc:
                    _log.warning("pcs: could not end run %s at exit: %s", run, exc)

    atexit.register(end_all)


def _recover_in_background() -> None:
    """Deliver journals that dead processes left in this working directory (once)."""
    if "recover" in _lifecycle_done or not settings.AUTO_RECOVER.get():
        return
    _lifecycle_done.add("recover")

    def run() -> None:
        try:
            recover()
        except Exception as exc:  # never disturb the program
            _log.warning("pcs: background recovery failed: %s", exc)

    threading.Thread(target=run, name="pcs-recover", daemon=True).start()


class _ForkMarker:
    """A weak-referenceable object for multiprocessing's after-fork registry."""


_FORK_MARKER = _ForkMarker()


def _flush_in_multiprocessing_children() -> None:
    """multiprocessing workers leave through ``os._exit`` (no atexit): flush in its finalizers."""
    if "mp" in _lifecycle_done:
        return
    _lifecycle_done.add("mp")
    import multiprocessing.util as mp_util

    def register(_: object = None) -> None:
        budget = settings.EXIT_FLUSH_TIMEOUT.get()
        mp_util.Finalize(None, flush_all, args=(budget,), exitpriority=100)

    import multiprocessing

    if multiprocessing.parent_process() is not None:  # a spawned or forkserver worker
        register()
    mp_util.register_after_fork(_FORK_MARKER, register)


# -- SIGTERM: mark open runs KILLED, deliver, then let the signal proceed -------------
_sigterm_installed = False
#: seconds SIGTERM waits for delivery at most (a container's stop grace period is typically
#: 10-30 s); a store that fails ends the wait at once. What is not delivered then stays in
#: the journal (``pcs recover``, or the next pcs process, delivers it).
SIGTERM_WAIT = 25.0


def _deliver_before_termination() -> None:
    """End the open runs KILLED, then wait for delivery while it can succeed: the writer
    thread of a program terminated soon after its first call may still be importing MLflow
    or opening the store."""
    deadline = time.monotonic() + SIGTERM_WAIT
    end_open_runs("KILLED", 0.5)
    while time.monotonic() < deadline:
        if flush_all(0.5):
            return
        if any(backend.started_writer is not None and backend.started_writer.failing
               for backend in facade.all_backends()):
            return


def _install_sigterm_handler() -> None:
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    if not settings.HANDLE_SIGTERM.get():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        return  # the program handles SIGTERM itself; do not interfere
    _sigterm_installed = True

    def on_sigterm(signum: int, frame: Any) -> None:
        # The handler interrupts the main thread anywhere — maybe while it holds a pcs
        # lock — so the work runs in another thread, and the signal proceeds after a
        # bounded wait whatever happens.
        try:
            worker = threading.Thread(
                target=_deliver_before_termination, name="pcs-sigterm", daemon=True
            )
            worker.start()
            worker.join(SIGTERM_WAIT + 3.0)
        except Exception as exc:  # e.g. the interpreter is shutting down
            _log.debug("pcs: SIGTERM handling skipped: %s", exc)
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)


def close_all(timeout: float | None = None) -> bool:
    """Deliver what is pending (within ``timeout`` in all) and stop every writer, as at exit."""
    deadline = None if timeout is None else time.monotonic() + timeout
    done = True
    for backend in facade.all_backends():
        writer = backend.started_writer
        if writer is not None:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            done = writer.close(remaining) and done
    return done


def flush_all(timeout: float | None = None) -> bool:
    """Wait until every record submitted to any store so far is delivered."""
    deadline = None if timeout is None else time.monotonic() + timeout
    done = True
    for backend in facade.all_backends():
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        done = backend.flush(remaining) and done
    return done


def end_open_runs(status: str, timeout: float | None = None) -> int:
    """End every run this process started and did not end; deliver everything. Returns count."""
    count = 0
    for backend in facade.all_backends():
        for run in list(backend.open_runs.values()):
            try:
                run.end(status)
                count += 1
            except Exception as exc:
                _log.warning("pcs: could not end run %s: %s", getattr(run, "identifier", "?"),
                             exc)
        backend.flush(timeout)
    return count
