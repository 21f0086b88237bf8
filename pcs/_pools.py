"""Carrying the run context into process pools.

A task submitted to ``multiprocessing.Pool`` (``apply``, ``apply_async``,
``map``, ``map_async``, ``starmap``, ``starmap_async``, ``imap``,
``imap_unordered``) or ``concurrent.futures.ProcessPoolExecutor``
(``submit``, ``map``) while a pcs run is active runs, in the worker, nested
under that run — with every start method (fork, spawn, forkserver).

The pool pickles tasks in a background thread of its own (the pool's task
handler, the executor's manager thread), where the submitter's context is
not visible. So the submission methods — which run on the submitting thread
— are patched: when a run is active, the callable is wrapped in
:class:`InParent`, a small picklable object carrying a handle on that run
(its id, store and experiment; see :meth:`pcs.Run.__reduce__`). In the worker
it makes the run the parent for the duration of the task. Without an active
run the callable is submitted unchanged.

Lineage crosses the pool too (see :mod:`pcs.lineage`): identity is lost
when a value is pickled, so a value some tracked call produced travels as a
:class:`Carried` — its pickle unpickles, on the other side, as the bare value,
remembered there as produced by the same run. Arguments are carried into
the workers this way (``submit``, ``apply``, ``map``, ``starmap``, ``imap``),
and a task's return value back to the submitting process. Nothing else
changes: the function receives and the submitter gets the plain values.

The patches are applied when ``multiprocessing.pool`` and
``concurrent.futures.process`` are first imported (``import pcs`` does not
import them). ``PCS_INSTRUMENT_POOLS=0`` in the environment turns this off;
:func:`uninstall` removes the patches.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pcs import _lineage, _stack, settings

if TYPE_CHECKING:
    from pcs.run import Run

__all__ = ["INSTRUMENT_ENV", "Carried", "InParent", "install", "installed", "uninstall"]

#: ``0`` turns the instrumentation of process pools off (read once, by :func:`install`).
INSTRUMENT_ENV = settings.INSTRUMENT_POOLS.name

_lock = threading.Lock()
#: (class, method name) -> the original method, while patched
_originals: dict[tuple[type, str], Any] = {}
_hooks_registered = False
_enabled = False


class Carried:
    """A value on its way through a pickle, with the runs that produced it (and its elements).

    Only ever pickled: it unpickles as the bare value (:func:`_restore`).
    """

    __slots__ = ("found", "value")

    def __init__(self, value: Any, found: tuple[tuple[str, str], ...]) -> None:
        self.value = value
        self.found = found

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, tuple[tuple[str, str], ...]]]:
        return (_restore, (self.value, self.found))


def _restore(value: Any, found: tuple[tuple[str, str], ...]) -> Any:
    """Unpickling a :class:`Carried`: the value itself, remembered as produced where it was."""
    _lineage.adopt(value, found)
    return value


def _carried(value: Any) -> Any:
    """``value``, as a :class:`Carried` if a tracked call produced it or one of its elements."""
    found = _lineage.provenance(value)
    return Carried(value, found) if found else value


def _carried_items(items: Any, starred: bool) -> Any:
    """The items of a ``map`` (argument tuples for ``starmap``), carried lazily."""
    if starred:
        return (tuple(map(_carried, item)) for item in items)
    return map(_carried, items)


class InParent:
    """A pool task that runs nested under the run that was active where it was submitted."""

    __slots__ = ("fn", "parent", "pid")

    def __init__(self, fn: Callable[..., Any], parent: Run, pid: int | None = None) -> None:
        self.fn = fn
        self.parent = parent
        #: the submitting process: a result going back there carries its lineage
        self.pid = os.getpid() if pid is None else pid

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        token = _stack.push(self.parent)
        try:
            result = self.fn(*args, **kwargs)
        finally:
            _stack.pop(token)
        if self.pid != os.getpid():  # in a worker: the result is pickled back
            return _carried(result)
        return result

    def __reduce__(self) -> tuple[type[InParent], tuple[Callable[..., Any], Run, int]]:
        return (InParent, (self.fn, self.parent, self.pid))

    def __repr__(self) -> str:
        return f"InParent({self.fn!r}, parent={self.parent!r})"


def carry(fn: Any) -> Any:
    """``fn`` wrapped to run under the active run, or ``fn`` itself when none is active."""
    if isinstance(fn, InParent) or not callable(fn):
        return fn
    parent = _stack.active()
    if parent is None:
        return fn
    return InParent(fn, parent)


def installed() -> bool:
    """True while the pool instrumentation is on (it applies once the pools are imported)."""
    return _enabled


def install() -> None:
    """Instrument process pools, now or when their modules are imported. Idempotent.

    Does nothing when ``PCS_INSTRUMENT_POOLS`` is ``0`` (or ``false``/``no``/``off``).
    """
    global _hooks_registered, _enabled
    if not settings.INSTRUMENT_POOLS.get():
        return
    with _lock:
        _enabled = True
        register = not _hooks_registered
        _hooks_registered = True
    if register:
        import wrapt

        # Runs the hook at once if the module is already imported.
        wrapt.register_post_import_hook(_patch_pool, "multiprocessing.pool")
        wrapt.register_post_import_hook(_patch_executor, "concurrent.futures.process")
    else:
        import sys

        for name, patch in (("multiprocessing.pool", _patch_pool),
                            ("concurrent.futures.process", _patch_executor)):
            module = sys.modules.get(name)
            if module is not None:
                patch(module)


def uninstall() -> None:
    """Restore the original pool methods (the import hooks stay, switched off)."""
    global _enabled
    with _lock:
        _enabled = False
        for (cls, name), original in _originals.items():
            setattr(cls, name, original)
        _originals.clear()


def _patch(cls: type, name: str, make: Callable[[Any], Any]) -> None:
    if (cls, name) in _originals:
        return
    original = cls.__dict__.get(name)
    if original is None:  # pragma: no cover - another Python's multiprocessing
        return
    _originals[(cls, name)] = original
    setattr(cls, name, functools.wraps(original)(make(original)))


def _patch_pool(module: ModuleType) -> None:
    with _lock:
        if not _enabled:
            return
        pool, threads, starred = module.Pool, module.ThreadPool, module.starmapstar

        def apply_async(original: Any) -> Any:
            def method(self: Any, func: Any, args: Any = (), kwds: Any = None,
                       *rest: Any, **kwargs: Any) -> Any:
                kwds = {} if kwds is None else kwds
                if not isinstance(self, threads):  # a thread pool pickles nothing
                    args = tuple(map(_carried, args))
                    kwds = {key: _carried(value) for key, value in kwds.items()}
                return original(self, carry(func), args, kwds, *rest, **kwargs)

            return method

        def map_async(original: Any) -> Any:
            def method(self: Any, func: Any, iterable: Any, mapper: Any, *rest: Any,
                       **kwargs: Any) -> Any:
                if not isinstance(self, threads) and _lineage.following():
                    iterable = list(_carried_items(iterable, mapper is starred))
                return original(self, carry(func), iterable, mapper, *rest, **kwargs)

            return method

        def imap(original: Any) -> Any:
            def method(self: Any, func: Any, iterable: Any, *rest: Any, **kwargs: Any) -> Any:
                if not isinstance(self, threads) and _lineage.following():
                    iterable = _carried_items(iterable, False)
                return original(self, carry(func), iterable, *rest, **kwargs)

            return method

        _patch(pool, "apply_async", apply_async)
        _patch(pool, "_map_async", map_async)
        _patch(pool, "imap", imap)
        _patch(pool, "imap_unordered", imap)


def _patch_executor(module: ModuleType) -> None:
    with _lock:
        if not _enabled:
            return

        def submit(original: Any) -> Any:
            def method(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
                args = tuple(map(_carried, args))
                kwargs = {key: _carried(value) for key, value in kwargs.items()}
                return original(self, carry(fn), *args, **kwargs)

            return method

        _patch(module.ProcessPoolExecutor, "submit", submit)
