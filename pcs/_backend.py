"""The backend seam: the one module through which pcs talks to MLflow.

Nothing else in pcs imports :mod:`mlflow`. ``import pcs`` stays cheap because
this module imports MLflow only when a backend is first needed.

A :class:`Backend` is bound to one tracking URI and wraps a stock
``mlflow.tracking.MlflowClient`` (never MLflow's fluent, thread-local
``start_run`` / ``active_run`` state). Backends are cached per URI, so every
Run of a process that talks to the same store shares one client.
"""

from __future__ import annotations

import logging
import math
import os
import random
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote, unquote, urlparse

from pcs import settings
from pcs._journal import Journal, default_directory
from pcs._records import (
    Batch,
    Materializer,
    NewRun,
)
from pcs._writer import Sink, Writer
from pcs.conventions import (
    LOCAL_RUN_ID_TAG,
    PARENT_RUN_ID_TAG,
    RUN_NAME_TAG,
)
from pcs.exceptions import RunNotFoundError, StoreError

if TYPE_CHECKING:
    from concurrent.futures import Future

    from mlflow.entities import Run as MlflowRun
    from mlflow.tracking import MlflowClient

__all__ = [
    "Backend",
    "ClientSink",
    "SqliteSink",
    "close_all",
    "current_tracking_uri",
    "end_open_runs",
    "flush_all",
    "get_backend",
    "probe_store",
    "reset_backends",
]

_log = logging.getLogger("pcs")


_lock = threading.Lock()
_backends: dict[str, Backend] = {}


#: Prefix of the run ids pcs makes for stores where MLflow chooses the id (see new_run_id).
LOCAL_ID_PREFIX = "pcs-local-"
#: The tag naming the local id a run was recorded under (client stores).

#: This process's id, kept current across fork (cheaper than os.getpid() per call).
process_id = os.getpid()

_URI_ENV = "MLFLOW_TRACKING_URI"
_TRACKING_UTILS = "mlflow.tracking._tracking_service.utils"
# os.environ's own mapping (bytes on POSIX): reading it skips two encode calls per lookup.
_environ_data: Any = getattr(os.environ, "_data", None)
_uri_env_key: Any = None
if isinstance(_environ_data, dict):
    try:
        _uri_env_key = os.environ.encodekey(_URI_ENV)
    except Exception:  # pragma: no cover - not CPython's os.environ
        _environ_data = None
else:  # pragma: no cover
    _environ_data = None
#: (environment value, mlflow.set_tracking_uri value, cwd or None) -> resolved URI
_uri_cache: tuple[Any, Any, str | None, str] = (None, None, None, "")


def current_tracking_uri() -> str:
    """The tracking URI MLflow resolves now: ``MLFLOW_TRACKING_URI`` or its default.

    MLflow's answer depends on the environment variable, on
    ``mlflow.set_tracking_uri`` and (for the default, relative SQLite file) on
    the working directory; it is cached until one of them changes.
    """
    global _uri_cache
    if _environ_data is not None:
        env = _environ_data.get(_uri_env_key)
    else:  # pragma: no cover
        env = os.environ.get(_URI_ENV)
    utils = sys.modules.get(_TRACKING_UTILS)
    explicit = None if utils is None else getattr(utils, "_tracking_uri", None)
    cached = _uri_cache
    if env or explicit:
        if cached[0] == env and cached[1] == explicit and cached[3] and (
            cached[2] is None or cached[2] == os.getcwd()  # a relative path: per directory
        ):
            return cached[3]
        cwd = None
    else:
        cwd = os.getcwd()
        if not cached[0] and not cached[1] and cached[2] == cwd:
            return cached[3]
    mlflow = _import_mlflow()
    uri = str(mlflow.get_tracking_uri())
    absolute = absolute_uri(uri)
    if absolute != uri and cwd is None:
        cwd = os.getcwd()
    _uri_cache = (env, explicit, cwd, absolute)
    return absolute


def absolute_uri(uri: str) -> str:
    """``uri`` with a relative SQLite or local path made absolute (one store, one name).

    ``sqlite:///mlflow.db`` means a different database in every working
    directory; pcs names stores by absolute path, so that a journal recorded
    here is never delivered into another directory's database.
    """
    if uri.startswith("sqlite:///"):
        path = _sqlite_path(uri)
        if path and path != ":memory:" and not os.path.isabs(path):
            return "sqlite:///" + os.path.abspath(path)
        return uri
    parsed = urlparse(uri)
    if parsed.scheme == "" and uri and not os.path.isabs(uri):
        return os.path.abspath(uri)
    if parsed.scheme == "file" and not parsed.netloc and parsed.path and \
            not os.path.isabs(unquote(parsed.path)):
        return "file://" + os.path.abspath(unquote(parsed.path))
    return uri


#: held while pcs imports MLflow (a second or so): fork() waits for it, because a child
#: forked in the middle of another thread's import finds that import's locks taken forever
_import_lock = threading.Lock()


def _import_mlflow() -> Any:
    module = sys.modules.get("mlflow")
    if module is None or getattr(getattr(module, "__spec__", None), "_initializing", False):
        with _import_lock:
            import mlflow

            module = mlflow
    return module


def get_backend(tracking_uri: str | None = None) -> Backend:
    """The shared :class:`Backend` for ``tracking_uri`` (default: the current one)."""
    uri = tracking_uri or current_tracking_uri()
    backend = _backends.get(uri)
    if backend is None:
        with _lock:
            backend = _backends.get(uri)
            if backend is None:
                backend = Backend(uri)
                _backends[uri] = backend
    return backend


def reset_backends() -> None:
    """Forget every cached backend (tests switch tracking stores with this)."""
    with _lock:
        _backends.clear()


#: Run ids: 128 random bits like MLflow's uuid4().hex, without a system call per id.
_ids = random.Random()  # noqa: S311 - unique ids, not secrets


