"""The tracked forms of callables: one wrapper per kind, chosen once, at decoration.

* a plain function (not defined in a class body): a Python function, not a
  wrapt proxy — the hot path (see :func:`_plain_function`);
* methods, classmethods and staticmethods: a wrapt ``FunctionWrapper``
  (:mod:`pcs._proxies`), so binding works as it does without pcs;
* coroutine functions, generators and async generators: wrappers whose run
  lasts until the coroutine or generator ends (see :mod:`pcs._generators`).

Each asks its :class:`~pcs._tracker.Tracker` to start and finish the call's
run and keeps that run on the run stack while the call runs. Deep recursion
through wrappers that take a C frame per level is stopped with
``RecursionError`` before it overflows the C stack (:func:`_check_depth`).
Tracked callables pickle by reference (module and qualified name).
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from types import FunctionType
from typing import Any

from pcs import _stack
from pcs._generators import drive_async_generator, drive_generator
from pcs._suppress import suppressed
from pcs._tracker import Tracker

__all__ = ["wrap"]


def wrap(fn: Any, tracker: Tracker) -> Any:
    """The tracked form of ``fn``, whose calls ``tracker`` records (``tracker.fn``: the function).

    ``fn`` is a function (maybe defined in a class body: a method), a
    classmethod or a staticmethod. The result carries the tracker as
    ``__pcs_tracked__``.
    """
    target = tracker.fn
    if inspect.isasyncgenfunction(target):
        wrapper = _async_generator_wrapper(tracker)
    elif inspect.iscoroutinefunction(target):
        wrapper = _async_wrapper(tracker)
    elif inspect.isgeneratorfunction(target):
        wrapper = _generator_wrapper(tracker)
    elif _is_plain_function(fn):
        plain = _plain_function(fn, tracker)
        plain.__pcs_tracked__ = tracker  # type: ignore[attr-defined]
        return plain
    else:
        wrapper = _sync_wrapper(tracker)
    from pcs._proxies import decorate  # wrapt is imported on the first use, not at import pcs

    decorated = decorate(wrapper, fn)
    decorated.__pcs_tracked__ = tracker
    # where the worker of a process pool finds it again (see _TrackedWrapper.__reduce_ex__)
    decorated._self_pcs_reference = (
        getattr(target, "__module__", None), getattr(target, "__qualname__", None)
    )
    return decorated


def _plain_function(fn: Callable[..., Any], tracker: Tracker) -> Callable[..., Any]:
    """The tracked form of a plain synchronous function: a Python function, not a wrapt proxy.

    CPython 3.11 runs a Python-to-Python call (the ``CALL`` opcode) without
    using the C stack, but a call through a C object (wrapt's proxy) or with
    ``f(*args, **kwargs)`` takes a C frame. So a tracked function called with
    up to four positional arguments costs the C stack nothing per level and
    recurses as deep as the untracked function does (to ``RecursionError``);
    other calls are guarded by :func:`_check_depth`. Being a module-level
    function of the same ``__qualname__``, it pickles by reference.
    """
    push, pop, depth = _stack.push, _stack.pop, _stack.depth
    fast_arguments, start_fast, begin = tracker.fast_arguments, tracker.start_fast, tracker.begin
    finish, finish_returned = tracker.finish, tracker.finish_returned

    def tracked_call(*args: Any, **kwargs: Any) -> Any:
        arguments = fast_arguments(args, kwargs)
        if arguments is not None:
            run = start_fast(arguments)
        else:
            run = begin(None, args, kwargs)
        if run is None:
            return fn(*args, **kwargs)
        token = push(run)
        try:
            # Spelled out so that the common calls are plain CALLs (no C frame).
            count = len(args)
            if kwargs or count > 4:
                if depth() > _GUARD_DEPTH:
                    _check_depth()
                result = fn(*args, **kwargs)
            elif count == 1:
                result = fn(args[0])
            elif count == 2:
                result = fn(args[0], args[1])
            elif count == 3:
                result = fn(args[0], args[1], args[2])
            elif count == 0:
                result = fn()
            else:
                result = fn(args[0], args[1], args[2], args[3])
        except BaseException as exc:
            pop(token)
            finish(run, exc)
            raise
        pop(token)
        finish_returned(run, result)
        return result

    functools.update_wrapper(tracked_call, fn)
    return tracked_call


#: Below this many nested tracked runs no call checks the C stack (see _check_depth).
_GUARD_DEPTH = 2000
#: C stack a tracked call through wrapt takes per level, in bytes (measured on
#: CPython 3.11 x86-64: a tracked method crashed 8 MiB at 5,300-6,000 levels, about
#: 1.5 KiB each; rounded up, and only 3/4 of the stack is counted).
_BYTES_PER_LEVEL = 2048
_depth_limits: dict[int, int] = {}


def _stack_bytes(main: bool) -> int:
    """The size of the current thread's C stack (a conservative guess where unknown)."""
    default = 8 << 20
    limit = default
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_STACK)[0]
        if soft > 0 and soft != resource.RLIM_INFINITY:
            limit = soft
        elif main:
            limit = 64 << 20  # an unlimited main stack grows until memory runs out
    except (ImportError, OSError, ValueError):  # pragma: no cover - not POSIX
        pass
    if not main:
        configured = threading.stack_size()
        limit = configured if configured else min(limit, default)
    return limit


