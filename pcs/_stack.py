"""The stack of active runs: one ``ContextVar`` holding an immutable tuple.

Because the tuple is immutable and every push sets a new one, sibling
threads and asyncio tasks (each with its own copy of the context) never see
each other's pushes. ``push`` returns a token and ``pop`` resets by that
token, always in a ``finally``.

The root parent of a process can be seeded with the environment variable
``PCS_PARENT_RUN_ID`` (and ``PCS_PARENT_TRACKING_URI``): runs started with an
empty stack become its children. :func:`pcs.child_env` sets both.
"""

from __future__ import annotations

import os
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pcs.run import Run

__all__ = ["PARENT_ENV", "PARENT_URI_ENV", "active", "last", "pop", "push", "set_last"]

PARENT_ENV = "PCS_PARENT_RUN_ID"
PARENT_URI_ENV = "PCS_PARENT_TRACKING_URI"

_stack: ContextVar[tuple[Run, ...]] = ContextVar("pcs_run_stack", default=())
_last: ContextVar[Run | None] = ContextVar("pcs_last_run", default=None)
_call_tags: ContextVar[dict[str, str] | None] = ContextVar("pcs_call_tags", default=None)
_env_parent: tuple[str, Run | None] | None = None


def set_call_tags(tags: dict[str, str] | None) -> Token[dict[str, str] | None]:
    """Extra tags for the next tracked call started in this context (replay uses this)."""
    return _call_tags.set(tags)


def reset_call_tags(token: Token[dict[str, str] | None]) -> None:
    _call_tags.reset(token)


def take_call_tags() -> dict[str, str] | None:
    """The pending extra tags, consumed: only the outermost tracked call gets them."""
    tags = _call_tags.get()
    if tags is not None:
        _call_tags.set(None)
    return tags


def reset_env_root() -> None:
    """Read ``PCS_PARENT_RUN_ID`` again on next use (tests change it)."""
    global _env_parent
    _env_parent = None


def push(run: Run) -> Token[tuple[Run, ...]]:
    """Make ``run`` the innermost active run of the current context."""
    return _stack.set((*_stack.get(), run))


def pop(token: Token[tuple[Run, ...]]) -> None:
    """Undo the :func:`push` that returned ``token``."""
    _stack.reset(token)


def stack() -> tuple[Run, ...]:
    """The active runs of the current context, outermost first."""
    return _stack.get()


def active() -> Run | None:
    """The innermost active run, else the process's seeded root parent, else None."""
    runs = _stack.get()
    if runs:
        return runs[-1]
    return _env_root()


def last() -> Run | None:
    """The most recently ended run that was started in the current context."""
    return _last.get()


def set_last(run: Run) -> None:
    _last.set(run)


def _env_root() -> Run | None:
    """A handle on the run named by ``PCS_PARENT_RUN_ID`` (read once per process)."""
    global _env_parent
    cached = _env_parent
    if cached is not None and cached[1] is None:
        return None
    run_id = os.environ.get(PARENT_ENV)
    if not run_id:
        _env_parent = ("", None)
        return None
    if cached is not None and cached[0] == run_id:
        return cached[1]
    from pcs.run import handle

    run = handle(run_id, os.environ.get(PARENT_URI_ENV) or None)
    _env_parent = (run_id, run)
    return run