#: what a forked child inherited and must neither use nor close (connections, clients)
_inherited: list[Any] = []
_fork_held: list[Any] = []


def _before_fork() -> None:
    """Take pcs's locks around ``os.fork()`` (bounded): no delivery, import or backend
    creation of another thread is half done in the child."""
    deadline = time.monotonic() + settings.FORK_WAIT_SECONDS.get()
    held = _fork_held
    for lock in (_import_lock, _lock):
        if lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            held.append(lock)
    for backend in list(_backends.values()):
        if backend._writer is not None:
            backend._writer.before_fork(max(0.0, deadline - time.monotonic()))
        if backend._client_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            held.append(backend._client_lock)


def _after_fork_in_parent() -> None:
    for backend in list(_backends.values()):
        if backend._writer is not None:
            backend._writer.after_fork_in_parent()
    while _fork_held:
        _fork_held.pop().release()


def _after_fork_in_child() -> None:
    global process_id, _lock, _import_lock
    process_id = os.getpid()
    _ids.seed()  # never repeat the parent's id sequence
    _fork_held.clear()
    _lock = threading.Lock()
    _import_lock = threading.Lock()
    # Database connections, client state, queued records and open runs belong to
    # the parent process: every backend starts afresh in the child, and what it
    # inherited is kept referenced (never closed from here) and never used again.
    for backend in _backends.values():
        _inherited.append(backend._client)
        backend._client = None
        backend._client_lock = threading.RLock()
        backend.open_runs = {}
        if backend._writer is not None:
            backend._writer.after_fork_in_child()
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


def now_ms() -> int:
    """The current time in milliseconds since the epoch, as MLflow stores it."""
    return time.time_ns() // 1_000_000


