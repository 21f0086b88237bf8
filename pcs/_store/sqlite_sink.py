"""The SQLite fast path: batches written straight into MLflow's own SQLite schema.

:class:`SqliteSink` is given only what it needs from its owner — the store's
URI and a way to upload artifacts of remote artifact stores — never the
backend itself.
"""

from __future__ import annotations

import logging
import math
import os
import random
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pcs import settings
from pcs._materialize import Batch, Materializer
from pcs._store.gate import ExperimentGate, Rejected
from pcs._store.uri import local_dir, sqlite_path
from pcs.conventions import RUN_NAME_TAG
from pcs.exceptions import StoreError

if TYPE_CHECKING:
    from concurrent.futures import Future

__all__ = ["SqliteSink", "Upload"]

_log = logging.getLogger("pcs")

#: Stores one artifact file of a run given by its MLflow id: ``upload(run_id, path, data)``.
Upload = Callable[[str, str, bytes], None]

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

    def __init__(self, tracking_uri: str, upload: Upload) -> None:
        """``upload``: stores the artifacts of runs whose artifact store is not local."""
        self.tracking_uri = tracking_uri
        self.upload = upload
        self.materializer = Materializer()
        self.connection = _connect(tracking_uri)
        self._locations: dict[str, str] = {}
        self._run_artifacts: dict[str, str] = {}
        self._local_dirs: dict[str, str | None] = {}
        self._files_pool: Any = None
        self.gate = ExperimentGate(self._experiment_problem)

    def reopen(self) -> None:
        """A new database connection (the writer's retry after repeated failures)."""
        old, self.connection = self.connection, _connect(self.tracking_uri)
        try:
            old.close()
        except sqlite3.Error:
            pass

    def _experiment_problem(self, experiment_id: str) -> str | None:
        """Why runs cannot go into ``experiment_id`` (None: they can)."""
        uri = self.tracking_uri
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
    def schema_problem(tracking_uri: str) -> str | None:
        """Why the fast path cannot be used on this database (None: it can)."""
        try:
            from mlflow.store.db.utils import _get_latest_schema_revision

            head = _get_latest_schema_revision()  # type: ignore[no-untyped-call]
        except Exception as exc:  # a future MLflow without this helper
            return f"cannot read MLflow's schema revision ({exc})"
        connection = _connect(tracking_uri)
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
            self.upload(run_id, path, data)
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
                    f"Experiment {experiment_id!r} does not exist in {self.tracking_uri}.",
                    self.tracking_uri,
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
                # a new run's directory is under its experiment's: parsed once per experiment
                base = self._local_dir(self._locations[new.experiment_id])
                return None if base is None else os.path.join(base, run_id, "artifacts")
            else:
                row = self.connection.execute(
                    "SELECT artifact_uri FROM runs WHERE run_uuid = ?", (run_id,)
                ).fetchone()
                if row is None:
                    raise StoreError(
                        f"Run {run_id} does not exist in {self.tracking_uri}.",
                        self.tracking_uri,
                    )
                uri = self._run_artifacts[run_id] = str(row[0])
        return self._local_dir(uri)

    def _local_dir(self, uri: str) -> str | None:
        """The local directory of an artifact URI (None: remote), remembered."""
        local = self._local_dirs.get(uri)
        if local is None and uri not in self._local_dirs:
            path = local_dir(uri)
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
        sqlite_path(uri), timeout=1.0, isolation_level=None, check_same_thread=False
    )
    busy_ms = settings.SQLITE_BUSY_TIMEOUT_MS.get()
    connection.execute(f"PRAGMA busy_timeout = {busy_ms}")
    try:
        connection.execute("PRAGMA journal_mode = WAL")
    except sqlite3.OperationalError as exc:  # another process is switching it right now
        _log.debug("pcs: could not switch %s to WAL: %s", uri, exc)
    connection.execute("PRAGMA synchronous = NORMAL")
    return connection

