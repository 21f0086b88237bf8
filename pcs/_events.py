"""In-process notifications of runs starting and ending.

The emission points for observers such as :func:`pcs.testing.capture_runs`.
An observer that raises is logged and ignored: it never breaks a tracked call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pcs.run import Run

__all__ = ["Observer", "run_ended", "run_started", "subscribe", "unsubscribe"]

_log = logging.getLogger("pcs")

#: ``observer(event, run, status, exc)`` with event "start" or "end".
Observer = Callable[[str, "Run", "str | None", "BaseException | None"], Any]

_lock = threading.Lock()
_observers: tuple[Observer, ...] = ()
#: True while anyone observes: the hot path checks this before calling in
observed = False


def subscribe(observer: Observer) -> None:
    global _observers, observed
    with _lock:
        _observers = (*_observers, observer)
        observed = True


def unsubscribe(observer: Observer) -> None:
    global _observers, observed
    with _lock:
        _observers = tuple(o for o in _observers if o is not observer)
        observed = bool(_observers)


def _emit(event: str, run: Run, status: str | None, exc: BaseException | None) -> None:
    for observer in _observers:
        try:
            observer(event, run, status, exc)
        except Exception:
            _log.exception("pcs: a run observer failed on %s of %s", event, run)


def run_started(run: Run) -> None:
    if _observers:
        _emit("start", run, None, None)


def run_ended(run: Run, status: str, exc: BaseException | None) -> None:
    if _observers:
        _emit("end", run, status, exc)