class Backend:
    """All MLflow access for one tracking URI."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._client: MlflowClient | None = None
        self._client_lock = threading.RLock()
        self._writer: Writer | None = None
        self._mode: str | None = None
        #: local run ids (client stores) -> the MLflow run ids the writer created them as
        self.run_ids: dict[str, str] = {}
        #: SQLite stores: pcs makes the MLflow run ids itself (see new_run_id)
        self.assigns_ids = _assigns_ids(tracking_uri)
        #: runs started by this process and not yet ended: run id -> Run
        self.open_runs: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Backend({self.tracking_uri!r})"

    @property
    def client(self) -> MlflowClient:
        """The stock MLflow client for this store (created on first use)."""
        client = self._client
        if client is None:
            with self._client_lock:
                client = self._client
                if client is None:
                    try:
                        client = cast("MlflowClient", _Serialized(_open_client(self.tracking_uri)))
                    except Exception as exc:
                        raise StoreError(
                            f"Cannot open the MLflow tracking store {self.tracking_uri!r}: {exc}. "
                            "Check MLFLOW_TRACKING_URI (a sqlite:/// path must be in an "
                            "existing, writable directory; a server must be running).",
                            self.tracking_uri,
                        ) from exc
                    self._client = client
        return client

    # -- write-behind ----------------------------------------------------------
    @property
    def mode(self) -> str:
        """``"sqlite"`` (pcs writes batches itself) or ``"client"`` (the MLflow client does)."""
        if self._mode is None:
            with self._client_lock:
                if self._mode is None:
                    self._mode = _detect_mode(self)
        return self._mode

    @property
    def writer(self) -> Writer:
        """The write-behind writer of this store (created, with its journal, on first use)."""
        writer = self._writer
        if writer is None:
            with self._client_lock:
                writer = self._writer
                if writer is None:
                    journal = None
                    if settings.JOURNAL.get():
                        journal = Journal(default_directory(), self.tracking_uri)
                    writer = Writer(self._make_sink, journal, store=self.tracking_uri)
                    self._writer = writer
                    _end_open_runs_at_exit()  # registered after the writer's: runs before it
                    _install_sigterm_handler()
                    _flush_in_multiprocessing_children()
                    if journal is not None:
                        _recover_in_background()
        return writer

    def _make_sink(self, recovering: bool = False) -> Sink:
        if self.mode == "sqlite":
            return SqliteSink(self)
        return ClientSink(self, recovering)

    def submit(self, *records: list[Any], sync: bool = True) -> None:
        """Journal and enqueue records for delivery (see :mod:`pcs._writer`)."""
        writer = self._writer
        if writer is None:
            writer = self.writer
        writer.submit(records, sync)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted to this store so far is delivered."""
        writer = self._writer
        if writer is None or writer.pending == 0:
            return True
        return writer.flush(timeout)

    def new_run_id(self, experiment_id: str) -> str:
        """An id for a new run, made here without asking the store (the caller's hot path).

        On a SQLite store it is the MLflow run id itself (128 random bits in
        hex, as MLflow makes them), and the writer inserts the run with it.
        MLflow's client cannot create a run with a given id, so for every other
        store it is a *local* id (``pcs-local-<hex>``): the writer creates the
        run and records the id MLflow gave it (:meth:`mlflow_id` resolves it).
        The store is not touched: whether the experiment exists is checked by
        the writer, at delivery.
        """
        hex_id = _ids.getrandbits(128).to_bytes(16, "big").hex()
        if self.assigns_ids:
            return hex_id
        return LOCAL_ID_PREFIX + hex_id

    def mlflow_id(self, run_id: str, timeout: float | None = None) -> str:
        """The MLflow run id of ``run_id``: itself, or what a local id was created as.

        A local id resolves once the writer has created its run: this waits for
        the writer (up to ``timeout``, default ``PCS_RUN_ID_TIMEOUT`` or 60 s).
        """
        found = self.run_ids.get(run_id)
        if found is not None:
            return found
        if not run_id.startswith(LOCAL_ID_PREFIX):
            if self.assigns_ids and self._mode == "client":
                # A SQLite store pcs cannot write directly: the writer creates runs.
                self.settle(timeout)
                return self.run_ids.get(run_id, run_id)
            return run_id
        if timeout is None:
            timeout = settings.RUN_ID_TIMEOUT.get()
        self.settle(timeout)
        found = self.run_ids.get(run_id)
        if found is None:
            raise StoreError(
                f"Run {run_id} has no MLflow run id yet: the tracking store "
                f"{self.tracking_uri!r} has not accepted it within {timeout:g} s. Check "
                "that the store is reachable; pcs keeps the run's records in its journal "
                "and delivers them when the store is back.",
                self.tracking_uri,
            )
        return found

    def settle(self, timeout: float | None = None) -> None:
        """Wait, bounded, until what was recorded so far is delivered: before a read.

        Raises :class:`StoreError` naming the store and the number of records
        still waiting when the store is unreachable (the writer reports
        failures) or after ``timeout`` seconds (default ``PCS_READ_TIMEOUT``,
        30 s). The records are not lost: they stay queued and journaled.
        """
        writer = self._writer
        if writer is None or writer.pending == 0:
            return
        if timeout is None:
            timeout = settings.READ_TIMEOUT.get()
        began = time.monotonic()
        deadline = began + timeout
        grace: float | None = None  # once the store fails, give it a moment to come back
        while not writer.flush(0.25):
            now = time.monotonic()
            if writer.failing:
                grace = grace if grace is not None else now + 1.0
            if now >= deadline or (grace is not None and now >= grace):
                state = "is unreachable" if writer.failing else "has not caught up"
                raise StoreError(
                    f"Cannot read from the tracking store {self.tracking_uri!r}: it {state} "
                    f"and {writer.pending} record(s) recorded earlier are not delivered yet "
                    f"(waited {now - began:.1f} s). They are kept "
                    "in memory and in the journal and delivered when the store answers; "
                    "check MLFLOW_TRACKING_URI and the store, or raise PCS_READ_TIMEOUT.",
                    self.tracking_uri,
                )

    # -- runs -------------------------------------------------------------
    def create_run(
        self,
        experiment_id: str,
        *,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        start_time: int | None = None,
    ) -> MlflowRun:
        """Create a RUNNING run and return MLflow's record of it."""
        client = self.client
        try:
            return client.create_run(
                experiment_id,
                start_time=start_time if start_time is not None else now_ms(),
                tags=dict(tags or {}),
                run_name=run_name,
            )
        except Exception as exc:
            raise StoreError(
                f"Creating a run in experiment {experiment_id!r} of the tracking store "
                f"{self.tracking_uri!r} failed: {exc}. Check that the experiment exists and "
                "that MLFLOW_TRACKING_URI names a reachable, writable store.",
                self.tracking_uri,
            ) from exc

    def get_run(self, run_id: str) -> MlflowRun:
        """MLflow's current record of ``run_id``; :class:`RunNotFoundError` if unknown."""
        from mlflow.exceptions import MlflowException

        if not isinstance(run_id, str) or not run_id:
            raise RunNotFoundError(str(run_id), self.tracking_uri)
        self.settle()
        run_id = self.mlflow_id(run_id)
        try:
            return self.client.get_run(run_id)
        except MlflowException as exc:
            if _is_not_found(exc):
                raise RunNotFoundError(run_id, self.tracking_uri) from None
            raise StoreError(
                f"Reading run {run_id!r} from {self.tracking_uri!r} failed: {exc}",
                self.tracking_uri,
            ) from exc

    def run_exists(self, run_id: str) -> bool:
        """True when the store holds a run with this id."""
        try:
            self.get_run(run_id)
        except RunNotFoundError:
            return False
        return True

    def set_terminated(self, run_id: str, status: str, end_time: int | None = None) -> None:
        """End a run with ``status`` (FINISHED, FAILED or KILLED)."""
        self.client.set_terminated(
            self.mlflow_id(run_id), status=status, end_time=end_time or now_ms()
        )

    def call(self, method: str, run_id: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call ``MlflowClient.<method>(run_id, *args, **kwargs)`` after a flush."""
        self.settle()
        return getattr(self.client, method)(self.mlflow_id(run_id), *args, **kwargs)

    def search_runs(self, experiment_ids: list[str], *args: Any, **kwargs: Any) -> Any:
        """``MlflowClient.search_runs`` on this store (after a flush)."""
        self.settle()
        return self.client.search_runs(experiment_ids, *args, **kwargs)

    def experiment_ids(self) -> list[str]:
        """The ids of every active experiment in the store."""
        ids: list[str] = []
        token = None
        while True:
            page = self.client.search_experiments(max_results=1000, page_token=token)
            ids.extend(exp.experiment_id for exp in page)
            token = page.token
            if not token:
                return ids

    def iter_runs(self, filter_string: str, order_by: list[str]) -> Iterator[MlflowRun]:
        """Every run of every experiment matching ``filter_string``, in ``order_by`` order."""
        self.settle()
        experiment_ids = self.experiment_ids()
        if not experiment_ids:
            return
        token = None
        while True:
            page = self.client.search_runs(
                experiment_ids,
                filter_string=filter_string,
                max_results=1000,
                order_by=order_by,
                page_token=token,
            )
            yield from page
            token = page.token
            if not token:
                return

    def list_all_artifacts(self, run_id: str, path: str | None = None) -> list[str]:
        """Paths of every artifact file of a run, recursively."""
        self.settle()
        run_id = self.mlflow_id(run_id)
        out: list[str] = []
        for info in self.client.list_artifacts(run_id, path):
            if info.is_dir:
                out.extend(self.list_all_artifacts(run_id, info.path))
            else:
                out.append(info.path)
        return out

    def read_artifact(self, run_id: str, path: str) -> bytes:
        """The bytes of one artifact file of a run."""
        import tempfile

        self.settle()
        run_id = self.mlflow_id(run_id)
        with tempfile.TemporaryDirectory(prefix="pcs-artifact-") as tmp:
            local = self.client.download_artifacts(run_id, path, tmp)
            with open(local, "rb") as fh:
                return fh.read()

    def log_artifact_bytes(self, run_id: str, artifact_file: str, data: bytes,
                           *, resolved: bool = False) -> None:
        """Store ``data`` as the artifact ``artifact_file`` (a relative path) of a run.

        ``resolved``: ``run_id`` is already MLflow's id (the writer's own calls).
        """
        import tempfile

        if not resolved:
            run_id = self.mlflow_id(run_id)

        directory, _, name = artifact_file.replace("\\", "/").rpartition("/")
        with tempfile.TemporaryDirectory(prefix="pcs-artifact-") as tmp:
            local = os.path.join(tmp, name)
            with open(local, "wb") as fh:
                fh.write(data)
            self.client.log_artifact(run_id, local, directory or None)

    # -- replay and portability --
    def find_runs_by_tag(self, key: str, value: str) -> list[MlflowRun]:
        """Every active run of every experiment whose tag ``key`` equals ``value``."""
        if "'" in value or "`" in key:
            raise StoreError(
                f"Cannot search {self.tracking_uri!r} for tag {key!r} = {value!r}: quotes are "
                "not allowed in pcs's tag searches.",
                self.tracking_uri,
            )
        return list(self.iter_runs(f"tags.`{key}` = '{value}'", ["attributes.start_time ASC"]))

    def experiment_exists(self, experiment_id: str) -> bool:
        """True when the store has an active experiment with this id."""
        return str(experiment_id) in self.experiment_ids()

    def log_batch_at(
        self,
        run_id: str,
        *,
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        metrics: Mapping[str, float] | None = None,
        timestamp: int | None = None,
    ) -> None:
        """Like :meth:`log_batch`, with the metrics stamped at ``timestamp`` (step 0)."""
        from mlflow.entities import Metric, Param, RunTag

        ts = timestamp if timestamp is not None else now_ms()
        self.client.log_batch(
            self.mlflow_id(run_id),
            metrics=[Metric(k, float(v), ts, 0) for k, v in (metrics or {}).items()],
            params=[Param(k, str(v)) for k, v in (params or {}).items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        )

    def delete_tag(self, run_id: str, key: str) -> None:
        """Remove the tag ``key`` from a run."""
        self.client.delete_tag(self.mlflow_id(run_id), key)

    def delete_run(self, run_id: str) -> None:
        """Mark a run deleted (MLflow's soft delete; searches no longer return it)."""
        self.client.delete_run(self.mlflow_id(run_id))


def probe_store(uri: str, timeout: float = 3.0) -> str | None:
    """Why the store ``uri`` cannot be read right now (None: it may be), without creating it.

    A SQLite file or local directory that does not exist is reported, never
    created; an ``http(s)://`` server that refuses or does not answer a TCP
    connection within ``timeout`` seconds is reported (MLflow's own client
    would retry for minutes).
    """
    parsed = urlparse(uri)
    if uri.startswith("sqlite:"):
        path = _sqlite_path(uri)
        if path and not os.path.exists(path):
            return f"there is no MLflow store at {path!r} (nothing was recorded there yet)"
        return None
    if parsed.scheme in ("http", "https"):
        import socket

        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname or "localhost", port), timeout).close()
        except OSError as exc:
            return f"the tracking server {uri!r} is unreachable ({exc})"
        return None
    local = _local_dir(uri)
    if local is not None and not local.exists():
        return f"there is no MLflow store at {str(local)!r} (nothing was recorded there yet)"
    return None