def _check_depth() -> None:
    """Raise ``RecursionError`` before nested tracked calls overflow the C stack.

    A tracked method (or a call with keyword arguments) takes a C frame per
    level; an untracked one does not. Rather than let deep recursion crash
    the interpreter, pcs stops it with the error Python raises for too deep
    recursion.
    """
    ident = threading.get_ident()
    limit = _depth_limits.get(ident)
    if limit is None:
        main = threading.current_thread() is threading.main_thread()
        limit = max(_GUARD_DEPTH, _stack_bytes(main) * 3 // 4 // _BYTES_PER_LEVEL)
        _depth_limits[ident] = limit
    nested = _stack.depth()
    if nested > limit:
        raise RecursionError(
            f"pcs: {nested} nested tracked calls would overflow this thread's C stack "
            f"(about {limit} fit). Raise the stack size (`ulimit -s` for the main thread, "
            "threading.stack_size() before starting a thread), or call the function with "
            "positional arguments only, which needs no C stack per level."
        )


def _sync_wrapper(tracker: Tracker) -> Callable[..., Any]:
    push, pop, depth = _stack.push, _stack.pop, _stack.depth

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        arguments = None if instance is not None else tracker.fast_arguments(args, kwargs)
        if arguments is not None:
            run = tracker.start_fast(arguments)
        else:
            run = tracker.begin(instance, args, kwargs)
        if run is None:
            return wrapped(*args, **kwargs)
        token = push(run)
        try:
            if depth() > _GUARD_DEPTH:
                _check_depth()
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            pop(token)
            tracker.finish(run, exc)
            raise
        pop(token)
        tracker.finish_returned(run, result)
        return result

    return wrapper


def _async_wrapper(tracker: Tracker) -> Callable[..., Any]:
    async def call(wrapped: Any, instance: Any, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> Any:
        run = tracker.begin(instance, args, kwargs)
        if run is None:
            return await wrapped(*args, **kwargs)
        token = _stack.push(run)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            _stack.pop(token)
            tracker.finish(run, exc)
            raise
        _stack.pop(token)
        tracker.finish(run, None, result)
        return result

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return call(wrapped, instance, args, kwargs)

    return wrapper


def _generator_wrapper(tracker: Tracker) -> Callable[..., Any]:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if suppressed():
            return wrapped(*args, **kwargs)
        prepared = tracker.prepare(instance, args, kwargs)
        return drive_generator(tracker, prepared, wrapped(*args, **kwargs))

    return wrapper


def _async_generator_wrapper(tracker: Tracker) -> Callable[..., Any]:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if suppressed():
            return wrapped(*args, **kwargs)
        prepared = tracker.prepare(instance, args, kwargs)
        return drive_async_generator(tracker, prepared, wrapped(*args, **kwargs))

    return wrapper


def _is_plain_function(fn: Any) -> bool:
    """A Python function not defined in a class body (methods keep wrapt's binding)."""
    if not isinstance(fn, FunctionType):
        return False
    owner, _, _ = fn.__qualname__.rpartition(".")
    return not owner or owner.endswith("<locals>")
