"""Which store: the tracking URI MLflow resolves, made absolute, and what kind of store it names.

The ground floor of :mod:`pcs._store`: it knows URIs, paths and the import of
MLflow itself, and nothing of backends, sinks or runs.
"""

from __future__ import annotations

import importlib.util
import os
import posixpath
import re
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlparse

from pcs import settings

__all__ = [
    "IMPORT_FORK_WAIT",
    "LOCAL_ID_PREFIX",
    "absolute_uri",
    "assigns_ids",
    "current_tracking_uri",
    "import_lock",
    "import_mlflow",
    "local_dir",
    "probe_store",
    "renew_import_lock",
    "sqlite_path",
]

#: Prefix of the run ids pcs makes for stores where MLflow chooses the id (see
#: :meth:`pcs._store.facade.Backend.new_run_id`).
LOCAL_ID_PREFIX = "pcs-local-"

_URI_ENV = "MLFLOW_TRACKING_URI"
_TRACKING_UTILS = "mlflow.tracking._tracking_service.utils"
_uri_env_key: Any = settings.environ_key(_URI_ENV)
#: (environment value, mlflow.set_tracking_uri value, cwd or None) -> resolved URI
_uri_cache: tuple[Any, Any, str | None, str] = (None, None, None, "")


def current_tracking_uri() -> str:
    """The tracking URI MLflow resolves now: ``MLFLOW_TRACKING_URI`` or its default.

    MLflow's answer depends on the environment variable, on
    ``mlflow.set_tracking_uri`` and (for the default, relative SQLite file) on
    the working directory; it is cached until one of them changes.
    """
    global _uri_cache
    env = settings.environ_raw(_uri_env_key)
    utils = sys.modules.get(_TRACKING_UTILS)
    explicit = None if utils is None else getattr(utils, "_tracking_uri", None)
    cached = _uri_cache
    if env or explicit:
        if cached[0] == env and cached[1] == explicit and cached[3] and (
            cached[2] is None or cached[2] == os.getcwd()  # a relative path: per directory
        ):
            return cached[3]
        cwd = None
    else:
        cwd = os.getcwd()
        if not cached[0] and not cached[1] and cached[2] == cwd:
            return cached[3]
    uri = None if explicit else _resolved_without_mlflow(os.fsdecode(env) if env else None)
    if uri is None:
        uri = str(import_mlflow().get_tracking_uri())
    absolute = absolute_uri(uri)
    if absolute != uri and cwd is None:
        cwd = os.getcwd()
    _uri_cache = (env, explicit, cwd, absolute)
    return absolute


#: whether the installed MLflow's default store is SQLite (3.7 and later); None: not known
_sqlite_default: bool | None = None
_DEFAULT_SQLITE_FILE = "mlflow.db"
_DEFAULT_FILE_STORE = "mlruns"
_MLFLOW_VERSION = re.compile(r'^VERSION = "(\d+)\.(\d+)\.', re.MULTILINE)


def _resolved_without_mlflow(env: str | None) -> str | None:
    """The tracking URI MLflow would resolve, worked out without importing MLflow (the
    import takes a second or more: a program's first tracked call must not pay for it);
    None when only MLflow can tell.

    MLflow's rule (3.x, POSIX): ``MLFLOW_TRACKING_URI`` as given; else, since MLflow 3.7,
    the file store ``./mlruns`` if it holds an experiment, otherwise the SQLite file
    ``./mlflow.db``; before 3.7 the file store ``./mlruns``. ``mlflow.set_tracking_uri``
    is handled by the caller (it means MLflow is imported).
    """
    if env:
        return env
    if os.name != "posix":
        return None  # MLflow's Windows paths and URIs: ask MLflow
    global _sqlite_default
    if _sqlite_default is None:
        _sqlite_default = _mlflow_defaults_to_sqlite()
        if _sqlite_default is None:
            return None
    if not _sqlite_default or _holds_file_store(_DEFAULT_FILE_STORE):
        return Path(os.path.abspath(_DEFAULT_FILE_STORE)).as_uri()
    return "sqlite:///" + posixpath.abspath(quote(os.path.abspath(_DEFAULT_SQLITE_FILE)))


