"""The client path: the MLflow client of a store, and the sink that delivers through it.

:func:`open_client` opens a store's stock ``MlflowClient`` (schema creation
serialized across processes) wrapped in :class:`Serialized`, which funnels a
process's calls through one lock. :class:`ClientSink` delivers batches through
that client to any store (e.g. an HTTP server); it is given a
:class:`ClientContext` — the store's URI, a getter for its client, the shared
map of local run ids and an artifact upload — never the backend itself.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

from pcs._materialize import Materializer, NewRun
from pcs._store.gate import ExperimentGate, Rejected
from pcs._store.uri import LOCAL_ID_PREFIX, sqlite_path
from pcs.conventions import INPUTS_FROM_TAG, INPUTS_TAG, LOCAL_RUN_ID_TAG, PARENT_RUN_ID_TAG
from pcs.exceptions import RunNotFoundError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = ["ClientContext", "ClientSink", "Serialized", "is_not_found", "open_client"]

#: tags whose values name runs by id (lineage): their local ids are translated at delivery
_RUN_ID_LIST_TAGS = frozenset({INPUTS_FROM_TAG, INPUTS_TAG})
_LOCAL_ID = re.compile(re.escape(LOCAL_ID_PREFIX) + r"[0-9a-f]{32}")
_ANY_ID = re.compile(r"(?:" + re.escape(LOCAL_ID_PREFIX) + r")?\b[0-9a-f]{32}\b")


@dataclass(frozen=True)
class ClientContext:
    """What a :class:`ClientSink` is given by its backend (never the backend itself)."""

    #: the store, for messages
    tracking_uri: str
    #: the store's MLflow client (opened on first call; raises StoreError if it cannot be)
    client: Callable[[], MlflowClient]
    #: local run ids -> the MLflow run ids they were created as (shared with the backend,
    #: which resolves ids through it)
    run_ids: dict[str, str]
    #: a SQLite store written through the client: pcs's own hex ids are local ids too
    hex_ids_are_local: bool
    #: stores one artifact file of a run given by its MLflow id: ``upload(run_id, path, data)``
    upload: Callable[[str, str, bytes], None]

class ClientSink:
    """Delivers batches through the stock MLflow client (any store, e.g. an HTTP server).

    Runs are recorded under local ids (see :meth:`Backend.new_run_id`): this
    sink creates each run through ``MlflowClient.create_run`` — tagged
    ``pcs.local_run_id`` — and maps the local id to MLflow's in
    ``context.run_ids``, for every later record and for ``mlflow.parentRunId``
    tags. After a failed delivery, and in recovery, a run is first looked up by
    that tag, so a run whose creation succeeded but went unacknowledged is not
    created twice.
    """

    def __init__(self, context: ClientContext, recovering: bool = False) -> None:
        self.context = context
        self.materializer = Materializer()
        #: recovery: every run is looked up (by its local id) before it is created, and
        #: only runs still RUNNING are ended (a finished run's status never changes)
        self.recovering = recovering
        self.search_first = recovering
        #: when the last request to the store completed (the writer watches for stalls)
        self.progress = 0.0
        #: a SQLite store written through the client: pcs's own hex ids are local ids too
        self.hex_local = context.hex_ids_are_local
        self.gate = ExperimentGate(self._experiment_problem)

    def _experiment_problem(self, experiment_id: str) -> str | None:
        """Why runs cannot go into ``experiment_id`` (None: they can); raises if unreachable."""
        from mlflow.exceptions import MlflowException

        uri = self.context.tracking_uri
        try:
            experiment = self.context.client().get_experiment(experiment_id)
        except MlflowException as exc:
            code = getattr(exc, "error_code", "")
            if is_not_found(exc) or code == "INVALID_PARAMETER_VALUE":
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
        client = self.context.client()
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
            if self._is_local(run_id) and run_id not in self.context.run_ids:
                self._create(run_id, new, tags)
                tags.clear()  # given at creation
        for run_id, (metrics, params, tag_map) in per_run.items():
            real = self._real(run_id)
            rows = [RunTag(k, self._tag_value(k, v)) for k, v in tag_map.items()]
            for start in range(0, max(len(metrics), len(params), len(rows)), 100):
                client.log_batch(
                    real,
                    metrics=metrics[start:start + 100],
                    params=params[start:start + 100],
                    tags=rows[start:start + 100],
                )
                self.progress = time.monotonic()
        for run_id, path, data in batch.artifacts:
            self.context.upload(self._real(run_id), path, data)
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
            created = self.context.client().create_run(
                new.experiment_id,
                start_time=new.start_ms,
                tags={
                    **{key: self._tag_value(key, value) for key, value in tags.items()},
                    LOCAL_RUN_ID_TAG: local,
                },
                run_name=new.name,
            )
            found = created.info.run_id
            self.progress = time.monotonic()
        self.context.run_ids[local] = found

    def _tag_value(self, key: str, value: str) -> str:
        """A tag's value with the local run ids it names (parent, lineage) made MLflow's."""
        if key == PARENT_RUN_ID_TAG:
            return self._real(value)
        if key in _RUN_ID_LIST_TAGS:
            pattern = _ANY_ID if self.hex_local else _LOCAL_ID
            value = pattern.sub(lambda match: self._real(match.group(0)), value)
            if key == INPUTS_FROM_TAG:  # sorted by MLflow's ids, as on a local store
                value = ",".join(sorted(value.split(",")))
            return value
        return value

    def _real(self, run_id: str) -> str:
        """The MLflow id of a run created earlier (by this process or a dead one)."""
        found = self.context.run_ids.get(run_id)
        if found is not None:
            return found
        if not self._is_local(run_id):
            return run_id
        found = self._find(run_id, None)
        if found is None:
            if run_id.startswith(LOCAL_ID_PREFIX):
                raise RunNotFoundError(run_id, self.context.tracking_uri)
            found = run_id  # an id MLflow made (a run pcs did not create)
        self.context.run_ids[run_id] = found
        return found

    def _find(self, local: str, experiment_id: str | None) -> str | None:
        """The MLflow id of the run tagged ``pcs.local_run_id`` = ``local``, if any."""
        client = self.context.client()
        if experiment_id is not None:
            experiments = [experiment_id]
        else:
            experiments = [e.experiment_id for e in client.search_experiments(max_results=1000)]
        runs = client.search_runs(
            experiments, filter_string=f"tags.`{LOCAL_RUN_ID_TAG}` = '{local}'", max_results=1
        )
        return str(runs[0].info.run_id) if runs else None


def open_client(uri: str) -> MlflowClient:
    """The MLflow client pcs uses for ``uri``: its calls serialized (see
    :class:`Serialized`), its store opened (created, migrated) now.

    On a SQLite file the first touch — when MLflow creates or migrates the
    schema — is serialized across processes by an exclusive lock on a file
    beside the database (``<db>.pcs-lock``): MLflow's own schema creation is
    not safe when several processes start on a new database together. A
    database that already has its schema is opened under a shared lock, so
    processes opening an existing store never wait for one another.
    """
    from mlflow.tracking import MlflowClient as StockClient

    path = sqlite_path(uri) if uri.startswith("sqlite:") else ""
    if not path:
        return cast("MlflowClient", Serialized(StockClient(tracking_uri=uri)))
    import fcntl

    lock_path = f"{path}.pcs-lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # no process is creating the schema now
        if not _has_schema(path):
            fcntl.flock(fd, fcntl.LOCK_EX)  # converted: this process may create it
        client = StockClient(tracking_uri=uri)  # MLflow opens the store: creates/migrates
        client.search_experiments(max_results=1)
    finally:
        os.close(fd)  # releases the lock
    return cast("MlflowClient", Serialized(client))


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


def _terminate(client: Any, run_id: str, status: str, end_ms: int) -> None:
    """``set_terminated`` without what it adds on REST stores for interactive use:
    an extra ``get_run`` round trip and two "View run" lines on stdout per run."""
    serialized = client if isinstance(client, Serialized) else None
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


class Serialized:
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


def is_not_found(exc: Exception) -> bool:
    """Whether an MLflow error says that what was asked for does not exist."""
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()
