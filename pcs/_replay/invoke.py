"""The replayed call itself: made through the tracker, which returns the run it created."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pcs.tracking import CallOutcome, Tracker

__all__ = ["invoke"]


def invoke(
    tracker: Tracker,
    receiver: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    tags: dict[str, str],
) -> CallOutcome:
    """Call the tracked callable as the next tracked call of this context, tagged with ``tags``.

    ``receiver`` is the instance (methods) or class (classmethods) the call
    is bound to, else None. Generators are driven to the end; async code runs
    on an event loop. The user's ``Exception`` is in the outcome, not raised.
    """
    fn = tracker.fn
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        return _run_coroutine(lambda: tracker.call_async(receiver, args, kwargs, tags))
    return tracker.call(receiver, args, kwargs, tags)


def _run_coroutine(factory: Callable[[], Coroutine[Any, Any, CallOutcome]]) -> CallOutcome:
    """Run a coroutine to completion, also when an event loop is already running here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    # A loop is running in this thread: run on a fresh loop in a worker thread, in a
    # copy of this context (so the replay still nests under the active run).
    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pcs-replay") as pool:
        return pool.submit(context.run, lambda: asyncio.run(factory())).result()