def _mlflow_defaults_to_sqlite() -> bool | None:
    """Whether the installed MLflow (found, not imported) defaults to SQLite; None if its
    version cannot be read."""
    try:
        spec = importlib.util.find_spec("mlflow")
        if spec is None or not spec.submodule_search_locations:
            return None
        folder = next(iter(spec.submodule_search_locations))
        found = _MLFLOW_VERSION.search(Path(folder, "version.py").read_text("utf-8"))
    except (OSError, ImportError, ValueError, StopIteration):
        return None
    if found is None:
        return None
    return (int(found[1]), int(found[2])) >= (3, 7)


def _holds_file_store(folder: str) -> bool:
    """Whether ``folder`` holds MLflow file-store data: a numbered experiment with its
    ``meta.yaml`` (MLflow then keeps using the file store)."""
    try:
        with os.scandir(folder) as entries:
            return any(entry.name.isdigit() and entry.is_dir()
                       and os.path.lexists(os.path.join(entry.path, "meta.yaml"))
                       for entry in entries)
    except OSError:
        return False


def absolute_uri(uri: str) -> str:
    """``uri`` with a relative SQLite or local path made absolute (one store, one name).

    ``sqlite:///mlflow.db`` means a different database in every working
    directory; pcs names stores by absolute path, so that a journal recorded
    here is never delivered into another directory's database.
    """
    if uri.startswith("sqlite:///"):
        path = sqlite_path(uri)
        if path and path != ":memory:" and not os.path.isabs(path):
            return "sqlite:///" + os.path.abspath(path)
        return uri
    parsed = urlparse(uri)
    if parsed.scheme == "" and uri and not os.path.isabs(uri):
        return os.path.abspath(uri)
    if parsed.scheme == "file" and not parsed.netloc and parsed.path and \
            not os.path.isabs(unquote(parsed.path)):
        return "file://" + os.path.abspath(unquote(parsed.path))
    return uri


def sqlite_path(uri: str) -> str:
    """The database file of a ``sqlite:///path`` URI ("" for an in-memory database)."""
    return unquote(urlparse(uri).path)[1:]


def local_dir(uri: str) -> Path | None:
    """The local directory of a ``file:`` URI or plain path; None for remote stores."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(uri)
    return None


def assigns_ids(uri: str) -> bool:
    """True for a SQLite file store: pcs makes the run ids (see ``Backend.new_run_id``)."""
    return bool(uri.startswith("sqlite:") and sqlite_path(uri))


def probe_store(uri: str, timeout: float = 3.0) -> str | None:
    """Why the store ``uri`` cannot be read right now (None: it may be), without creating it.

    A SQLite file or local directory that does not exist is reported, never
    created; an ``http(s)://`` server that refuses or does not answer a TCP
    connection within ``timeout`` seconds is reported (MLflow's own client
    would retry for minutes).
    """
    parsed = urlparse(uri)
    if uri.startswith("sqlite:"):
        path = sqlite_path(uri)
        if path and not os.path.exists(path):
            return f"there is no MLflow store at {path!r} (nothing was recorded there yet)"
        return None
    if parsed.scheme in ("http", "https"):
        import socket

        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname or "localhost", port), timeout).close()
        except OSError as exc:
            return f"the tracking server {uri!r} is unreachable ({exc})"
        return None
    local = local_dir(uri)
    if local is not None and not local.exists():
        return f"there is no MLflow store at {str(local)!r} (nothing was recorded there yet)"
    return None


#: held while pcs imports MLflow or loads plugins (a second or so, much longer on a loaded
#: machine): fork() waits for it, because a child forked in the middle of another thread's
#: import finds half-executed modules and that import's locks taken forever. Reentrant: a
#: plugin loaded under it may import MLflow.
_import_lock = threading.RLock()

#: how long fork() waits for an import under way (an import always ends; a child forked in
#: the middle of one is broken, so this wait is longer than the other fork waits)
IMPORT_FORK_WAIT = 120.0


def import_mlflow() -> Any:
    """The :mod:`mlflow` module, imported now if no thread has imported it yet."""
    module = sys.modules.get("mlflow")
    if module is None or getattr(getattr(module, "__spec__", None), "_initializing", False):
        with _import_lock:
            import mlflow

            module = mlflow
    return module


def import_lock() -> threading.RLock:
    """The lock held while pcs imports MLflow or loads plugins (the fork hooks take it
    around ``fork()``)."""
    return _import_lock


def renew_import_lock() -> None:
    """In a forked child: a fresh import lock (the parent's may be held by a thread that is
    gone)."""
    global _import_lock
    _import_lock = threading.RLock()