def _assigns_ids(uri: str) -> bool:
    """True for a SQLite file store: pcs makes the run ids (see Backend.new_run_id)."""
    return bool(uri.startswith("sqlite:") and _sqlite_path(uri))


def _open_client(uri: str) -> Any:
    """A stock MlflowClient on ``uri`` whose store is opened (created, migrated) now.

    On a SQLite file the first touch — when MLflow creates or migrates the
    schema — is serialized across processes by an exclusive lock on a file
    beside the database (``<db>.pcs-lock``): MLflow's own schema creation is
    not safe when several processes start on a new database together. A
    database that already has its schema is opened under a shared lock, so
    processes opening an existing store never wait for one another.
    """
    from mlflow.tracking import MlflowClient

    path = _sqlite_path(uri) if uri.startswith("sqlite:") else ""
    if not path:
        return MlflowClient(tracking_uri=uri)
    import fcntl

    lock_path = f"{path}.pcs-lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # no process is creating the schema now
        if not _has_schema(path):
            fcntl.flock(fd, fcntl.LOCK_EX)  # converted: this process may create it
        client = MlflowClient(tracking_uri=uri)  # MLflow opens the store: creates/migrates
        client.search_experiments(max_results=1)
    finally:
        os.close(fd)  # releases the lock
    return client


def _has_schema(path: str) -> bool:
    """Whether the SQLite file at ``path`` has a completed MLflow schema (an alembic
    revision recorded), read without creating the file."""
    import sqlite3

    if not os.path.exists(path):
        return False
    try:
        db = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=10)
        try:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return False
    return bool(row and row[0])


def _detect_mode(backend: Backend) -> str:
    """Use the SQLite fast path only on a SQLite store whose schema pcs knows."""
    if not backend.tracking_uri.startswith("sqlite:") or not _sqlite_path(backend.tracking_uri):
        backend.client  # noqa: B018 - open the store now, so errors surface here
        return "client"
    backend.client.search_experiments(max_results=1)  # creates/migrates the schema (MLflow)
    problem = SqliteSink.schema_problem(backend)
    if problem:
        _log.warning("pcs: %s; writing through the MLflow client instead (slower).", problem)
        return "client"
    return "sqlite"


def _sqlite_path(uri: str) -> str:
    """The database file of a ``sqlite:///path`` URI ("" for an in-memory database)."""
    return unquote(urlparse(uri).path)[1:]


