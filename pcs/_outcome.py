"""How a run ends: its final statuses, the status an exception gives it, the error's text.

A block or call that returns ends its run FINISHED; one that raises an
``Exception`` ends it FAILED; an interruption (KeyboardInterrupt,
``asyncio.CancelledError``) ends it KILLED. The error's traceback becomes the
run's ``pcs.traceback.txt``.
"""

from __future__ import annotations

import sys
import traceback
from types import TracebackType

__all__ = ["TERMINAL_STATUSES", "error_text", "status_for_exception"]

#: the statuses a run ends with
TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")


def status_for_exception(exc: BaseException | None) -> str:
    """The run status for a block that ended with ``exc`` (None: it returned).

    FINISHED on return and ``SystemExit(0)``; KILLED on KeyboardInterrupt,
    ``asyncio.CancelledError`` and other interruptions; FAILED otherwise.
    """
    if exc is None:
        return "FINISHED"
    if isinstance(exc, SystemExit):
        return "FINISHED" if exc.code in (None, 0) else "FAILED"
    if isinstance(exc, KeyboardInterrupt) or _is_cancelled(exc):
        return "KILLED"
    if isinstance(exc, Exception):
        return "FAILED"
    return "KILLED"


def _is_cancelled(exc: BaseException) -> bool:
    # asyncio is not imported just for this: if it was never imported, nothing was cancelled.
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and isinstance(exc, asyncio.CancelledError)


#: (id of the traceback head, run id) of the last error recorded (see error_text)
_last_error: tuple[int, str] = (0, "")
#: how far error_text looks for the traceback head of a nested run's error
_NESTED_SEARCH = 64


def error_text(exc: BaseException, run_id: str) -> str:
    """The traceback text of ``exc`` for ``run_id``'s ``pcs.traceback.txt``.

    An error passing through nested tracked calls reaches each of their runs
    with a longer traceback; formatting all of it every time would cost time
    quadratic in the depth (minutes for deep recursion). When the error has
    just been recorded for a run nested inside this one, this run's text shows
    only its own frames down to that run, and names it.
    """
    global _last_error
    head = exc.__traceback__
    inner_head, inner_run = _last_error
    frames = 0
    if inner_head and head is not None:
        tb: TracebackType | None = head
        while tb is not None and frames < _NESTED_SEARCH:
            frames += 1
            if id(tb) == inner_head:
                break
            tb = tb.tb_next
        else:
            frames = 0
    if head is not None:
        _last_error = (id(head), run_id)
    if frames:
        own = "".join(traceback.format_exception(type(exc), exc, head, limit=frames,
                                                 chain=False))
        return (f"{own}\nThe error came from the nested run {inner_run}; its "
                "pcs.traceback.txt holds the rest of the traceback.\n")
    return "".join(traceback.format_exception(type(exc), exc, head))
