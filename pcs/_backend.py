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
import os
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

from pcs.exceptions import RunNotFoundError, StoreError

if TYPE_CHECKING:
    from mlflow.entities import Run as MlflowRun
    from mlflow.tracking import MlflowClient

__all__ = ["Backend", "current_tracking_uri", "get_backend", "reset_backends"]

_log = logging.getLogger("pcs")

#: MLflow's own tags and limits that pcs relies on.
PARENT_RUN_ID_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
MAX_PARAM_VALUE_LENGTH = 6000
MAX_PARAM_KEY_LENGTH = 250
MAX_TAG_VALUE_LENGTH = 8000

_lock = threading.Lock()
_backends: dict[str, Backend] = {}


def current_tracking_uri() -> str:
    """The tracking URI MLflow resolves now: ``MLFLOW_TRACKING_URI`` or its default."""
    import mlflow

    return str(mlflow.get_tracking_uri())


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


def _after_fork_in_child() -> None:
    # Database connections and client state must not be shared with the parent
    # process: every backend opens its own client again on first use.
    for backend in _backends.values():
        backend._client = None
        backend._client_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def now_ms() -> int:
    """The current time in milliseconds since the epoch, as MLflow stores it."""
    return time.time_ns() // 1_000_000


class Backend:
    """All MLflow access for one tracking URI."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._client: MlflowClient | None = None
        self._client_lock = threading.Lock()

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
                        from mlflow.tracking import MlflowClient

                        client = cast(
                            "MlflowClient",
                            _Serialized(MlflowClient(tracking_uri=self.tracking_uri)),
                        )
                    except Exception as exc:
                        raise StoreError(
                            f"Cannot open the MLflow tracking store {self.tracking_uri!r}: {exc}. "
                            "Check MLFLOW_TRACKING_URI (a sqlite:/// path must be in an "
                            "existing, writable directory; a server must be running).",
                            self.tracking_uri,
                        ) from exc
                    self._client = client
        return client

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
        self.client.set_terminated(run_id, status=status, end_time=end_time or now_ms())

    def log_batch(
        self,
        run_id: str,
        *,
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        metrics: Mapping[str, float] | None = None,
        step: int = 0,
    ) -> None:
        """Log params, tags and metrics of one run in one call."""
        from mlflow.entities import Metric, Param, RunTag

        ts = now_ms()
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), ts, step) for k, v in (metrics or {}).items()],
            params=[Param(k, str(v)) for k, v in (params or {}).items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        )

    def call(self, method: str, run_id: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call ``MlflowClient.<method>(run_id, *args, **kwargs)`` (Run's pass-through)."""
        return getattr(self.client, method)(run_id, *args, **kwargs)

    def search_runs(self, experiment_ids: list[str], *args: Any, **kwargs: Any) -> Any:
        """``MlflowClient.search_runs`` on this store."""
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

        with tempfile.TemporaryDirectory(prefix="pcs-artifact-") as tmp:
            local = self.client.download_artifacts(run_id, path, tmp)
            with open(local, "rb") as fh:
                return fh.read()

    def log_artifact_bytes(self, run_id: str, artifact_file: str, data: bytes) -> None:
        """Store ``data`` as the artifact ``artifact_file`` (a relative path) of a run."""
        import tempfile

        directory, _, name = artifact_file.replace("\\", "/").rpartition("/")
        with tempfile.TemporaryDirectory(prefix="pcs-artifact-") as tmp:
            local = os.path.join(tmp, name)
            with open(local, "wb") as fh:
                fh.write(data)
            self.client.log_artifact(run_id, local, directory or None)


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
