"""Carrying the run context into threads, executors and child processes.

* :func:`bind` wraps a callable so that it runs in the run context of the
  caller — hand the result to any executor or thread.
* :func:`instrument_threads` makes every ``threading.Thread`` and
  ``concurrent.futures.ThreadPoolExecutor`` started afterwards carry the
  context of the code that started it (or submitted to it); undo with
  :func:`uninstrument_threads`.
* :func:`child_env` is an environment for ``subprocess`` whose runs nest
  under the current run.
"""

from __future__ import annotations

import contextvars
import functools
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from pcs import _stack
from pcs.run import known_experiment_id

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["bind", "child_env", "instrument_threads", "uninstrument_threads"]

P = ParamSpec("P")
R = TypeVar("R")

_lock = threading.Lock()
_originals: dict[str, Any] = {}


def bind(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` bound to the current run context, for running in another thread.

    Each call runs in a fresh copy of the context captured now, so the bound
    callable may run many times, also concurrently.
    """
    context = contextvars.copy_context()

    @functools.wraps(fn)
    def bound(*args: P.args, **kwargs: P.kwargs) -> R:
        return context.copy().run(fn, *args, **kwargs)

    return bound


def instrument_threads() -> None:
    """Make new threads and thread-pool tasks inherit the run context of their starter.

    Idempotent; :func:`uninstrument_threads` restores the originals.
    """
    from concurrent.futures import ThreadPoolExecutor

    with _lock:
        if _originals:
            return
        _originals["start"] = threading.Thread.start
        _originals["run"] = threading.Thread.run
        _originals["submit"] = ThreadPoolExecutor.submit
        original_start = threading.Thread.start
        original_run = threading.Thread.run
        original_submit = ThreadPoolExecutor.submit

        @functools.wraps(original_start)
        def start(self: threading.Thread) -> None:
            self._pcs_context = contextvars.copy_context()  # type: ignore[attr-defined]
            original_start(self)

        @functools.wraps(original_run)
        def run(self: threading.Thread) -> None:
            context = getattr(self, "_pcs_context", None)
            if context is None:
                original_run(self)
            else:
                context.run(original_run, self)

        def submit(
            self: ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
        ) -> Future[Any]:
            return original_submit(self, bind(fn), *args, **kwargs)

        threading.Thread.start = start  # type: ignore[method-assign]
        threading.Thread.run = run  # type: ignore[method-assign]
        ThreadPoolExecutor.submit = submit  # type: ignore[method-assign,assignment]


def uninstrument_threads() -> None:
    """Undo :func:`instrument_threads`."""
    from concurrent.futures import ThreadPoolExecutor

    with _lock:
        if not _originals:
            return
        threading.Thread.start = _originals.pop("start")  # type: ignore[method-assign]
        threading.Thread.run = _originals.pop("run")  # type: ignore[method-assign]
        ThreadPoolExecutor.submit = _originals.pop("submit")  # type: ignore[method-assign]


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for a child process whose runs nest under the active run.

    Sets ``PCS_PARENT_RUN_ID``, ``PCS_PARENT_TRACKING_URI`` and
    ``PCS_PARENT_EXPERIMENT_ID`` (and ``MLFLOW_TRACKING_URI``, so the child
    writes to the same store). The child need not wait for the parent run to
    reach the store.
    """
    env = dict(os.environ if base is None else base)
    parent = _stack.active()
    if parent is not None:
        env[_stack.PARENT_ENV] = parent.identifier
        env[_stack.PARENT_URI_ENV] = parent.tracking_uri
        env["MLFLOW_TRACKING_URI"] = parent.tracking_uri
        experiment_id = known_experiment_id(parent)
        if experiment_id is not None:
            env[_stack.PARENT_EXPERIMENT_ENV] = experiment_id
        else:
            env.pop(_stack.PARENT_EXPERIMENT_ENV, None)
    return env
