"""Runs started by another process: waiting for them to reach the store.

A run another process started (a parent named by ``PCS_PARENT_RUN_ID``, a
Run handle unpickled in a worker) reaches the store only when that
process's writer delivers it. A read of it waits, bounded by
``PCS_PARENT_WAIT_SECONDS``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pcs import settings
from pcs.exceptions import RunNotFoundError

if TYPE_CHECKING:
    from pcs._store import Backend

__all__ = ["PARENT_WAIT_ENV", "parent_wait_seconds", "wait_for_run"]

#: Seconds a handle from another process waits for its run to reach the store.
PARENT_WAIT_ENV = settings.PARENT_WAIT_SECONDS.name


def parent_wait_seconds() -> float:
    """``$PCS_PARENT_WAIT_SECONDS`` (default 30; 0 reads once and never waits)."""
    return settings.PARENT_WAIT_SECONDS.get()


def wait_for_run(backend: Backend, run_id: str, wait: float) -> Any:
    """``backend.get_run(run_id)``, retried for up to ``wait`` seconds while it is not found.

    A run started by another process reaches the store when that process's
    writer delivers it; until then the store does not know it.
    """
    deadline = time.monotonic() + wait
    delay = 0.02
    while True:
        try:
            return backend.get_run(run_id)
        except RunNotFoundError as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if wait > 0:
                    exc.add_note(
                        f"pcs waited {wait:g} s for the run to reach the store (a run "
                        f"started by another process arrives when that process's writer "
                        f"delivers it); set {PARENT_WAIT_ENV} to wait longer."
                    )
                raise
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.5)
