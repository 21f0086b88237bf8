"""The backend seam: :class:`Backend`, all of pcs's MLflow access for one tracking URI.

A :class:`Backend` wraps a stock ``mlflow.tracking.MlflowClient`` (never
MLflow's fluent, thread-local ``start_run`` / ``active_run`` state) and owns
the store's :class:`~pcs._writer.Writer` (or the delivery agent's link), whose
sink it makes: :class:`~pcs._store.sqlite_sink.SqliteSink` or ``ClientSink``.
Backends are cached per URI, so every Run of a process that talks to the same
store shares one client. MLflow is imported only when a backend first needs it.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from pcs import settings
from pcs._journal import Journal, default_directory
from pcs._store.agent_link import make_writer
from pcs._store.client_sink import ClientContext, ClientSink, is_not_found, open_client
from pcs._store.sqlite_sink import SqliteSink
from pcs._store.uri import LOCAL_ID_PREFIX, assigns_ids, current_tracking_uri, sqlite_path
from pcs._writer import Sink, Writer
from pcs.exceptions import RunNotFoundError, StoreError

if TYPE_CHECKING:
    from mlflow.entities import Run as MlflowRun
    from mlflow.tracking import MlflowClient

__all__ = [
    "Backend",
    "all_backends",
    "get_backend",
    "now_ms",
    "on_writer_started",
    "registry_lock",
    "renew_after_fork",
    "reset_backends",
]

_log = logging.getLogger("pcs")

_lock = threading.Lock()
_backends: dict[str, Backend] = {}

#: Run ids are time-ordered UUIDv7s (RFC 9562): 48 bits of milliseconds, then a counter that
#: starts at 73 random bits and counts up (a process never repeats an id, its ids of one
#: millisecond increase) with next(), which is atomic. A forked child starts another.
_ids = random.Random()  # noqa: S311 - unique ids, not secrets
_UUID7 = 7 << 76 | 2 << 62  # the version (7) and variant bits, below 48 bits of milliseconds
_id_counter = itertools.count(_UUID7 | _ids.getrandbits(12) << 64 | _ids.getrandbits(61))

#: called as ``hook(journaled)`` when a backend starts its writer (see on_writer_started)
_writer_started: list[Callable[[bool], None]] = []


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


def all_backends() -> list[Backend]:
    """Every backend of this process (a copy: safe to iterate while others are made)."""
    return list(_backends.values())


def registry_lock() -> threading.Lock:
    """The lock held while a backend is made (the fork hooks take it around ``fork()``)."""
    return _lock


def renew_after_fork() -> list[Any]:
    """In a forked child: a fresh registry lock and id sequence, and every backend afresh.

    Returns what the backends inherited from the parent (its MLflow clients): the
    caller keeps it referenced, never used nor closed.
    """
    global _lock, _id_counter
    _ids.seed()  # never repeat the parent's id sequence
    _id_counter = itertools.count(_UUID7 | _ids.getrandbits(12) << 64 | _ids.getrandbits(61))
    _lock = threading.Lock()
    return [backend.forget_after_fork() for backend in _backends.values()]


def on_writer_started(hook: Callable[[bool], None]) -> None:
    """Call ``hook(journaled)`` whenever a backend starts its writer.

    The hook runs after the writer registered its own exit handler (so an exit
    handler the hook registers runs before the writer's); ``journaled`` tells
    whether the writer keeps a journal. :mod:`pcs._store.lifecycle` installs
    the process's exit, SIGTERM and recovery handling through it.
    """
    _writer_started.append(hook)


def now_ms() -> int:
    """The current time in milliseconds since the epoch, as MLflow stores it."""
    return time.time_ns() // 1_000_000


class Backend:
    """All MLflow access for one tracking URI."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._client: MlflowClient | None = None
        self._client_lock = threading.RLock()
        #: the write-behind writer once started, else None (the hot path reads this
        #: attribute and falls back to :attr:`writer`, which starts it)
        self.started_writer: Writer | None = None
        self._mode: str | None = None
        #: local run ids (client stores) -> the MLflow run ids the writer created them as
        self.run_ids: dict[str, str] = {}
        #: SQLite stores: pcs makes the MLflow run ids itself (see new_run_id)
        self.assigns_ids = assigns_ids(tracking_uri)
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
                        client = open_client(self.tracking_uri)
                    except Exception as exc:
                        raise StoreError(
                            f"Cannot open the MLflow tracking store {self.tracking_uri!r}: {exc}. "
                            "Check MLFLOW_TRACKING_URI (a sqlite:/// path must be in an "
                            "existing, writable directory; a server must be running).",
                            self.tracking_uri,
                        ) from exc
                    self._client = client
        return client

    @property
    def client_lock(self) -> threading.RLock:
        """Held while the client, the mode or the writer is made (and around ``fork()``)."""
        return self._client_lock

    def forget_after_fork(self) -> Any:
        """In a forked child: start afresh; returns the parent's client (never to be used).

        Database connections, client state, queued records and open runs belong
        to the parent process.
        """
        inherited = self._client
        self._client = None
        self._client_lock = threading.RLock()
        self.open_runs = {}
        if self.started_writer is not None:
            self.started_writer.after_fork_in_child()
        return inherited

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
        writer = self.started_writer
        if writer is None:
            with self._client_lock:
                writer = self.started_writer
                if writer is None:
                    journal = None
                    if settings.JOURNAL.get():
                        journal = Journal(default_directory(), self.tracking_uri)
                    writer = make_writer(self.make_sink, journal, self.tracking_uri)
                    self.started_writer = writer
                    for hook in _writer_started:
                        hook(journal is not None)
        return writer

    def make_sink(self, recovering: bool = False) -> Sink:
        """A new sink delivering to this store (``recovering``: for :mod:`pcs._store.recovery`).

        A sink gets only what it needs from this backend, never the backend itself.
        """
        if self.mode == "sqlite":
            return SqliteSink(self.tracking_uri, self._upload)
        context = ClientContext(self.tracking_uri, self._get_client, self.run_ids,
                                self.assigns_ids, self._upload)
        return ClientSink(context, recovering)

    def _get_client(self) -> MlflowClient:
        return self.client

    def _upload(self, run_id: str, artifact_file: str, data: bytes) -> None:
        self.log_artifact_bytes(run_id, artifact_file, data, resolved=True)

    def submit(self, *records: list[Any], sync: bool = True) -> None:
        """Journal and enqueue records for delivery (see :mod:`pcs._writer`)."""
        writer = self.started_writer
        if writer is None:
            writer = self.writer
        writer.submit(records, sync)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted to this store so far is delivered."""
        writer = self.started_writer
        if writer is None or writer.pending == 0:
            return True
        return writer.flush(timeout)

    def new_run_id(self, experiment_id: str) -> str:
        """An id for a new run, made here without asking the store (the caller's hot path).

        On a SQLite store it is the MLflow run id itself (32 hex digits, a
        time-ordered UUIDv7, see ``_id_counter``), and the writer inserts the run with it.
        MLflow's client cannot create a run with a given id, so for every other
        store it is a *local* id (``pcs-local-<hex>``): the writer creates the
        run and records the id MLflow gave it (:meth:`mlflow_id` resolves it).
        The store is not touched: whether the experiment exists is checked by
        the writer, at delivery.
        """
        hex_id = (time.time_ns() // 1_000_000 << 80 | next(_id_counter)).to_bytes(16, "big").hex()
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
        writer = self.started_writer
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
            if is_not_found(exc):
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

    # -- experiments by name, and paged searches (pcs.query, the CLI) ------------------
    def experiments(self) -> dict[str, str]:
        """``{experiment id: name}`` of every active experiment in the store."""
        found: dict[str, str] = {}
        token = None
        while True:
            page = self.client.search_experiments(max_results=1000, page_token=token)
            found.update((exp.experiment_id, exp.name) for exp in page)
            token = page.token
            if not token:
                return found

    def experiment_id_by_name(self, name: str, *, create: bool = False) -> str | None:
        """The id of the active experiment called ``name``; None if there is none.

        ``create=True`` creates it instead (another process creating it at the
        same moment is fine: its id is returned). A deleted experiment of that
        name is an error saying how to restore it.
        """
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(name)
        if experiment is None and create:
            try:
                return str(self.client.create_experiment(name))
            except MlflowException as exc:
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise StoreError(
                        f"Creating the experiment {name!r} in {self.tracking_uri!r} failed: "
                        f"{exc}", self.tracking_uri,
                    ) from exc
        if experiment is None:
            return None
        if experiment.lifecycle_stage != "active":
            raise StoreError(
                f"The experiment {name!r} (id {experiment.experiment_id}) of "
                f"{self.tracking_uri!r} is deleted; restore it (`mlflow experiments restore "
                f"--experiment-id {experiment.experiment_id}`) or use another name.",
                self.tracking_uri,
            )
        return str(experiment.experiment_id)

    def experiment_name(self, experiment_id: str) -> str | None:
        """The name of experiment ``experiment_id``; None if the store has no such experiment."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_experiment(str(experiment_id)).name)
        except MlflowException:
            return None

    def search_page(
        self,
        experiment_ids: list[str],
        filter_string: str,
        order_by: list[str],
        max_results: int,
        page_token: str | None = None,
    ) -> tuple[list[MlflowRun], str | None]:
        """One page of ``MlflowClient.search_runs`` (after a flush): runs and the next token."""
        self.settle()
        page = self.client.search_runs(
            experiment_ids, filter_string=filter_string, max_results=max_results,
            order_by=order_by, page_token=page_token,
        )
        return list(page), page.token or None

    def iter_search(
        self,
        experiment_ids: list[str] | None,
        filter_string: str,
        order_by: list[str],
        limit: int | None = None,
    ) -> Iterator[MlflowRun]:
        """Runs matching ``filter_string`` in ``experiment_ids`` (None: every experiment),
        page by page, at most ``limit`` of them."""
        ids = self.experiment_ids() if experiment_ids is None else experiment_ids
        if not ids:
            return
        token: str | None = None
        left = limit
        while left is None or left > 0:
            size = 1000 if left is None else min(1000, left)
            page, token = self.search_page(ids, filter_string, order_by, size, token)
            yield from page
            if left is not None:
                left -= len(page)
            if not token:
                return

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


def _detect_mode(backend: Backend) -> str:
    """Use the SQLite fast path only on a SQLite store whose schema pcs knows."""
    if not backend.tracking_uri.startswith("sqlite:") or not sqlite_path(backend.tracking_uri):
        backend.client  # noqa: B018 - open the store now, so errors surface here
        return "client"
    backend.client.search_experiments(max_results=1)  # creates/migrates the schema (MLflow)
    problem = SqliteSink.schema_problem(backend.tracking_uri)
    if problem:
        _log.warning("pcs: %s; writing through the MLflow client instead (slower).", problem)
        return "client"
    return "sqlite"

