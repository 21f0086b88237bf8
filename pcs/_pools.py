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

The patches are applied when ``multiprocessing.pool`` and
``concurrent.futures.process`` are first imported (``import pcs`` does not
import them). ``PCS_INSTRUMENT_POOLS=0`` in the environment turns this off;
:func:`uninstall` removes the patches.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pcs import _stack, settings

if TYPE_CHECKING:
    from pcs.run import Run

__all__ = ["INSTRUMENT_ENV", "InParent", "install", "installed", "uninstall"]

#: ``0`` turns the instrumentation of process pools off (read once, by :func:`install`).
INSTRUMENT_ENV = settings.INSTRUMENT_POOLS.name

_lock = threading.Lock()
#: (class, method name) -> the original method, while patched
_originals: dict[tuple[type, str], Any] = {}
_hooks_registered = False
_enabled = False


class InParent:
    """A pool task that runs nested under the run that was active where it was submitted."""

    __slots__ = ("fn", "parent")

    def __init__(self, fn: Callable[..., Any], parent: Run) -> None:
        self.fn = fn
        self.parent = parent

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        token = _stack.push(self.parent)
        try:
            return self.fn(*args, **kwargs)
        finally:
            _stack.pop(token)

    def __reduce__(self) -> tuple[type[InParent], tuple[Callable[..., Any], Run]]:
        return (InParent, (self.fn, self.parent))

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
        pool = module.Pool

        def first(original: Any) -> Any:
            # apply_async(func, ...), _map_async(func, ...), imap(func, ...), imap_unordered
            def method(self: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
                return original(self, carry(func), *args, **kwargs)

            return method

        for name in ("apply_async", "_map_async", "imap", "imap_unordered"):
            _patch(pool, name, first)


def _patch_executor(module: ModuleType) -> None:
    with _lock:
        if not _enabled:
            return

        def submit(original: Any) -> Any:
            def method(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
                return original(self, carry(fn), *args, **kwargs)

            return method

        _patch(module.ProcessPoolExecutor, "submit", submit)
