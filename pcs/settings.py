"""Every ``PCS_*`` environment variable pcs reads: its one home.

Each setting is defined once below — name, type, default and a one-line
description — and read through its :class:`Setting` object. All are
optional. The documentation's list (``docs/settings.rst``) is checked
against this module by ``tests/test_settings.py``.

When a setting is read
    At call time: ``Setting.get()`` reads ``os.environ`` whenever it is
    called, and each caller reads a setting at the moment it always has —
    e.g. ``PCS_JOURNAL_DIR`` when a store's writer is created,
    ``PCS_READ_TIMEOUT`` at each read that must wait, ``PCS_PARENT_RUN_ID``
    once per process (see ``pcs._stack``), ``PCS_INSTRUMENT_POOLS`` when the
    pool instrumentation is installed. Changing the environment later affects
    only the reads that come later.

An empty value
    Means "not set": the default applies.

An invalid value
    Is **never** an error at the point where pcs happens to read it: pcs must
    not break your program at an arbitrary moment (the first tracked call,
    a fork, interpreter exit) because of a typo in the environment. pcs logs
    one warning on the ``pcs`` logger naming the variable, the bad value and
    what is accepted, and uses the default. To fail fast instead, call
    :func:`check` at start-up: it raises :class:`~pcs.exceptions.UsageError`
    naming every invalid variable.

This module imports nothing from pcs but :mod:`pcs.exceptions`, and nothing
costly: it sits at the bottom of pcs's import graph.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from pcs.exceptions import UsageError

__all__ = [
    "AGENT_IDLE_SECONDS",
    "ALL",
    "AUTO_RECOVER",
    "DELIVERY",
    "DISABLED",
    "DISABLE_PLUGINS",
    "EXIT_FLUSH_TIMEOUT",
    "EXIT_WAIT",
    "EXPERIMENT",
    "FORK_WAIT_SECONDS",
    "HANDLE_SIGTERM",
    "INSTRUMENT_POOLS",
    "JOURNAL",
    "JOURNAL_BUDGET_MB",
    "JOURNAL_DIR",
    "JOURNAL_SEGMENT_MB",
    "PARENT_EXPERIMENT_ID",
    "PARENT_RUN_ID",
    "PARENT_TRACKING_URI",
    "PARENT_WAIT_SECONDS",
    "READ_TIMEOUT",
    "REPLAY_ALLOWED_MODULES",
    "RUN_ID_TIMEOUT",
    "SQLITE_BUSY_TIMEOUT_MS",
    "STALL_SECONDS",
    "Setting",
    "check",
]

_log = logging.getLogger("pcs")

T = TypeVar("T")

#: (name, value) pairs already warned about: one warning each, not one per read
_warned: set[tuple[str, str]] = set()

# os.environ's own mapping (bytes on POSIX; CPython keeps it in step with os.environ):
# reading it skips the two encode calls and the Mapping layers of os.environ.get, which
# the hot path of a tracked call reads several times.
_environ_data: Any = getattr(os.environ, "_data", None)
try:
    _encode_key: Any = os.environ.encodekey
    _decode: Any = os.environ.decodevalue
    if not isinstance(_environ_data, dict):  # pragma: no cover - not CPython's os.environ
        raise AttributeError("_data")
except AttributeError:  # pragma: no cover
    _environ_data = None


def environ_key(name: str) -> Any:
    """The key of ``name`` for :func:`environ_raw` (encoded once, by the caller)."""
    return _encode_key(name) if _environ_data is not None else name


def environ_raw(key: Any) -> Any:
    """The environment variable of ``key`` (see :func:`environ_key`) as stored, or None:
    bytes on POSIX (``os.fsdecode`` gives the text). As current as ``os.environ``."""
    if _environ_data is not None:
        return _environ_data.get(key)
    return os.environ.get(key)  # pragma: no cover - not CPython's os.environ


class Setting(Generic[T]):
    """One ``PCS_*`` environment variable: its name, type, default and meaning."""

    __slots__ = ("_key", "_last", "accepts", "default", "doc", "name", "parse",
                 "shown_default")

    def __init__(
        self,
        name: str,
        default: T,
        parse: Callable[[str], T],
        *,
        accepts: str,
        doc: str,
        shown_default: str,
    ) -> None:
        #: the environment variable
        self.name = name
        #: the value when the variable is unset, empty or invalid
        self.default = default
        #: turns a non-empty value into the setting; raises ValueError when it is invalid
        self.parse = parse
        #: what values are accepted, for messages
        self.accepts = accepts
        #: one line: what the setting does (the documentation's text)
        self.doc = doc
        #: the default as the documentation shows it
        self.shown_default = shown_default
        self._key = environ_key(name)
        #: (the variable as last read, the setting it gave): a read of an unchanged
        #: variable parses nothing
        self._last: tuple[Any, T] | None = None

    def get(self) -> T:
        """The setting now: parsed from the environment, else the default.

        An invalid value logs one warning (per variable and value) and gives
        the default; it never raises.
        """
        raw = environ_raw(self._key)
        last = self._last
        if last is not None and last[0] == raw:
            return last[1]
        value = raw if raw is None or isinstance(raw, str) else _decode(raw)
        if not value or not value.strip():
            setting = self.default
        else:
            try:
                setting = self.parse(value)
            except ValueError:
                return self._invalid_default(value)
        self._last = (raw, setting)
        return setting

    def _invalid_default(self, value: str) -> T:
        """The default for an invalid ``value``, warned about once (never cached: each
        read of it goes through here)."""
        if (self.name, value) not in _warned:
            _warned.add((self.name, value))
            _log.warning("pcs: ignoring %s; using the default (%s).", self._invalid(value),
                         self.shown_default)
        return self.default

    def check(self) -> T:
        """Like :meth:`get`, but an invalid value raises :class:`~pcs.exceptions.UsageError`."""
        value = os.environ.get(self.name)
        if not value or not value.strip():
            return self.default
        try:
            return self.parse(value)
        except ValueError:
            raise UsageError(f"{self._invalid(value)}; unset it or fix it.") from None

    def _invalid(self, value: str) -> str:
        return f"{self.name}={value!r} is invalid (accepted: {self.accepts})"

    def __repr__(self) -> str:
        return f"Setting({self.name!r}, default={self.default!r})"


# -- parsers -------------------------------------------------------------------------
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_FLAG = "1/true/yes/on or 0/false/no/off"
_SECONDS = "a number of seconds (negative counts as 0)"


def _flag(value: str) -> bool:
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(value)


def _seconds(value: str) -> float:
    number = float(value)
    if number != number:  # NaN
        raise ValueError(value)
    return max(0.0, number)


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        word = value.strip().lower()
        if word not in choices:
            raise ValueError(value)
        return word
    return parse


def _megabytes(value: str) -> float:
    number = float(value)
    if number != number:  # NaN
        raise ValueError(value)
    return max(0.0, number)


def _milliseconds(value: str) -> int:
    return max(0, int(value))


def _text(value: str) -> str:
    return value


def _prefixes(value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip())


def _names(value: str) -> frozenset[str]:
    return frozenset(_prefixes(value))


# -- the settings ------------------------------------------------------------------------
JOURNAL_DIR: Setting[str | None] = Setting(
    "PCS_JOURNAL_DIR", None, _text, accepts="a directory",
    shown_default="``.pcs/journal`` in the working directory",
    doc="Where journals live.",
)
JOURNAL: Setting[bool] = Setting(
    "PCS_JOURNAL", True, _flag, accepts=_FLAG, shown_default="``1``",
    doc="``0``: no journal — faster by ~1 µs per call, but records queued at a crash are lost.",
)
DELIVERY: Setting[str] = Setting(
    "PCS_DELIVERY", "thread", _choice("thread", "agent"), accepts="``thread`` or ``agent``",
    shown_default="``thread``",
    doc="Who writes to MLflow: ``thread``, a thread of each program; ``agent``, one delivery "
        "agent process per store and journal directory, shared by every program writing "
        "there (SQLite stores, with the journal on; callers then only append to the journal). "
        "Read when a store's writer is created.",
)
AGENT_IDLE_SECONDS: Setting[float] = Setting(
    "PCS_AGENT_IDLE_SECONDS", 30.0, _seconds, accepts=_SECONDS, shown_default="``30``",
    doc="Seconds the delivery agent waits without a record before it exits (a program with "
        "records to deliver starts it again).",
)
JOURNAL_BUDGET_MB: Setting[float] = Setting(
    "PCS_JOURNAL_BUDGET_MB", 1024.0, _megabytes, accepts="a number of MiB (0: no limit)",
    shown_default="``1024``",
    doc="With the delivery agent: undelivered journal bytes a process may hold before its "
        "callers wait for the agent (backpressure).",
)
JOURNAL_SEGMENT_MB: Setting[float] = Setting(
    "PCS_JOURNAL_SEGMENT_MB", 64.0, _megabytes, accepts="a number of MiB (0: one file)",
    shown_default="``64``",
    doc="SQLite stores: a journal goes on in a new file once this many bytes are written "
        "and all of them are delivered; the delivered file is removed (disk stays bounded "
        "while a process runs).",
)
EXIT_WAIT: Setting[bool] = Setting(
    "PCS_EXIT_WAIT", False, _flag, accepts=_FLAG, shown_default="``0``",
    doc="With the delivery agent: ``1`` makes interpreter exit wait (up to "
        "``PCS_EXIT_FLUSH_TIMEOUT``) until the agent has delivered this process's records; "
        "by default exit does not wait, the agent finishes.",
)
EXIT_FLUSH_TIMEOUT: Setting[float] = Setting(
    "PCS_EXIT_FLUSH_TIMEOUT", 60.0, _seconds, accepts=_SECONDS, shown_default="``60``",
    doc="Seconds to deliver at interpreter exit; the rest stays journaled.",
)
SQLITE_BUSY_TIMEOUT_MS: Setting[int] = Setting(
    "PCS_SQLITE_BUSY_TIMEOUT_MS", 30_000, _milliseconds,
    accepts="a whole number of milliseconds", shown_default="``30000``",
    doc="Milliseconds a SQLite write waits for another writer.",
)
STALL_SECONDS: Setting[float] = Setting(
    "PCS_STALL_SECONDS", 10.0, _seconds, accepts=_SECONDS, shown_default="``10``",
    doc="Seconds without progress before a delivery counts as failing (and is warned about).",
)
READ_TIMEOUT: Setting[float] = Setting(
    "PCS_READ_TIMEOUT", 30.0, _seconds, accepts=_SECONDS, shown_default="``30``",
    doc="Seconds a read through pcs waits for earlier records to be delivered.",
)
RUN_ID_TIMEOUT: Setting[float] = Setting(
    "PCS_RUN_ID_TIMEOUT", 60.0, _seconds, accepts=_SECONDS, shown_default="``60``",
    doc="Seconds ``run.identifier`` waits for a client store to create the run.",
)
FORK_WAIT_SECONDS: Setting[float] = Setting(
    "PCS_FORK_WAIT_SECONDS", 10.0, _seconds, accepts=_SECONDS, shown_default="``10``",
    doc="Seconds ``fork()`` waits for pcs's delivery under way to finish.",
)
AUTO_RECOVER: Setting[bool] = Setting(
    "PCS_AUTO_RECOVER", True, _flag, accepts=_FLAG, shown_default="``1``",
    doc="``0``: do not deliver dead processes' journals in the background "
        "(``pcs recover`` still does).",
)
DISABLED: Setting[bool] = Setting(
    "PCS_DISABLED", False, _flag, accepts=_FLAG, shown_default="``0``",
    doc="``1``: the kill switch. ``@pcs.tracked`` returns what it decorates unchanged and "
    "``pcs.run()`` blocks record nothing: no store is opened, no file is created. Read "
    "when a function is decorated and when a block starts.",
)
HANDLE_SIGTERM: Setting[bool] = Setting(
    "PCS_HANDLE_SIGTERM", True, _flag, accepts=_FLAG, shown_default="``1``",
    doc="``0``: do not install pcs's SIGTERM handler.",
)
INSTRUMENT_POOLS: Setting[bool] = Setting(
    "PCS_INSTRUMENT_POOLS", True, _flag, accepts=_FLAG, shown_default="``1``",
    doc="``0``: do not carry the active run into ``multiprocessing`` and "
        "``ProcessPoolExecutor`` tasks.",
)
PARENT_RUN_ID: Setting[str | None] = Setting(
    "PCS_PARENT_RUN_ID", None, _text, accepts="a run id", shown_default="unset",
    doc="Runs started with no active run nest under this run (set by ``pcs.child_env()``).",
)
PARENT_TRACKING_URI: Setting[str | None] = Setting(
    "PCS_PARENT_TRACKING_URI", None, _text, accepts="a tracking URI",
    shown_default="the current tracking URI",
    doc="The store holding ``PCS_PARENT_RUN_ID``'s run.",
)
PARENT_EXPERIMENT_ID: Setting[str | None] = Setting(
    "PCS_PARENT_EXPERIMENT_ID", None, _text, accepts="an experiment id",
    shown_default="read from the store",
    doc="The experiment of ``PCS_PARENT_RUN_ID``'s run.",
)
PARENT_WAIT_SECONDS: Setting[float] = Setting(
    "PCS_PARENT_WAIT_SECONDS", 30.0, _seconds, accepts=_SECONDS, shown_default="``30``",
    doc="Seconds a run handle from another process waits for its run to reach the store "
        "(``0``: never wait).",
)
DISABLE_PLUGINS: Setting[frozenset[str]] = Setting(
    "PCS_DISABLE_PLUGINS", frozenset(), _names, accepts="comma-separated plugin names, or ``all``",
    shown_default="none",
    doc="Plugins not to load or register: their names (an entry point's, or the one given to "
        "``pcs.plugins.register``), or ``all``. Read when the plugins are loaded (at the first "
        "run) and at each ``pcs.plugins.register``.",
)
REPLAY_ALLOWED_MODULES: Setting[tuple[str, ...]] = Setting(
    "PCS_REPLAY_ALLOWED_MODULES", (), _prefixes, accepts="comma-separated module prefixes",
    shown_default="none",
    doc="Comma-separated module prefixes a replay may import, besides those you recorded.",
)

EXPERIMENT: Setting[str | None] = Setting(
    "PCS_EXPERIMENT", None, _text, accepts="an experiment name", shown_default="unset",
    doc="Top-level runs and tracked calls go to the MLflow experiment of this name (created if "
        "missing) unless given ``experiment=`` or ``experiment_id=``; nested runs stay in "
        "their parent's experiment. Also the default of ``pcs runs`` and ``pcs.runs()``.",
)

#: every setting, in the documentation's order
ALL: tuple[Setting[Any], ...] = (
    DISABLED, EXPERIMENT, JOURNAL_DIR, JOURNAL, DELIVERY, AGENT_IDLE_SECONDS, JOURNAL_BUDGET_MB,
    JOURNAL_SEGMENT_MB,
    EXIT_WAIT, EXIT_FLUSH_TIMEOUT, SQLITE_BUSY_TIMEOUT_MS,
    STALL_SECONDS, READ_TIMEOUT, RUN_ID_TIMEOUT, FORK_WAIT_SECONDS, AUTO_RECOVER, HANDLE_SIGTERM,
    INSTRUMENT_POOLS, PARENT_RUN_ID, PARENT_TRACKING_URI, PARENT_EXPERIMENT_ID,
    PARENT_WAIT_SECONDS, REPLAY_ALLOWED_MODULES, DISABLE_PLUGINS,
)


def check() -> None:
    """Raise :class:`~pcs.exceptions.UsageError` if any ``PCS_*`` variable is invalid.

    pcs itself never raises for a bad setting (it warns and uses the
    default); call this at start-up to fail fast instead.
    """
    problems = []
    for setting in ALL:
        try:
            setting.check()
        except UsageError as exc:
            problems.append(str(exc))
    if problems:
        raise UsageError("Invalid pcs settings in the environment: " + " ".join(problems))