def _local_dir(uri: str) -> Path | None:
    """The local directory of a ``file:`` URI or plain path; None for remote stores."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(uri)
    return None


_RUN_COLUMNS = (
    "run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id", "status",
    "start_time", "end_time", "deleted_time", "source_version", "lifecycle_stage",
    "artifact_uri", "experiment_id",
)
_EXPECTED_COLUMNS = {
    "runs": set(_RUN_COLUMNS),
    "tags": {"key", "value", "run_uuid"},
    "params": {"key", "value", "run_uuid"},
    "metrics": {"key", "value", "timestamp", "run_uuid", "step", "is_nan"},
    "latest_metrics": {"key", "value", "timestamp", "step", "is_nan", "run_uuid"},
    "experiments": {"experiment_id", "artifact_location", "lifecycle_stage"},
}


#: Records set aside by a sink, by the reason they cannot be delivered.
Rejected = dict[str, list[list[Any]]]


class _ExperimentGate:
    """Sets aside the records of runs whose experiment the store lacks (or has deleted).

    Such records can never be delivered as they are, but they are not dropped:
    the sink returns them, and the writer keeps them in a journal for
    ``pcs recover`` once the experiment is restored.
    """

    def __init__(self, problem_of: Callable[[str], str | None]) -> None:
        self._problem_of = problem_of
        self._good: set[str] = set()
        #: run id -> why its records cannot be delivered
        self._bad_runs: dict[str, str] = {}

    def split(self, records: list[list[Any]]) -> tuple[list[list[Any]], Rejected]:
        good = self._good
        bad = self._bad_runs
        for record in records:
            if record[0] in ("R", "T"):
                experiment = str(record[2])
                if experiment not in good:
                    problem = self._problem_of(experiment)
                    if problem is None:
                        good.add(experiment)
                    else:
                        bad[str(record[1])] = problem
        if not bad:
            return records, {}
        keep: list[list[Any]] = []
        rejected: Rejected = {}
        for record in records:
            reason = bad.get(record[1]) if record[0] != "K" and len(record) > 1 else None
            if reason is None:
                keep.append(record)
            else:
                rejected.setdefault(reason, []).append(record)
        if len(bad) > 100_000:
            bad.clear()
        return keep, rejected


class SqliteSink:
    """Writes batches straight into MLflow's SQLite schema, many runs per transaction.

    The rows are exactly those MLflow's own ``SqlAlchemyStore`` writes (same
    tables, columns and defaults), so stock MLflow reads them as its own. It is
    used only when the database's schema revision equals the head revision of
    the installed MLflow and every expected column exists; otherwise pcs falls
    back to :class:`ClientSink`. Every statement is idempotent (``INSERT OR
    IGNORE`` / upserts), so a batch delivered twice — after a crash, by
    recovery — changes nothing the second time.
    """

    RETRIES = 8

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.materializer = Materializer()
        self.connection = _connect(backend.tracking_uri)
        self._locations: dict[str, str] = {}
        self._run_artifacts: dict[str, str] = {}
        self._local_dirs: dict[str, str | None] = {}
        self._files_pool: Any = None
        self.gate = _ExperimentGate(self._experiment_problem)

    def reopen(self) -> None:
        """A new database connection (the writer's retry after repeated failures)."""
        old, self.connection = self.connection, _connect(self.backend.tracking_uri)
        try:
            old.close()
        except sqlite3.Error:
            pass

    def _experiment_problem(self, experiment_id: str) -> str | None:
        """Why runs cannot go into ``experiment_id`` (None: they can)."""
        uri = self.backend.tracking_uri
        try:
            key = int(experiment_id)
        except ValueError:
            return (f"{experiment_id!r} is not an experiment id of the tracking store {uri!r} "
                    "(MLflow numbers the experiments of a SQLite store)")
        row = self.connection.execute(
            "SELECT artifact_location, lifecycle_stage FROM experiments WHERE experiment_id = ?",
            (key,),
        ).fetchone()
        if row is None:
            return f"the tracking store {uri!r} has no experiment with id {experiment_id!r}"
        if row[1] != "active":
            return f"experiment {experiment_id!r} of the tracking store {uri!r} is deleted"
        self._locations[experiment_id] = str(row[0]).rstrip("/")
        return None

    @staticmethod
    def schema_problem(backend: Backend) -> str | None:
        """Why the fast path cannot be used on this database (None: it can)."""
        try:
            from mlflow.store.db.utils import _get_latest_schema_revision

            head = _get_latest_schema_revision()  # type: ignore[no-untyped-call]
        except Exception as exc:  # a future MLflow without this helper
            return f"cannot read MLflow's schema revision ({exc})"
        connection = _connect(backend.tracking_uri)
        try:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
            if row is None or row[0] != head:
                return (
                    f"the database schema revision {row and row[0]!r} differs from the "
                    f"installed MLflow's {head!r}"
                )
            for table, expected in _EXPECTED_COLUMNS.items():
                found = {r[1] for r in connection.execute(f"PRAGMA table_info({table})")}
                if not expected <= found:
                    return f"table {table!r} lacks columns {sorted(expected - found)}"
        except sqlite3.Error as exc:
            return f"cannot inspect the database ({exc})"
        finally:
            connection.close()
        return None

    def deliver(self, records: list[list[Any]]) -> Rejected:
        """Write a batch: artifact files and rows at once, committed after the files.

        The artifact files are written by a helper thread while this one runs
        the SQL (both release the GIL for their system calls and SQLite work);
        the transaction commits only once every file is written, so a run is
        never visible in MLflow without its artifacts. Returns the records set
        aside because their experiment does not exist.
        """
        records, rejected = self.gate.split(records)
        batch = self.materializer.materialize(records)
        local, remote = self._place_artifacts(batch)
        files_written = self._write_files(local)
        try:
            for attempt in range(self.RETRIES):
                try:
                    self._transaction(batch, files_written)
                    break
                except sqlite3.OperationalError as exc:
                    text = str(exc).lower()
                    if ("locked" not in text and "busy" not in text) or \
                            attempt == self.RETRIES - 1:
                        raise
                    time.sleep(min(2.0, 0.01 * 2**attempt) * (0.5 + random.random()))  # noqa: S311
        finally:
            files_written()  # never leave the helper writing behind a failed batch
        for run_id, path, data in remote:  # remote artifact stores need the run to exist
            self.backend.log_artifact_bytes(run_id, path, data, resolved=True)
        return rejected

    def _write_files(self, files: list[tuple[str, bytes, bool]]) -> Callable[[], None]:
        """Start writing ``files`` in the helper thread; return the wait for it (re-raising)."""
        if not files:
            return _nothing
        try:
            if self._files_pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._files_pool = ThreadPoolExecutor(1, thread_name_prefix="pcs-artifacts")
            future: Future[None] = self._files_pool.submit(_write_files, files)
        except RuntimeError:  # the interpreter is shutting down: no new threads
            _write_files(files)
            return _nothing
        return future.result

    def _transaction(self, batch: Batch, before_commit: Callable[[], None] = lambda: None
                     ) -> None:
        con = self.connection
        con.execute("BEGIN IMMEDIATE")
        try:
            if batch.runs:
                con.executemany(
                    "INSERT OR IGNORE INTO runs (run_uuid, name, source_type, source_name, "
                    "entry_point_name, user_id, status, start_time, end_time, deleted_time, "
                    "source_version, lifecycle_stage, artifact_uri, experiment_id) "
                    "VALUES (?, ?, 'UNKNOWN', '', '', ?, ?, ?, ?, NULL, '', 'active', ?, ?)",
                    [
                        (
                            run_id,
                            run.name,
                            batch.tags.get((run_id, "mlflow.user"), "unknown"),
                            run.status,
                            run.start_ms,
                            run.end_ms,
                            self._artifact_uri(run_id, run.experiment_id),
                            int(run.experiment_id),
                        )
                        for run_id, run in batch.runs.items()
                    ],
                )
                missing_names = [
                    (run_id, run.name) for run_id, run in batch.runs.items()
                    if (run_id, RUN_NAME_TAG) not in batch.tags and run.name
                ]
                con.executemany(
                    "INSERT OR IGNORE INTO tags (key, value, run_uuid) VALUES (?, ?, ?)",
                    [(RUN_NAME_TAG, name, run_id) for run_id, name in missing_names],
                )
            if batch.tags:
                con.executemany(
                    "INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?) "
                    "ON CONFLICT(key, run_uuid) DO UPDATE SET value = excluded.value",
                    [(k, v, r) for (r, k), v in batch.tags.items()],
                )
            if batch.params:
                con.executemany(
                    "INSERT OR IGNORE INTO params (key, value, run_uuid) VALUES (?, ?, ?)",
                    [(k, v, r) for (r, k), v in batch.params.items()],
                )
            if batch.metrics:
                rows = [_metric_row(m) for m in batch.metrics]
                con.executemany(
                    "INSERT OR IGNORE INTO metrics (key, value, timestamp, run_uuid, step, "
                    "is_nan) VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                con.executemany(
                    "INSERT INTO latest_metrics (key, value, timestamp, run_uuid, step, is_nan) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(key, run_uuid) DO UPDATE SET "
                    "value = excluded.value, timestamp = excluded.timestamp, "
                    "step = excluded.step, is_nan = excluded.is_nan "
                    "WHERE (excluded.step, excluded.timestamp, excluded.value) > "
                    "(latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)",
                    rows,
                )
            if batch.ends:
                con.executemany(
                    "UPDATE runs SET status = ?, end_time = ? WHERE run_uuid = ? "
                    "AND status = 'RUNNING'",
                    [(status, end, run_id) for run_id, (status, end) in batch.ends.items()],
                )
            before_commit()
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def _artifact_uri(self, run_id: str, experiment_id: str) -> str:
        location = self._locations.get(experiment_id)
        if location is None:
            row = self.connection.execute(
                "SELECT artifact_location FROM experiments WHERE experiment_id = ?",
                (int(experiment_id),),
            ).fetchone()
            if row is None:
                raise StoreError(
                    f"Experiment {experiment_id!r} does not exist in {self.backend.tracking_uri}.",
                    self.backend.tracking_uri,
                )
            location = str(row[0]).rstrip("/")
            self._locations[experiment_id] = location
        uri = f"{location}/{run_id}/artifacts"
        self._run_artifacts[run_id] = uri
        return uri

    def _place_artifacts(
        self, batch: Batch
    ) -> tuple[list[tuple[str, bytes, bool]], list[tuple[str, str, bytes]]]:
        """(local files as (path, data, run is new), artifacts of remote stores)."""
        local: list[tuple[str, bytes, bool]] = []
        remote: list[tuple[str, str, bytes]] = []
        new_runs = batch.runs
        for run_id, path, data in batch.artifacts:
            directory = self._local_artifact_dir(run_id, batch)
            if directory is None:
                remote.append((run_id, path, data))
            else:
                local.append((os.path.join(directory, path), data, run_id in new_runs))
        if len(self._run_artifacts) > 10_000:
            self._run_artifacts.clear()
        return local, remote

    def _local_artifact_dir(self, run_id: str, batch: Batch) -> str | None:
        uri = self._run_artifacts.get(run_id)
        if uri is None:
            new = batch.runs.get(run_id)
            if new is not None:
                uri = self._artifact_uri(run_id, new.experiment_id)
            else:
                row = self.connection.execute(
                    "SELECT artifact_uri FROM runs WHERE run_uuid = ?", (run_id,)
                ).fetchone()
                if row is None:
                    raise StoreError(
                        f"Run {run_id} does not exist in {self.backend.tracking_uri}.",
                        self.backend.tracking_uri,
                    )
                uri = self._run_artifacts[run_id] = str(row[0])
        local = self._local_dirs.get(uri)
        if local is None and uri not in self._local_dirs:
            path = _local_dir(uri)
            local = self._local_dirs[uri] = str(path) if path is not None else None
            if len(self._local_dirs) > 10_000:
                self._local_dirs.clear()
        return local


def _nothing() -> None:
    return None


def _write_files(files: list[tuple[str, bytes, bool]]) -> None:
    """Write artifact files (``<run>/artifacts/...``), creating their directories.

    Plain system calls from one thread: creating files is bound by the file
    system's directory locks, and parallel writers measured slower.
    """
    made: set[str] = set()
    for path, data, fresh in files:
        parent = os.path.dirname(path)
        if parent not in made:
            _make_dir(parent, fresh)
            made.add(parent)
        _write_file(path, data)


def _make_dir(path: str, fresh: bool) -> None:
    """Create ``path`` and its parents; ``fresh``: its run is new (``<run>`` is missing)."""
    if fresh:
        try:  # a new run's <run>/artifacts: create <run>, then <run>/artifacts
            os.mkdir(os.path.dirname(path))
            os.mkdir(path)
            return
        except OSError:
            pass
    os.makedirs(path, exist_ok=True)


def _write_file(path: str, data: bytes) -> None:
    """Write ``data`` as the whole file ``path`` (a torn file is rewritten whole by recovery)."""
    # O_NOFOLLOW: a symlink planted at an artifact's place is never written through.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _metric_row(metric: tuple[str, str, float, int, int]) -> tuple[Any, ...]:
    run_id, key, value, timestamp, step = metric
    if math.isnan(value):
        return (key, 0.0, timestamp, run_id, step, 1)
    if math.isinf(value):
        value = math.copysign(1.7976931348623157e308, value)
    return (key, value, timestamp, run_id, step, 0)


def _connect(uri: str) -> sqlite3.Connection:
    """A connection for pcs's own writes: autocommit mode, WAL, a generous busy timeout."""
    connection = sqlite3.connect(
        _sqlite_path(uri), timeout=1.0, isolation_level=None, check_same_thread=False
    )
    busy_ms = settings.SQLITE_BUSY_TIMEOUT_MS.get()
    connection.execute(f"PRAGMA busy_timeout = {busy_ms}")
    try:
        connection.execute("PRAGMA journal_mode = WAL")
    except sqlite3.OperationalError as exc:  # another process is switching it right now
        _log.debug("pcs: could not switch %s to WAL: %s", uri, exc)
    connection.execute("PRAGMA synchronous = NORMAL")
    return connection


class ClientSink:
    """Delivers batches through the stock MLflow client (any store, e.g. an HTTP server).

    Runs are recorded under local ids (see :meth:`Backend.new_run_id`): this
    sink creates each run through ``MlflowClient.create_run`` — tagged
    ``pcs.local_run_id`` — and maps the local id to MLflow's in
    ``backend.run_ids``, for every later record and for ``mlflow.parentRunId``
    tags. After a failed delivery, and in recovery, a run is first looked up by
    that tag, so a run whose creation succeeded but went unacknowledged is not
    created twice.
    """

    def __init__(self, backend: Backend, recovering: bool = False) -> None:
        self.backend = backend
        self.materializer = Materializer()
        #: recovery: every run is looked up (by its local id) before it is created, and
        #: only runs still RUNNING are ended (a finished run's status never changes)
        self.recovering = recovering
        self.search_first = recovering
        #: when the last request to the store completed (the writer watches for stalls)
        self.progress = 0.0
        #: a SQLite store written through the client: pcs's own hex ids are local ids too
        self.hex_local = backend.assigns_ids
        self.gate = _ExperimentGate(self._experiment_problem)

    def _experiment_problem(self, experiment_id: str) -> str | None:
        """Why runs cannot go into ``experiment_id`` (None: they can); raises if unreachable."""
        from mlflow.exceptions import MlflowException

        uri = self.backend.tracking_uri
        try:
            experiment = self.backend.client.get_experiment(experiment_id)
        except MlflowException as exc:
            code = getattr(exc, "error_code", "")
            if _is_not_found(exc) or code == "INVALID_PARAMETER_VALUE":
                return f"the tracking store {uri!r} has no experiment with id {experiment_id!r}"
            raise
        finally:
            self.progress = time.monotonic()
        if experiment.lifecycle_stage != "active":
            return f"experiment {experiment_id!r} of the tracking store {uri!r} is deleted"
        return None

    def deliver(self, records: list[list[Any]]) -> Rejected:
        try:
            records, rejected = self.gate.split(records)
            self._deliver(records)
        except Exception:
            self.search_first = True  # a run may have been created without our knowing
            raise
        self.search_first = self.recovering
        return rejected

    def _is_local(self, run_id: str) -> bool:
        return run_id.startswith(LOCAL_ID_PREFIX) or self.hex_local

    def _deliver(self, records: list[list[Any]]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        batch = self.materializer.materialize(records)
        client = self.backend.client
        per_run: dict[str, tuple[list[Any], list[Any], dict[str, str]]] = {}
        for (run_id, key), value in batch.tags.items():
            per_run.setdefault(run_id, ([], [], {}))[2][key] = value
        for (run_id, key), value in batch.params.items():
            per_run.setdefault(run_id, ([], [], {}))[1].append(Param(key, value))
        for run_id, name, number, timestamp, step in batch.metrics:
            per_run.setdefault(run_id, ([], [], {}))[0].append(
                Metric(name, number, timestamp, step)
            )
        for run_id, new in batch.runs.items():  # in record order: parents before children
            tags = per_run.get(run_id, ([], [], {}))[2]
            if self._is_local(run_id) and run_id not in self.backend.run_ids:
                self._create(run_id, new, tags)
                tags.clear()  # given at creation
        for run_id, (metrics, params, tag_map) in per_run.items():
            real = self._real(run_id)
            rows = [RunTag(k, self._real(v) if k == PARENT_RUN_ID_TAG else v)
                    for k, v in tag_map.items()]
            for start in range(0, max(len(metrics), len(params), len(rows)), 100):
                client.log_batch(
                    real,
                    metrics=metrics[start:start + 100],
                    params=params[start:start + 100],
                    tags=rows[start:start + 100],
                )
                self.progress = time.monotonic()
        for run_id, path, data in batch.artifacts:
            self.backend.log_artifact_bytes(self._real(run_id), path, data, resolved=True)
            self.progress = time.monotonic()
        for run_id, run in batch.runs.items():
            if run.end_ms is not None:
                _terminate(client, self._real(run_id), run.status, run.end_ms)
                self.progress = time.monotonic()
        for run_id, (status, end) in batch.ends.items():
            real = self._real(run_id)
            if self.recovering and client.get_run(real).info.status != "RUNNING":
                continue  # ended already (its end arrived before): keep that status
            _terminate(client, real, status, end)
            self.progress = time.monotonic()

    def _create(self, local: str, new: NewRun, tags: dict[str, str]) -> None:
        found = self._find(local, new.experiment_id) if self.search_first else None
        if found is None:
            parent = tags.get(PARENT_RUN_ID_TAG)
            created = self.backend.client.create_run(
                new.experiment_id,
                start_time=new.start_ms,
                tags={
                    **tags,
                    **({PARENT_RUN_ID_TAG: self._real(parent)} if parent else {}),
                    LOCAL_RUN_ID_TAG: local,
                },
                run_name=new.name,
            )
            found = created.info.run_id
            self.progress = time.monotonic()
        self.backend.run_ids[local] = found

    def _real(self, run_id: str) -> str:
        """The MLflow id of a run created earlier (by this process or a dead one)."""
        found = self.backend.run_ids.get(run_id)
        if found is not None:
            return found
        if not self._is_local(run_id):
            return run_id
        found = self._find(run_id, None)
        if found is None:
            if run_id.startswith(LOCAL_ID_PREFIX):
                raise RunNotFoundError(run_id, self.backend.tracking_uri)
            found = run_id  # an id MLflow made (a run pcs did not create)
        self.backend.run_ids[run_id] = found
        return found

    def _find(self, local: str, experiment_id: str | None) -> str | None:
        """The MLflow id of the run tagged ``pcs.local_run_id`` = ``local``, if any."""
        client = self.backend.client
        if experiment_id is not None:
            experiments = [experiment_id]
        else:
            experiments = [e.experiment_id for e in client.search_experiments(max_results=1000)]
        runs = client.search_runs(
            experiments, filter_string=f"tags.`{LOCAL_RUN_ID_TAG}` = '{local}'", max_results=1
        )
        return str(runs[0].info.run_id) if runs else None


# -- process lifecycle ----------------------------------------------------------------
_lifecycle_done: set[str] = set()


def _end_open_runs_at_exit() -> None:
    """At normal exit, no run of this process stays RUNNING."""
    if "exit" in _lifecycle_done:
        return
    _lifecycle_done.add("exit")
    import atexit

    def end_all() -> None:
        for backend in list(_backends.values()):
            for run in list(backend.open_runs.values()):
                # A run still open at exit was interrupted (a daemon thread, an
                # unfinished block or call) — except an explicit Run() the program
                # never ended, which ends FINISHED as MLflow's own runs do.
                status = "KILLED" if getattr(run, "_interrupted_at_exit", True) else "FINISHED"
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
            from pcs.recovery import recover

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
                target=end_open_runs, args=("KILLED", 5.0), name="pcs-sigterm", daemon=True
            )
            worker.start()
            worker.join(8.0)
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
    for backend in list(_backends.values()):
        writer = backend._writer
        if writer is not None:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            done = writer.close(remaining) and done
    return done


def flush_all(timeout: float | None = None) -> bool:
    """Wait until every record submitted to any store so far is delivered."""
    deadline = None if timeout is None else time.monotonic() + timeout
    done = True
    for backend in list(_backends.values()):
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        done = backend.flush(remaining) and done
    return done


def end_open_runs(status: str, timeout: float | None = None) -> int:
    """End every run this process started and did not end; deliver everything. Returns count."""
    count = 0
    for backend in list(_backends.values()):
        for run in list(backend.open_runs.values()):
            try:
                run.end(status)
                count += 1
            except Exception as exc:
                _log.warning("pcs: could not end run %s: %s", getattr(run, "identifier", "?"),
                             exc)
        backend.flush(timeout)
    return count


def _terminate(client: Any, run_id: str, status: str, end_ms: int) -> None:
    """``set_terminated`` without what it adds on REST stores for interactive use:
    an extra ``get_run`` round trip and two "View run" lines on stdout per run."""
    serialized = client if isinstance(client, _Serialized) else None
    inner = serialized._client if serialized is not None else client
    store = getattr(getattr(inner, "_tracking_client", None), "store", None)
    update = getattr(store, "update_run_info", None)
    if update is None or serialized is None:
        client.set_terminated(run_id, status=status, end_time=end_ms)
        return
    from mlflow.entities import RunStatus

    with serialized._lock:
        update(run_id, run_status=RunStatus.from_string(status), end_time=end_ms,
               run_name=None)


class _Serialized:
    """An MlflowClient whose calls run one at a time.

    One MlflowClient shared by many threads exhausts SQLAlchemy's connection
    pool (MLflow's default pool: 5 + 10 overflow, 30 s timeout) and SQLite
    allows a single writer anyway, so pcs funnels the calls of a process
    through one lock instead of letting threads time out.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.RLock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        lock = self._lock

        def call(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return attr(*args, **kwargs)

        return call


def _is_not_found(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()
