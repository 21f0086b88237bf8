"""``pcs.Run``: one MLflow run, with the seed API of the original pcs kept name for name.

A Run is a handle on a run in the MLflow tracking store that MLflow resolves
(``MLFLOW_TRACKING_URI``, else MLflow's default ``sqlite:///mlflow.db``). It is
created RUNNING, tagged ``pcs.is_run=True``, and ends FINISHED, FAILED or
KILLED. Every ``MlflowClient`` method that takes the run id first and whose
name starts with one of :attr:`Run.PASS_THROUGH_FN_PREFIXES` is available on
the Run without the id: ``run.log_metric("loss", 0.1)``.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

from pcs import _backend, conventions, settings
from pcs._backend import Backend, get_backend, now_ms
from pcs.exceptions import RunNotFoundError, UsageError
from pcs.registry import InMemoryRegistry, Registry

if TYPE_CHECKING:
    from mlflow.entities import RunData, RunInfo

__all__ = ["Run", "handle", "status_for_exception"]

_log = logging.getLogger("pcs")

_TERMINAL = ("FINISHED", "FAILED", "KILLED")


def status_for_exception(exc: BaseException | None) -> str:
    """The run status for a block that ended with ``exc`` (None: it returned).

    FINISHED on return and ``SystemExit(0)``; KILLED on KeyboardInterrupt,
    ``asyncio.CancelledError`` and other interruptions; FAILED otherwise.
    """
    if exc is None:
        return "FINISHED"
    if isinstance(exc, SystemExit):
        return "FINISHED" if exc.code in (None, 0) else "FAILED"
    if isinstance(exc, KeyboardInterrupt) or _is_cancelled(exc):
        return "KILLED"
    if isinstance(exc, Exception):
        return "FAILED"
    return "KILLED"


def _is_cancelled(exc: BaseException) -> bool:
    # asyncio is not imported just for this: if it was never imported, nothing was cancelled.
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and isinstance(exc, asyncio.CancelledError)


class Run:
    """A run in the MLflow tracking store.

    ``Run()`` creates a new run in the default experiment; ``Run(experiment_id=...)``
    in another; ``Run(existing_run_id=...)`` wraps a run that already exists (a
    :class:`~pcs.exceptions.RunNotFoundError` naming the id and the tracking URI
    if it does not). Used as a context manager, the run ends FINISHED when the
    block returns, FAILED on an exception and KILLED on an interruption; the
    exception itself always propagates unchanged.
    """

    #: a return value ``[format, payload]`` delivered with the run's end record
    _end_extra: list[Any] | None = None
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
    ) -> None:
        self._backend: Backend = get_backend(tracking_uri)
        self._ended_status: str | None = None
        self._owner_pid = _backend.process_id
        self._name: str | None = name
        self._parent_id: str | None = None
        self._experiment_id: str | None
        if existing_run_id is not None:
            if experiment_id is not None or name or tags or params or parent is not None:
                raise UsageError(
                    "Run() got existing_run_id together with arguments for a new run "
                    "(experiment_id/name/tags/params/parent). Pass existing_run_id alone to "
                    "wrap an existing run, or leave it out to create a new one."
                )
            self._run_id = str(existing_run_id)
            self._experiment_id = self._backend.get_run(self._run_id).info.experiment_id
            return
        experiment_id = str(experiment_id) if experiment_id is not None else None
        all_tags: dict[str, str] = {self.PCS_RUN_TAG: "True"}
        if isinstance(parent, Run):
            self._parent_id = parent._run_id  # a local id is resolved by the writer
            if experiment_id is None:
                experiment_id = parent.experiment_id
        elif parent:
            self._parent_id = str(parent)
            if experiment_id is None:
                experiment_id = wait_for_run(
                    self._backend, self._parent_id, parent_wait_seconds()
                ).info.experiment_id
        if self._parent_id:
            all_tags[conventions.PARENT_RUN_ID_TAG] = self._parent_id
        all_tags.update({str(k): str(v) for k, v in (tags or {}).items()})
        str_params = {str(k): str(v) for k, v in (params or {}).items()}
        for key, value in all_tags.items():
            _check_key_value("tag", key, value, conventions.MAX_TAG_VALUE_LENGTH)
        for key, value in str_params.items():
            _check_key_value("param", key, value, conventions.MAX_PARAM_VALUE_LENGTH)
        experiment_id = experiment_id or self.DEFAULT_EXPERIMENT_ID
        self._experiment_id = experiment_id
        start = now_ms()
        self._run_id = run_id = self._backend.new_run_id(experiment_id)
        self._backend.submit(["R", run_id, experiment_id, name, start, all_tags, str_params,
                              False])
        self._interrupted_at_exit = False  # an explicit Run() left open ends FINISHED at exit
        self._backend.open_runs[run_id] = self

    # -- identity ---------------------------------------------------------
    @property
    def identifier(self) -> str:
        """The MLflow run id.

        On a store other than the default SQLite one, MLflow chooses the id
        when pcs's writer creates the run, so the first read may wait for the
        writer (see :meth:`pcs._backend.Backend.mlflow_id`).
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
    def end(self, status: str = "FINISHED") -> None:
        """End the run with ``status``: FINISHED, FAILED or KILLED.

        Ending a run twice keeps the first status.
        """
        if status not in _TERMINAL:
            raise UsageError(
                f"Run {self._run_id}: end(status={status!r}) is not a final status; "
                f"use one of {', '.join(_TERMINAL)}."
            )
        returned, self._end_extra = self._end_extra, None
        self._finish(status, returned)

    def _finish(self, status: str, returned: list[Any] | None) -> None:
        """Write the run's end record (``status`` already checked; a tracked call's hot path).

        ``returned``: a tracked call's return value ``[format, payload]``, or None.
        """
        if self._ended_status is not None:
            return
        if _backend.process_id != self._owner_pid:
            # A forked child inherited this run from its parent process: not ours to end.
            _log.debug("pcs: not ending run %s started by process %s", self._run_id,
                       self._owner_pid)
            return
        self._ended_status = status
        backend = self._backend
        backend.open_runs.pop(self._run_id, None)
        record = ["E", self._run_id, status, time.time_ns() // 1_000_000]
        if returned is not None:
            record.append(returned)
        (backend._writer or backend.writer).submit([record], True)

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._end_with_exception(exc)

    def _end_with_exception(self, exc: BaseException | None) -> None:
        status = status_for_exception(exc)
        if exc is not None and status != "FINISHED":
            self._record_error(exc)
        self.end(status)

    def _record_error(self, exc: BaseException) -> None:
        text = _error_text(exc, self._run_id)
        error_type = f"{type(exc).__module__}.{type(exc).__qualname__}"
        self._backend.submit(["X", self._run_id, error_type, text])

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
            rows = [[m.key, _metric_value(m.key, m.value, self._run_id), m.timestamp,
                     m.step or 0] for m in metrics]
            records.append(["M", self._run_id, rows])
        if params:
            records.append(["P", self._run_id, self._checked_params(
                {p.key: p.value for p in params})])
        if tags:
            records.append(["G", self._run_id, self._checked_tags({t.key: t.value for t in tags})])
        if records:
            self._backend.submit(*records)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log several params at once."""
        self._backend.submit(["P", self._run_id, self._checked_params(params)])

    def log_metrics(
        self, metrics: Mapping[str, float], step: int = 0, timestamp: int | None = None
    ) -> None:
        """Log several metrics at once."""
        ts = timestamp if timestamp is not None else now_ms()
        rows = []
        for key, value in metrics.items():
            _check_key_value("metric", str(key), "", 0)
            rows.append([str(key), _metric_value(key, value, self._run_id), ts, step])
        self._backend.submit(["M", self._run_id, rows])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set several tags at once."""
        self._backend.submit(["G", self._run_id, self._checked_tags(tags)])

    def set_tag(self, key: str, value: Any, **kwargs: Any) -> None:
        """``MlflowClient.set_tag`` for this run (delivered in the background)."""
        self.set_tags({key: value})

    def _checked_params(self, params: Mapping[str, Any]) -> dict[str, str]:
        out = {str(k): str(v) for k, v in params.items()}
        for key, value in out.items():
            _check_key_value("param", key, value, conventions.MAX_PARAM_VALUE_LENGTH, self._run_id)
        return out

    def _checked_tags(self, tags: Mapping[str, Any]) -> dict[str, str]:
        out = {str(k): str(v) for k, v in tags.items()}
        for key, value in out.items():
            _check_key_value("tag", key, value, conventions.MAX_TAG_VALUE_LENGTH, self._run_id)
        return out

    def log_dict(self, dictionary: dict[str, Any], artifact_file: str) -> None:
        """``MlflowClient.log_dict`` for this run."""
        self._backend.call("log_dict", self._run_id, dictionary, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        """``MlflowClient.log_text`` for this run."""
        self._backend.call("log_text", self._run_id, text, artifact_file)

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
        """``MlflowClient.set_terminated`` for this run (prefer :meth:`end`)."""
        status = status or "FINISHED"
        if status not in _TERMINAL:
            raise UsageError(
                f"Run {self._run_id}: set_terminated(status={status!r}) is not a final status; "
                f"use one of {', '.join(_TERMINAL)}."
            )
        self._ended_status = status
        self._backend.open_runs.pop(self._run_id, None)
        self._backend.submit(["E", self._run_id, status, end_time or now_ms()])

    def search_runs(self, filter_string: str = "", **kwargs: Any) -> list[Any]:
        """``MlflowClient.search_runs`` within this run's experiment."""
        return list(self._backend.search_runs([self.experiment_id], filter_string, **kwargs))

    # -- the seed's class-level queries --------------------------------------
    @classmethod
    def from_existing_run_id(cls, run_id: str) -> Run:
        """Wrap an existing run (``RunNotFoundError`` if the store has none with this id)."""
        return cls(existing_run_id=run_id)

    @staticmethod
    def run_exists(run_id: str) -> bool:
        """True when the current tracking store has a run with this id."""
        return get_backend().run_exists(run_id)

    @classmethod
    def get_all_runs(cls) -> list[Run]:
        """Every run tagged ``pcs.is_run`` in the current store, newest first."""
        backend = get_backend()
        found = backend.iter_runs(
            f"tags.`{cls.PCS_RUN_TAG}` = 'True'", ["attributes.start_time DESC"]
        )
        return [_run_from_handle(cls, r.info.run_id, backend.tracking_uri) for r in found]

    @staticmethod
    def print_all_status() -> None:
        """Print the status of every pcs run in the current store, newest first."""
        runs = Run.get_all_runs()
        print(f"{len(runs)} pcs run(s) in {get_backend().tracking_uri}")  # noqa: T201
        for run in runs:
            run.print_status()

    def print_status(self, detailed: bool = False) -> None:
        """Print the run's id, status, start time, duration and its non-``mlflow.`` tags.

        ``detailed=True`` prints the whole spec (params, metrics, tags) as YAML.
        """
        print(self._status_text(detailed))  # noqa: T201 - the seed API prints

    def _status_text(self, detailed: bool) -> str:
        from datetime import UTC, datetime

        record = self._backend.get_run(self._run_id)
        info = record.info
        start = datetime.fromtimestamp(info.start_time / 1000, UTC).isoformat(timespec="seconds")
        end = info.end_time
        duration = f"{(end - info.start_time) / 1000:.3f}s" if end else "running"
        name = record.data.tags.get(conventions.RUN_NAME_TAG, "")
        lines = [
            f"Run {info.run_id} {name!r}: {info.status}, started {start}, duration {duration}"
        ]
        for key, value in sorted(record.data.tags.items()):
            if not key.startswith("mlflow."):
                lines.append(f"    {key} = {value}")
        if detailed:
            from pcs._yaml import dump_yaml

            lines.append(dump_yaml(self.to_spec()).rstrip())
        return "\n".join(lines)

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
        backend = get_backend()
        if not backend.run_exists(run_id):
            raise RunNotFoundError(run_id, backend.tracking_uri)
        return _run_from_handle(cls, run_id, backend.tracking_uri)


#: (id of the traceback head, run id) of the last error recorded (see _error_text)
_last_error: tuple[int, str] = (0, "")
#: how far _error_text looks for the traceback head of a nested run's error
_NESTED_SEARCH = 64


def _error_text(exc: BaseException, run_id: str) -> str:
    """The traceback text of ``exc`` for ``run_id``'s ``pcs.traceback.txt``.

    An error passing through nested tracked calls reaches each of their runs
    with a longer traceback; formatting all of it every time would cost time
    quadratic in the depth (minutes for deep recursion). When the error has
    just been recorded for a run nested inside this one, this run's text shows
    only its own frames down to that run, and names it.
    """
    global _last_error
    head = exc.__traceback__
    inner_head, inner_run = _last_error
    frames = 0
    if inner_head and head is not None:
        tb: TracebackType | None = head
        while tb is not None and frames < _NESTED_SEARCH:
            frames += 1
            if id(tb) == inner_head:
                break
            tb = tb.tb_next
        else:
            frames = 0
    if head is not None:
        _last_error = (id(head), run_id)
    if frames:
        own = "".join(traceback.format_exception(type(exc), exc, head, limit=frames,
                                                 chain=False))
        return (f"{own}\nThe error came from the nested run {inner_run}; its "
                "pcs.traceback.txt holds the rest of the traceback.\n")
    return "".join(traceback.format_exception(type(exc), exc, head))


_KEY = re.compile(r"^[/\w.\- :]+$")


def _check_key_value(
    kind: str, key: str, value: str, max_value: int, run_id: str | None = None
) -> None:
    """MLflow's rules for keys and values, checked now rather than in the background."""
    where = f" of run {run_id}" if run_id else ""
    if not _KEY.match(key) or len(key) > conventions.MAX_PARAM_KEY_LENGTH or "../" in key:
        raise UsageError(
            f"Invalid {kind} name {key!r}{where}: MLflow accepts up to "
            f"{conventions.MAX_PARAM_KEY_LENGTH} characters of letters, digits, '_', '-', '.', "
            "' ', ':' and '/'. Rename it."
        )
    if max_value and len(value) > max_value:
        raise UsageError(
            f"The {kind} {key!r}{where} is {len(value)} characters long; MLflow stores at most "
            f"{max_value}. Log long values as an artifact (log_text / log_dict) instead."
        )


def _metric_value(key: Any, value: Any, run_id: str) -> float | str:
    """A metric value for the journal: a float, or "nan"/"inf"/"-inf" (JSON has none)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(
            f"Metric {key!r} of run {run_id} must be a number, got {type(value).__name__} "
            f"{value!r}."
        ) from None
    return number if math.isfinite(number) else repr(number)


def handle(run_id: str, tracking_uri: str | None = None) -> Run:
    """A :class:`Run` handle on ``run_id`` in ``tracking_uri`` (default: the current store).

    The store is not read until the handle is used.
    """
    return _run_from_handle(Run, run_id, tracking_uri or get_backend().tracking_uri)


def _run_from_handle(
    cls: type[Run], run_id: str, tracking_uri: str, experiment_id: str | None = None
) -> Run:
    """Rebuild a Run handle from its id and store without touching the store."""
    run = cls.__new__(cls)
    run._backend = get_backend(tracking_uri)
    run._ended_status = None
    run._owner_pid = _backend.process_id
    run._name = None
    run._parent_id = None
    run._run_id = run_id
    run._experiment_id = experiment_id
    return run


def _run_from_pickle(
    cls: type[Run], run_id: str, tracking_uri: str, experiment_id: str | None = None
) -> Run:
    """A handle unpickled from another process (see :meth:`Run.__reduce__`).

    Its run may not be in the store yet (its owner's writer delivers in the
    background): reading it waits, bounded (:func:`parent_wait_seconds`).
    """
    run = _run_from_handle(cls, run_id, tracking_uri, experiment_id)
    run._remote = True
    return run


def remote_handle(run_id: str, tracking_uri: str | None = None,
                  experiment_id: str | None = None) -> Run:
    """:func:`handle` on a run that another process may have only just started."""
    run = _run_from_handle(Run, run_id, tracking_uri or get_backend().tracking_uri,
                           experiment_id or None)
    run._remote = True
    return run


def known_experiment_id(run: Run) -> str | None:
    """The run's experiment id if known without reading the store, else None."""
    return run._experiment_id


#: Seconds a handle from another process waits for its run to reach the store.
PARENT_WAIT_ENV = settings.PARENT_WAIT_SECONDS.name


def parent_wait_seconds() -> float:
    """``$PCS_PARENT_WAIT_SECONDS`` (default 30; 0 reads once and never waits)."""
    return settings.PARENT_WAIT_SECONDS.get()


def wait_for_run(backend: Backend, run_id: str, wait: float) -> Any:
    """``backend.get_run(run_id)``, retried for up to ``wait`` seconds while it is not found.

    A run started by another process reaches the store when that process's
    writer delivers it; until then the store does not know it.
    """
    deadline = time.monotonic() + wait
    delay = 0.02
    while True:
        try:
            return backend.get_run(run_id)
        except RunNotFoundError as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if wait > 0:
                    exc.add_note(
                        f"pcs waited {wait:g} s for the run to reach the store (a run "
                        f"started by another process arrives when that process's writer "
                        f"delivers it); set {PARENT_WAIT_ENV} to wait longer."
                    )
                raise
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.5)
