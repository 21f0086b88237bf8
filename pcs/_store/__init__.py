"""The store: the one place where pcs talks to MLflow (imported only on first need).

From the ground up — each module imports only those listed above it:

* :mod:`~pcs._store.uri` — which store: the tracking URI, made absolute; probing it.
* :mod:`~pcs._store.gate` — records of runs whose experiment is missing are set aside.
* :mod:`~pcs._store.sqlite_sink` — the fast path: batches written into MLflow's SQLite schema.
* :mod:`~pcs._store.client_sink` — the MLflow client, and the sink delivering through it.
* :mod:`~pcs._store.facade` — :class:`Backend`, all MLflow access for one URI.
* :mod:`~pcs._store.recovery` — dead processes' journals delivered (:mod:`pcs.recovery`).
* :mod:`~pcs._store.lifecycle` — fork, exit, SIGTERM; its ``process_id`` is read there.
"""

from pcs._store.facade import Backend, get_backend, now_ms, reset_backends
from pcs._store.lifecycle import close_all, flush_all
from pcs._store.uri import current_tracking_uri, probe_store

__all__ = [
    "Backend",
    "close_all",
    "current_tracking_uri",
    "flush_all",
    "get_backend",
    "now_ms",
    "probe_store",
    "reset_backends",
]
