"""``pcs.run()`` blocks and the ``@pcs.tracked`` decorator.

Both push their Run on the context-local run stack (:mod:`pcs._stack`), so
runs nest along the real call tree: the innermost active run becomes the
parent (MLflow tag ``mlflow.parentRunId``) of every run started inside it, in
the same thread, in asyncio tasks created inside it, and — with
:func:`pcs.bind` or :func:`pcs.instrument_threads` — in worker threads.

Recording never changes what the user's code does: if pcs cannot record
(the store is unreachable, say), the call still runs and returns or raises
exactly as it would without pcs, and the failure is logged once.

The decorator's machinery lives in private modules, each importing only the
ones after it: :mod:`pcs._wrappers` (the tracked form of each kind of
callable), :mod:`pcs._tracked_class` (tracked classes), :mod:`pcs._tracker`
(binding, capture, starting and ending a call's run) and
:mod:`pcs._generators` (generators' runs).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping
from types import TracebackType
from typing import Any, TypeVar, overload

from pcs import _events, _pools, _redaction, _stack, settings
from pcs._suppress import UntrackedRun, off
from pcs._tracked_class import TRACKED_CLASS_ATTR, track_class
from pcs._tracker import CallOutcome, Options, Tracker, ensure_plugins, warn_once
from pcs._wrappers import wrap
from pcs.component_run import RETURN_FORMATS
from pcs.exceptions import UsageError
from pcs.run import (
    Run,
    end_with_exception,
    mark_interrupted_at_exit,
    remote_handle,
    status_for_exception,
)

__all__ = [
    "TRACKED_CLASS_ATTR",
    "CallOutcome",
    "RunBlock",
    "Tracker",
    "active_run",
    "flush",
    "last_run",
    "run",
    "tracked",
]

F = TypeVar("F", bound=Callable[..., Any])


def active_run() -> Run | None:
    """The innermost active Run of the current context, or None."""
    return _stack.active()


def last_run() -> Run | None:
    """The most recently ended Run that was started in the current context."""
    return _stack.last()


def flush(timeout: float | None = None) -> bool:
    """Block until everything recorded so far is in the tracking store.

    Runs, tags, params, metrics and artifacts are delivered by a background
    writer; ``flush`` waits for it (at most ``timeout`` seconds; returns False
    if that was not enough). It also runs at normal interpreter exit, and
    every read through pcs (``run.data``, ``run.info``, ``list_artifacts``...)
    flushes first.
    """
    from pcs._store import flush_all

    return flush_all(timeout)


def _resolve_parent(parent: Run | str | None) -> Run | None:
    if parent is None:
        return _stack.active()
    if isinstance(parent, Run):
        return parent
    if isinstance(parent, str) and parent:
        return remote_handle(parent)  # maybe started by another process: wait for it if read
    raise UsageError(f"parent={parent!r} must be a pcs.Run or an MLflow run id string.")


# ---------------------------------------------------------------------------
# pcs.run(...)
# ---------------------------------------------------------------------------
class RunBlock:
    """The context manager returned by :func:`run` (``with`` and ``async with``)."""

    def __init__(
        self,
        name: str | None,
        experiment_id: str | None,
        tags: Mapping[str, Any] | None,
        params: Mapping[str, Any] | None,
        parent: Run | str | None,
        experiment: str | None = None,
    ) -> None:
        self._args = (name, experiment_id, tags, params)
        self._experiment = experiment
        self._parent = parent
        self._run: Run | None = None
        self._token: Any = None

    def __enter__(self) -> Run:
        name, experiment_id, tags, params = self._args
        if off():  # PCS_DISABLED=1 or inside pcs.untracked(): record nothing
            return UntrackedRun(name)  # type: ignore[return-value]
        if not _events.plugins_loaded:
            ensure_plugins()
        run = Run(
            experiment_id,
            name=name,
            tags=tags,
            params=_redaction.redact_params(params),
            parent=_resolve_parent(self._parent),
            experiment=self._experiment,
        )
        mark_interrupted_at_exit(run)  # still open at exit: its block never finished
        self._run = run
        self._token = _stack.push(run)
        _events.run_started(run)
        return run

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        run = self._run
        if run is None:
            return
        try:
            end_with_exception(run, exc)
        except Exception as err:
            warn_once(
                f"end:{type(err).__name__}",
                "pcs could not end run %s: %s. Check that the tracking store is reachable.",
                run.identifier,
                err,
            )
        finally:
            _stack.pop(self._token)
            _stack.set_last(run)
            _events.run_ended(run, status_for_exception(exc), exc)

    async def __aenter__(self) -> Run:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def run(
    name: str | None = None,
    *,
    experiment_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    parent: Run | str | None = None,
    experiment: str | None = None,
) -> RunBlock:
    """A new Run for a ``with`` or ``async with`` block, nested under the active run.

    ``parent`` (a Run or a run id) overrides the run stack — for a run that
    lives in another process, say. The run ends FINISHED when the block
    returns, FAILED on an exception, KILLED on KeyboardInterrupt or
    cancellation; the exception propagates unchanged.

    ``experiment`` names the MLflow experiment (created if missing); without it
    and ``experiment_id``, a top-level run goes to ``PCS_EXPERIMENT``'s experiment
    or the default one, a nested run to its parent's (see :mod:`pcs.experiments`).
    """
    return RunBlock(name, experiment_id, tags, params, parent, experiment)


# ---------------------------------------------------------------------------
# @pcs.tracked
# ---------------------------------------------------------------------------
@overload
def tracked(fn: F, /) -> F: ...


@overload
def tracked(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    log_return_value: bool = True,
    return_format: str = "json",
    redact: Collection[str] = (),
    exclude: Collection[str] = (),
    strict: bool = False,
) -> Callable[[F], F]: ...


def tracked(
    fn: Any = None,
    /,
    *,
    name: str | None = None,
    log_return_value: bool = True,
    return_format: str = "json",
    redact: Collection[str] = (),
    exclude: Collection[str] = (),
    strict: bool = False,
) -> Any:
    """Record every call of a function, method or class as a :class:`pcs.ComponentRun`.

    Use as ``@pcs.tracked`` or ``@pcs.tracked(...)`` on functions, async
    functions, generators, async generators, methods, classmethods and
    staticmethods (put it outside ``@classmethod``/``@staticmethod``) and
    classes (their instances remember their ``__init__`` arguments, so tracked
    methods on them can be replayed).

    Options: ``name`` (the MLflow run name; default the qualified name),
    ``log_return_value`` (default True), ``return_format`` (``"json"``,
    ``"yaml"`` or ``"pickle"``), ``redact`` and ``exclude`` (argument names
    stored as ``<redacted>``), ``strict`` (raise :class:`pcs.EncodingError`
    before the call when an argument cannot be captured exactly).
    """
    if return_format not in RETURN_FORMATS:
        raise UsageError(
            f"@pcs.tracked(return_format={return_format!r}): use one of "
            f"{', '.join(RETURN_FORMATS)}."
        )
    for label, names in (("redact", redact), ("exclude", exclude)):
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise UsageError(
                f"@pcs.tracked({label}=...) takes a collection of argument names, e.g. "
                f"{label}=('password',); got {names!r}."
            )
    options = Options(
        name, bool(log_return_value), return_format, frozenset(redact), frozenset(exclude),
        bool(strict),
    )
    if fn is None:
        return functools.partial(_decorate, options=options)
    return _decorate(fn, options=options)


def _decorate(fn: Any, options: Options) -> Any:
    if settings.DISABLED.get():  # the kill switch: what was decorated, unchanged
        return fn
    if isinstance(fn, type):
        return track_class(fn, options)
    target = fn.__func__ if isinstance(fn, classmethod | staticmethod) else fn
    if not callable(target):
        raise UsageError(
            f"@pcs.tracked cannot decorate {fn!r}: it is not a function, method or class."
        )
    return wrap(fn, Tracker(target, options))


def is_tracked(obj: Any) -> bool:
    """True for a callable or class decorated with ``@pcs.tracked``."""
    return getattr(obj, "__pcs_tracked__", None) is not None or bool(
        isinstance(obj, type) and obj.__dict__.get(TRACKED_CLASS_ATTR)
    )


# Tasks submitted to process pools while a run is active nest under it in the workers
# (see pcs._pools; PCS_INSTRUMENT_POOLS=0 turns this off).
_pools.install()

