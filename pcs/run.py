"""``pcs.Run``: one MLflow run, with the seed API of the original pcs kept name for name.

A Run is a handle on a run in the MLflow tracking store that MLflow resolves
(``MLFLOW_TRACKING_URI``, else MLflow's default ``sqlite:///mlflow.db``). It is
created RUNNING, tagged ``pcs.is_run=True``, and ends FINISHED, FAILED or
KILLED. Every ``MlflowClient`` method that takes the run id first and whose
name starts with one of :attr:`Run.PASS_THROUGH_FN_PREFIXES` is available on
the Run without the id: ``run.log_metric("loss", 0.1)``.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from pcs import _upper, conventions
from pcs._mlflow_rules import check_key_value, checked_params, checked_tags, metric_value
from pcs._outcome import TERMINAL_STATUSES, error_text, status_for_exception
from pcs._records import EndRun, LogArtifact, LogError, LogMetrics, LogParams, SetTags, StartRun
from pcs._remote_runs import PARENT_WAIT_ENV as PARENT_WAIT_ENV
from pcs._remote_runs import parent_wait_seconds, wait_for_run
from pcs._store import Backend, get_backend, lifecycle, now_ms
from pcs.exceptions import UsageError
from pcs.experiments import experiment_for_new_run
from pcs.registry import InMemoryRegistry, Registry

if TYPE_CHECKING:
    from mlflow.entities import RunData, RunInfo

__all__ = ["Run", "handle", "status_for_exception"]

_log = logging.getLogger("pcs")
R = TypeVar("R", bound="Run")


class Run:
    """A run in the MLflow tracking store.

    ``Run()`` creates a new run in the default experiment (or ``PCS_EXPERIMENT``'s);
    ``Run(experiment_id=...)`` or ``Run(experiment="name")`` in another (see
    :mod:`pcs.experiments`); ``Run(existing_run_id=...)`` wraps a run that already exists (a
    :class:`~pcs.exceptions.RunNotFoundError` naming the id and the tracking URI
    if it does not). Used as a context manager, the run ends FINISHED when the
    block returns, FAILED on an exception and KILLED on an interruption; the
    exception itself always propagates unchanged.
    """

    # The fields of every Run, set by init_run however the Run is made (see there).
    _backend: Backend
    _run_id: str  # on stores where MLflow makes the ids, a local id (see Backend.mlflow_id)
    _experiment_id: str | None  # None: not known yet (a handle: read on first use)
    _name: str | None
    _parent_id: str | None
    _ended_status: str | None  # None while open
    _owner_pid: int  # only this process ends the run (not a forked child)
    #: open at exit: ends KILLED (a block or call that never finished), else FINISHED
    _interrupted_at_exit: bool = True
    #: a handle from another process: its run may not be in the store yet (wait for it)
    _remote: bool = False

    DEFAULT_EXPERIMENT_ID: ClassVar[str] = "0"
    PCS_RUN_TAG: ClassVar[str] = conventions.RUN_TAG
    PASS_THROUGH_FN_PREFIXES: ClassVar[list[str]] = [
        "log",
        "set_tag",
        "list_artifacts",
        "search_runs",
        "set_terminated",
        "download_artifacts",
    ]

    def __init__(
        self,
        experiment_id: str | None = None,
        existing_run_id: str | None = None,
        *,
        name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        parent: Run | str | None = None,
        tracking_uri: str | None = None,
        experiment: str | None = None,
    ) -> None:
        backend = get_backend(tracking_uri)
        if existing_run_id is not None:
            if (experiment_id is not None or experiment is not None or name or tags or params
                    or parent is not None):
                raise UsageError(
                    "Run() got existing_run_id together with arguments for a new run (experiment"
                    "/experiment_id/name/tags/params/parent). Pass existing_run_id alone to wrap "
                    "an existing run, or leave it out to create a new one."
                )
            run_id = str(existing_run_id)
            init_run(self, backend, run_id, backend.get_run(run_id).info.experiment_id)
            return
        experiment_id = experiment_for_new_run(
            backend, experiment, experiment_id, nested=parent is not None and parent != ""
        )
        parent_id: str | None = None
        if isinstance(parent, Run):
            parent_id, experiment_id = child_of(parent, experiment_id)
        elif parent:
            parent_id = str(parent)
            if experiment_id is None:
                wait = parent_wait_seconds()
                experiment_id = wait_for_run(backend, parent_id, wait).info.experiment_id
        all_tags: dict[str, str] = {self.PCS_RUN_TAG: "True"}
        if parent_id:
            all_tags[conventions.PARENT_RUN_ID_TAG] = parent_id
        all_tags.update(checked_tags(tags or {}))
        str_params = checked_params(params or {})
        experiment_id = experiment_id or self.DEFAULT_EXPERIMENT_ID
        start = now_ms()
        run_id = backend.new_run_id(experiment_id)
        init_run(self, backend, run_id, experiment_id, name, parent_id)
        backend.submit(StartRun.wire(run_id, experiment_id, name, start, all_tags, str_params))
        self._interrupted_at_exit = False  # an explicit Run() left open ends FINISHED at exit
        register_open(self)

    # -- identity ---------------------------------------------------------
    @property
    def identifier(self) -> str:
        """The MLflow run id.

        On a store other than the default SQLite one, MLflow chooses the id
        when pcs's writer creates the run, so the first read may wait for the
        writer (see :meth:`pcs._store.Backend.mlflow_id`).
        """
        return self._backend.mlflow_id(self._run_id)

    @property
    def experiment_id(self) -> str:
        """The id of the MLflow experiment holding this run.

        A handle that came from another process (unpickled, or named by
        ``PCS_PARENT_RUN_ID``) may name a run its owner has only just started:
        it waits up to ``PCS_PARENT_WAIT_SECONDS`` (default 30) for the run to
        reach the store before raising :class:`~pcs.exceptions.RunNotFoundError`.
        """
        if self._experiment_id is None:
            wait = parent_wait_seconds() if self._remote else 0.0
            record = wait_for_run(self._backend, self._run_id, wait)
            self._experiment_id = record.info.experiment_id
        return self._experiment_id

    @property
    def tracking_uri(self) -> str:
        """The tracking URI of the store holding this run."""
        return self._backend.tracking_uri

    @property
    def data(self) -> RunData:
        """MLflow's ``RunData`` (metrics, params, tags) as stored now."""
        return self._backend.get_run(self._run_id).data

    @property
    def info(self) -> RunInfo:
        """MLflow's ``RunInfo`` (status, times, artifact URI) as stored now."""
        return self._backend.get_run(self._run_id).info

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._run_id}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Run):
            return NotImplemented
        return self._run_id == other._run_id and self.tracking_uri == other.tracking_uri

    def __hash__(self) -> int:
        return hash((self._run_id, self.tracking_uri))

    def __reduce__(self) -> tuple[Any, tuple[type[Run], str, str, str | None]]:
        # A Run crosses process boundaries as a handle: its class, id, store and (when
        # known) experiment, so a run started in another process needs no store read
        # — the run may not have reached the store yet when the handle is used.
        return (_run_from_pickle, (type(self), self.identifier, self.tracking_uri,
                                   self._experiment_id))

    # -- lifecycle --------------------------------------------------------
    @property
    def status_at_exit(self) -> str:
        """The status this run ends with if the process exits while it is still open:
        KILLED for a ``with`` block or a tracked call (interrupted), FINISHED for a
        ``Run()`` the program never ended (as MLflow's own runs do)."""
        return "KILLED" if self._interrupted_at_exit else "FINISHED"

    def end(self, status: str = "FINISHED") -> None:
        """End the run with ``status``: FINISHED, FAILED or KILLED.

        Ending a run twice keeps the first status.
        """
        if status not in TERMINAL_STATUSES:
            raise UsageError(
                f"Run {self._run_id}: end(status={status!r}) is not a final status; "
                f"use one of {', '.join(TERMINAL_STATUSES)}."
            )
        end_run(self, status)

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        end_with_exception(self, exc)

    # -- pass-through to MlflowClient (run id filled in) --------------------
    def log_metric(
        self,
        key: str,
        value: float,
        timestamp: int | None = None,
        step: int | None = None,
        **kwargs: Any,
    ) -> None:
        """``MlflowClient.log_metric`` for this run (delivered in the background)."""
        if kwargs:
            self._backend.call("log_metric", self._run_id, key, value, timestamp, step, **kwargs)
            return
        self.log_metrics({key: value}, step=step or 0, timestamp=timestamp)

    def log_param(self, key: str, value: Any, **kwargs: Any) -> Any:
        """``MlflowClient.log_param`` for this run (delivered in the background)."""
        self.log_params({key: value})
        return value

    def log_batch(
        self,
        metrics: Sequence[Any] = (),
        params: Sequence[Any] = (),
        tags: Sequence[Any] = (),
        **kwargs: Any,
    ) -> None:
        """``MlflowClient.log_batch`` for this run (MLflow Metric/Param/RunTag entities)."""
        records: list[list[Any]] = []
        if metrics:
            rows = [[m.key, metric_value(m.key, m.value, self._run_id), m.timestamp,
                     m.step or 0] for m in metrics]
            records.append(LogMetrics.wire(self._run_id, rows))
        if params:
            records.append(LogParams.wire(self._run_id, checked_params(
                {p.key: p.value for p in params}, self._run_id)))
        if tags:
            records.append(SetTags.wire(self._run_id, checked_tags(
                {t.key: t.value for t in tags}, self._run_id)))
        if records:
            self._backend.submit(*records)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log several params at once."""
        self._backend.submit(LogParams.wire(self._run_id, checked_params(params, self._run_id)))

    def log_metrics(
        self, metrics: Mapping[str, float], step: int = 0, timestamp: int | None = None
    ) -> None:
        """Log several metrics at once."""
        ts = timestamp if timestamp is not None else now_ms()
        rows = []
        for key, value in metrics.items():
            check_key_value("metric", str(key), "", 0)
            rows.append([str(key), metric_value(key, value, self._run_id), ts, step])
        self._backend.submit(LogMetrics.wire(self._run_id, rows))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set several tags at once."""
        self._backend.submit(SetTags.wire(self._run_id, checked_tags(tags, self._run_id)))

    def set_tag(self, key: str, value: Any, **kwargs: Any) -> None:
        """``MlflowClient.set_tag`` for this run (delivered in the background)."""
        self.set_tags({key: value})

    def log_dict(self, dictionary: dict[str, Any], artifact_file: str) -> None:
        """``MlflowClient.log_dict`` for this run."""
        self._backend.call("log_dict", self._run_id, dictionary, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        """``MlflowClient.log_text`` for this run."""
        self._backend.call("log_text", self._run_id, text, artifact_file)

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        """Store ``data`` as the artifact ``artifact_file``, written behind like tags and params."""
        self._backend.submit(LogArtifact.wire(self._run_id, artifact_file,
                                              base64.b64encode(data).decode()))

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        """``MlflowClient.log_artifact`` for this run."""
        self._backend.call("log_artifact", self._run_id, local_path, artifact_path)

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        """``MlflowClient.log_artifacts`` for this run."""
        self._backend.call("log_artifacts", self._run_id, local_dir, artifact_path)

    def log_stream(self, stream: Any, artifact_file: str) -> None:
        """``MlflowClient.log_stream`` for this run."""
        self._backend.call("log_stream", self._run_id, stream, artifact_file)

    def log_table(self, data: Any, artifact_file: str) -> None:
        """``MlflowClient.log_table`` for this run (needs pandas for DataFrames)."""
        self._backend.call("log_table", self._run_id, data, artifact_file)

    def log_figure(self, figure: Any, artifact_file: str, **kwargs: Any) -> None:
        """``MlflowClient.log_figure`` for this run (matplotlib or plotly)."""
        self._backend.call("log_figure", self._run_id, figure, artifact_file, **kwargs)

    def log_image(self, image: Any, artifact_file: str | None = None, **kwargs: Any) -> None:
        """``MlflowClient.log_image`` for this run (numpy or PIL)."""
        self._backend.call("log_image", self._run_id, image, artifact_file, **kwargs)

    def log_inputs(self, datasets: Any = None, models: Any = None) -> None:
        """``MlflowClient.log_inputs`` for this run."""
        self._backend.call("log_inputs", self._run_id, datasets, models)

    def log_outputs(self, models: Any) -> None:
        """``MlflowClient.log_outputs`` for this run."""
        self._backend.call("log_outputs", self._run_id, models)

    def list_artifacts(self, path: str | None = None) -> list[Any]:
        """``MlflowClient.list_artifacts`` for this run (``FileInfo`` entries)."""
        return list(self._backend.call("list_artifacts", self._run_id, path))

    def download_artifacts(self, path: str, dst_path: str | None = None) -> str:
        """``MlflowClient.download_artifacts`` for this run; returns the local path."""
        return str(self._backend.call("download_artifacts", self._run_id, path, dst_path))

    def set_terminated(self, status: str | None = None, end_time: int | None = None) -> None:
        """``MlflowClient.set_terminated`` for this run (prefer :meth:`end`).

        Unlike :meth:`end`, it writes its status (and ``end_time``, default
        now) also over an earlier ending, as MLflow's does.
        """
        status = status or "FINISHED"
        if status not in TERMINAL_STATUSES:
            raise UsageError(
                f"Run {self._run_id}: set_terminated(status={status!r}) is not a final status; "
                f"use one of {', '.join(TERMINAL_STATUSES)}."
            )
        end_run(self, status, None, end_time, overwrite=True)

    def search_runs(self, filter_string: str = "", **kwargs: Any) -> list[Any]:
        """``MlflowClient.search_runs`` within this run's experiment."""
        return list(self._backend.search_runs([self.experiment_id], filter_string, **kwargs))

    # -- the seed's class-level queries, and navigation (pcs.query does the work) --------
    @classmethod
    def from_existing_run_id(cls: type[R], run_id: str) -> R:
        """Wrap an existing run (``RunNotFoundError`` if the store has none with this id):
        from ``Run``, a :class:`~pcs.ComponentRun` for a tracked call (``.rerun()`` works)."""
        return NAVIGATION.get().existing(cls, run_id)

    @staticmethod
    def run_exists(run_id: str) -> bool:
        """True when the current tracking store has a run with this id."""
        return get_backend().run_exists(run_id)

    @classmethod
    def get_all_runs(cls) -> list[Run]:
        """Every run tagged ``pcs.is_run`` in the current store (the right class), newest first."""
        return NAVIGATION.get().all_runs()

    @property
    def parent(self) -> Run | None:
        """The run this one is nested under (``Run`` or ``ComponentRun``), or None."""
        return NAVIGATION.get().parent(self)

    def children(self) -> list[Run]:
        """The runs nested directly under this one, in the order they started."""
        return NAVIGATION.get().children(self)

    @staticmethod
    def print_all_status() -> None:
        """Print every pcs run in the current store as a tree, newest first (as ``pcs runs``)."""
        print(NAVIGATION.get().all_status_text())  # noqa: T201 - the seed API prints

    def print_status(self, detailed: bool = False) -> None:
        """Print the run's id, status, start time, duration and its non-``mlflow.`` tags.

        ``detailed=True`` prints the whole spec (params, metrics, tags) as YAML.
        """
        print(NAVIGATION.get().status_text(self, detailed))  # noqa: T201 - the seed API prints

    # -- specs and registries ----------------------------------------------
    def to_spec(self, flatten: bool = False) -> dict[str, Any]:
        """The run as a spec: ``{identifier: {...}}``, or flat with an ``identifier`` key."""
        return self._spec(flatten, artifacts=None)

    def _spec(self, flatten: bool, artifacts: list[dict[str, Any]] | None) -> dict[str, Any]:
        record = self._backend.get_run(self._run_id)
        info, data = record.info, record.data
        fields: dict[str, Any] = {
            "type": "Run",
            "experiment_id": info.experiment_id,
            "run_name": info.run_name,
            "status": info.status,
            "start_time": info.start_time,
            "end_time": info.end_time,
            "user_id": info.user_id,
            "tags": dict(sorted(data.tags.items())),
            "params": dict(sorted(data.params.items())),
            "metrics": {k: float(v) for k, v in sorted(data.metrics.items())},
        }
        if artifacts is not None:
            fields["artifacts"] = artifacts
        if flatten:
            return {"identifier": info.run_id, **fields}
        return {info.run_id: fields}

    def to_registry(
        self,
        registry: Registry | None = None,
        force: bool = False,
        include_artifacts: bool = False,
    ) -> Registry:
        """Add this run's spec to ``registry`` (a new in-memory one by default) and return it.

        An identical spec already present is fine; a different one raises
        :class:`~pcs.exceptions.SpecConflictError` showing the difference,
        unless ``force=True``. ``include_artifacts=True`` also copies every
        artifact file into the registry, by sha256 digest.
        """
        registry = registry if registry is not None else InMemoryRegistry()
        artifacts: list[dict[str, Any]] | None = None
        if include_artifacts:
            artifacts = []
            for path in self._backend.list_all_artifacts(self._run_id):
                blob = self._backend.read_artifact(self._run_id, path)
                digest = registry.add_artifact(blob)
                artifacts.append({"path": path, "digest": digest, "size": len(blob)})
        registry.add_run_spec(self._spec(False, artifacts), force=force)
        return registry

    @classmethod
    def from_registry(cls, registry: Registry, run_id: str) -> Run:
        """The run ``run_id`` of ``registry``, as it exists in the current store.

        The spec must be in the registry (``SpecNotFoundError`` otherwise) and
        the run in the current tracking store (``RunNotFoundError`` otherwise:
        import the registry's runs into this store first).
        """
        registry.get_run_spec(run_id)
        return NAVIGATION.get().existing(cls, run_id)


# -- what the rest of pcs does with a Run: each done here, once ------------------------
def init_run(
    run: Run,
    backend: Backend,
    run_id: str,
    experiment_id: str | None,
    name: str | None = None,
    parent_id: str | None = None,
) -> None:
    """Set every field of the Run object ``run`` (the one place), without touching the store.

    ``experiment_id`` None: not known yet. ``parent_id``: see :func:`child_of`.
    """
    run._backend = backend
    run._ended_status = None
    run._owner_pid = lifecycle.process_id
    run._name = name
    run._parent_id = parent_id
    run._run_id = run_id
    run._experiment_id = experiment_id


def child_of(parent: Run, experiment_id: str | None = None) -> tuple[str, str]:
    """``(parent id, experiment id)`` of a new run under ``parent``.

    The parent's id as this process knows it (maybe a local id: the writer
    resolves it); the experiment is ``experiment_id``, else the parent's.
    """
    if experiment_id is None:
        experiment_id = parent._experiment_id
        if experiment_id is None:
            experiment_id = parent.experiment_id  # a handle from elsewhere: may wait for it
    return parent._run_id, experiment_id


def end_run(
    run: Run,
    status: str,
    returned: list[Any] | None = None,
    end_ms: int | None = None,
    overwrite: bool = False,
) -> None:
    """Write the run's end record: every run's one end path (``status`` already checked).

    A tracked call's hot path; ``returned``: its return value ``[format, payload]``.
    A run ends once unless ``overwrite`` (:meth:`Run.set_terminated`), and only in
    the process that started it: a forked child inherits runs that are not its own.
    """
    if run._ended_status is not None and not overwrite:
        return
    if lifecycle.process_id != run._owner_pid:
        _log.debug("pcs: not ending run %s started by process %s", run._run_id, run._owner_pid)
        return
    run._ended_status = status
    backend = run._backend
    backend.open_runs.pop(run._run_id, None)
    record = EndRun.wire(run._run_id, status, end_ms or time.time_ns() // 1_000_000, returned)
    (backend.started_writer or backend.writer).submit([record], True)


def end_with_exception(run: Run, exc: BaseException | None) -> None:
    """End ``run`` as a block or call that ended with ``exc`` (None: it returned).

    A failure or interruption is recorded: tag ``pcs.error.type``, artifact
    ``pcs.traceback.txt``.
    """
    status = status_for_exception(exc)
    if exc is not None and status != "FINISHED":
        error_type = f"{type(exc).__module__}.{type(exc).__qualname__}"
        run._backend.submit(LogError.wire(run._run_id, error_type, error_text(exc, run._run_id)))
    end_run(run, status)


def register_open(run: Run) -> None:
    """Count ``run`` among the open runs ended at exit (started later, it ends at once)."""
    run._backend.open_runs[run._run_id] = run
    if lifecycle.exiting:
        end_run(run, run.status_at_exit)


def mark_interrupted_at_exit(run: Run) -> None:
    """A ``with`` block's run: open at exit, it ends KILLED (a ``Run()`` ends FINISHED)."""
    run._interrupted_at_exit = True


def handle(run_id: str, tracking_uri: str | None = None) -> Run:
    """A :class:`Run` handle on ``run_id`` in ``tracking_uri`` (default: the current store),
    the store not read until the handle is used."""
    return run_from_handle(Run, run_id, tracking_uri or get_backend().tracking_uri)


def run_from_handle(
    cls: type[R], run_id: str, tracking_uri: str, experiment_id: str | None = None
) -> R:
    """A handle of class ``cls`` (Run or a subclass) on ``run_id``, the store untouched."""
    run = cls.__new__(cls)
    init_run(run, get_backend(tracking_uri), run_id, experiment_id)
    return run


def _run_from_pickle(
    cls: type[Run], run_id: str, tracking_uri: str, experiment_id: str | None = None
) -> Run:
    """A handle unpickled from another process (see :meth:`Run.__reduce__`): its run may
    not be in the store yet, so reading it waits, bounded (:func:`parent_wait_seconds`)."""
    run = run_from_handle(cls, run_id, tracking_uri, experiment_id)
    run._remote = True
    return run


def remote_handle(run_id: str, tracking_uri: str | None = None,
                  experiment_id: str | None = None) -> Run:
    """:func:`handle` on a run that another process may have only just started."""
    run = run_from_handle(Run, run_id, tracking_uri or get_backend().tracking_uri,
                          experiment_id or None)
    run._remote = True
    return run


def known_experiment_id(run: Run) -> str | None:
    """The run's experiment id if known without reading the store, else None."""
    return run._experiment_id


def known_name(run: Run) -> str | None:
    """The name this process started the run with (None: unnamed, or not started here)."""
    return run._name


def known_parent_id(run: Run) -> str | None:
    """The id of the run's parent as this process recorded it (see :func:`child_of`); None
    for a root run, or one not started here. ``Backend.mlflow_id`` resolves it."""
    return run._parent_id


# -- what Run needs of the layer above it (see pcs._upper) ---------------------------
if TYPE_CHECKING:  # a Protocol for the type checker: nothing to build at import

    class NavigationOperations(Protocol):
        """Reading runs back as the right class, walking the tree, printing: :mod:`pcs.query`."""

        def existing(self, cls: type[R], run_id: str) -> R: ...
        def all_runs(self) -> list[Run]: ...
        def parent(self, run: Run) -> Run | None: ...
        def children(self, run: Run) -> list[Run]: ...
        def status_text(self, run: Run, detailed: bool) -> str: ...
        def all_status_text(self) -> str: ...


#: provided by pcs.query when it is imported (imported by name on first use)
NAVIGATION: _upper.Slot[NavigationOperations] = _upper.Slot("pcs.query")
