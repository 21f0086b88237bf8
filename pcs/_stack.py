"""The stack of active runs: one ``ContextVar`` holding an immutable linked list.

Each push sets a new node ``(run, below, depth)`` on top of the old one
(``()`` is the empty stack), so sibling threads and asyncio tasks (each with
its own copy of the context) never see each other's pushes, and a push costs
the same at any depth: 10,000 nested tracked calls hold 10,000 small nodes,
not 10,000 ever longer tuples. ``push`` returns a token and ``pop`` resets by
that token, always in a ``finally``.

The root parent of a process can be seeded with the environment variable
``PCS_PARENT_RUN_ID`` (and ``PCS_PARENT_TRACKING_URI``,
``PCS_PARENT_EXPERIMENT_ID``): runs started with an empty stack become its
children. :func:`pcs.child_env` sets them. The parent run may not have reached
the store yet when the child starts; the handle waits for it (bounded, see
:func:`pcs.run.parent_wait_seconds`) only if it must read it.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

from pcs import settings

if TYPE_CHECKING:
    from pcs.run import Run

__all__ = [
    "PARENT_ENV",
    "PARENT_EXPERIMENT_ENV",
    "PARENT_URI_ENV",
    "active",
    "last",
    "pop",
    "push",
    "set_last",
]

PARENT_ENV = settings.PARENT_RUN_ID.name
PARENT_URI_ENV = settings.PARENT_TRACKING_URI.name
PARENT_EXPERIMENT_ENV = settings.PARENT_EXPERIMENT_ID.name

#: ``()`` or ``(run, node below, depth)``
_Node = tuple[Any, ...]
_stack: ContextVar[_Node] = ContextVar("pcs_run_stack", default=())
_last: ContextVar[Run | None] = ContextVar("pcs_last_run", default=None)
_env_parent: tuple[str, Run | None] | None = None


def reset_env_root() -> None:
    """Read ``PCS_PARENT_RUN_ID`` again on next use (tests change it)."""
    global _env_parent
    _env_parent = None


def push(run: Run) -> Token[_Node]:
    """Make ``run`` the innermost active run of the current context."""
    top = _stack.get()
    return _stack.set((run, top, top[2] + 1 if top else 1))


def pop(token: Token[_Node]) -> None:
    """Undo the :func:`push` that returned ``token``."""
    _stack.reset(token)


def depth() -> int:
    """How many runs are active in the current context (nested tracked calls and blocks)."""
    top = _stack.get()
    return top[2] if top else 0


def stack() -> tuple[Run, ...]:
    """The active runs of the current context, outermost first."""
    runs = []
    node = _stack.get()
    while node:
        runs.append(node[0])
        node = node[1]
    return tuple(reversed(runs))


def active() -> Run | None:
    """The innermost active run, else the process's seeded root parent, else None."""
    top = _stack.get()
    if top:
        return top[0]  # type: ignore[no-any-return]
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
    run_id = settings.PARENT_RUN_ID.get()
    if not run_id:
        _env_parent = ("", None)
        return None
    if cached is not None and cached[0] == run_id:
        return cached[1]
    from pcs.run import remote_handle

    run = remote_handle(run_id, settings.PARENT_TRACKING_URI.get(),
                        settings.PARENT_EXPERIMENT_ID.get())
    _env_parent = (run_id, run)
    return run
