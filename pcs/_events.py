"""In-process notifications of runs starting and ending.

The emission points for observers such as :func:`pcs.testing.capture_runs`
and the plugin hooks (:mod:`pcs.plugins` subscribes one observer while any
plugin is registered). An observer that raises is logged and ignored: it
never breaks a tracked call.

It also holds the plugins' state that the hot path reads, so that a call
with no plugin pays no more than a flag: :data:`plugins_loaded` (the
entry-point plugins are loaded on first need, not at ``import pcs``) and
:data:`arguments_hook` (set while a plugin implements
``pcs_arguments_captured``). :mod:`pcs.plugins` sets them through
:func:`set_plugin_state`; the tracker listens with :func:`on_plugins_change`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pcs.run import Run

__all__ = [
    "ArgumentsHook",
    "Observer",
    "on_plugins_change",
    "run_ended",
    "run_started",
    "set_plugin_state",
    "subscribe",
    "unsubscribe",
]

_log = logging.getLogger("pcs")

#: ``observer(event, run, status, exc)`` with event "start" or "end".
Observer = Callable[[str, "Run", "str | None", "BaseException | None"], Any]

_lock = threading.Lock()
_observers: tuple[Observer, ...] = ()
#: True while anyone observes: the hot path checks this before calling in
observed = False

#: ``hook(parent run, run name, arguments) -> arguments to record`` (see pcs.plugins)
ArgumentsHook = Callable[["Run | None", str, dict[str, Any]], dict[str, Any]]
#: True once pcs.plugins has loaded the entry-point plugins (or was told not to)
plugins_loaded = False
#: set while a registered plugin implements pcs_arguments_captured, else None
arguments_hook: ArgumentsHook | None = None
_plugin_listeners: list[Callable[[], None]] = []


def on_plugins_change(listener: Callable[[], None]) -> None:
    """Call ``listener()`` whenever :func:`set_plugin_state` changes the plugins' state."""
    _plugin_listeners.append(listener)


def set_plugin_state(loaded: bool, hook: ArgumentsHook | None) -> None:
    """Publish the plugins' state (called by :mod:`pcs.plugins` only) and tell the listeners."""
    global plugins_loaded, arguments_hook
    with _lock:
        plugins_loaded, arguments_hook = loaded, hook
    for listener in list(_plugin_listeners):
        listener()


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
