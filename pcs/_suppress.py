"""Recording switched off: the ``PCS_DISABLED`` kill switch and ``pcs.untracked()``.

Two ways to run code that pcs would record, without recording it:

``PCS_DISABLED=1`` (the kill switch)
    Read when a function is decorated and when a ``pcs.run()`` block starts.
    ``@pcs.tracked`` then returns what it decorates unchanged (calls cost
    nothing), and blocks yield an :class:`UntrackedRun`. No store is opened
    and no file (journal, database) is created.

``with pcs.untracked():`` (suppression, like OpenTelemetry's
``suppress_instrumentation``)
    Inside the block, in this thread or asyncio task and in the threads and
    tasks it starts, tracked calls run as plain calls and ``pcs.run()``
    blocks yield an :class:`UntrackedRun`. Runs already active stay active
    and end as usual; blocks nest; the previous state returns at exit, also
    on an exception.

An :class:`UntrackedRun` accepts every method of :class:`pcs.Run` and does
nothing, so code written for a recorded run runs unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from pcs import settings

__all__ = ["UntrackedRun", "off", "suppressed", "untracked"]

_suppressed: ContextVar[bool] = ContextVar("pcs_untracked", default=False)

#: whether recording is suppressed in the current context (a ContextVar's ``get``)
suppressed = _suppressed.get


def off() -> bool:
    """Whether a run started now must not be recorded (kill switch or suppression)."""
    return _suppressed.get() or settings.DISABLED.get()


@contextlib.contextmanager
def untracked() -> Iterator[None]:
    """Suppress recording inside the ``with`` block.

    Tracked calls made inside it (also from threads and asyncio tasks started
    inside it) run as plain calls, and ``pcs.run()`` blocks yield a run that
    records nothing. Use it for hot inner loops and for tests::

        @pcs.tracked
        def score(x):
            return x * x

        with pcs.untracked():
            total = sum(score(x) for x in range(1_000_000))  # no runs
    """
    token = _suppressed.set(True)
    try:
        yield
    finally:
        _suppressed.reset(token)


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


class UntrackedRun:
    """What a ``pcs.run()`` block yields while recording is off.

    Every method of :class:`pcs.Run` may be called on it and does nothing
    (it returns None); ``identifier`` and ``run_id`` are None and ``status``
    is ``"UNTRACKED"``. ``bool(run)`` is False, so code can tell it apart.
    """

    identifier: None = None
    run_id: None = None
    status = "UNTRACKED"

    def __init__(self, name: str | None = None) -> None:
        self.name = name

    def __bool__(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _nothing

    def __repr__(self) -> str:
        return f"UntrackedRun(name={self.name!r})"
