"""``pcs.run()`` blocks and the ``@pcs.tracked`` decorator.

Both push their Run on the context-local run stack (:mod:`pcs._stack`), so
runs nest along the real call tree: the innermost active run becomes the
parent (MLflow tag ``mlflow.parentRunId``) of every run started inside it, in
the same thread, in asyncio tasks created inside it, and — with
:func:`pcs.bind` or :func:`pcs.instrument_threads` — in worker threads.

Recording never changes what the user's code does: if pcs cannot record
(the store is unreachable, say), the call still runs and returns or raises
exactly as it would without pcs, and the failure is logged once.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Collection, Generator, Mapping
from dataclasses import dataclass
from types import FunctionType, TracebackType
from typing import Any, TypeVar, overload

import wrapt

from pcs import _events, _pools, _redaction, _stack
from pcs._backend import get_backend
from pcs._canon import DEFERRABLE_INT
from pcs._capture import SHORT_STR, Captured, capture, is_secret_name
from pcs.component import Component
from pcs.component_run import RETURN_FORMATS, ComponentRun
from pcs.exceptions import UsageError
from pcs.run import Run, remote_handle, status_for_exception

__all__ = ["RunBlock", "active_run", "flush", "last_run", "run", "tracked"]

_log = logging.getLogger("pcs")
F = TypeVar("F", bound=Callable[..., Any])

#: Attribute on instances of tracked classes holding their captured ``__init__`` arguments.
INIT_ATTR = "__pcs_init_arguments__"
TRACKED_CLASS_ATTR = "__pcs_tracked_class__"

#: the hot path's bounds on scalar arguments (see _Tracker.fast_arguments): those of the
#: argument policy and of deferred encoding, bound to module globals for speed
_FAST_STR = SHORT_STR
_FAST_INT = DEFERRABLE_INT
#: the redaction policy's test of a string for credentials: a string shorter than
#: _FAST_SECRET needs only a substring test for "://" (pcs._redaction.SHORT_TEXT), a longer
#: one the built-in patterns' regex. Once the user added patterns (which may match
#: anything), every string goes through the whole policy. Kept current by _policy_changed.
_secret_search: Callable[[str], object] = _redaction.DETECT.search
_FAST_SECRET = _redaction.SHORT_TEXT
#: every _Tracker, to recompute its fast_names when the redaction policy changes
_trackers: weakref.WeakSet[_Tracker] = weakref.WeakSet()


def _policy_changed() -> None:
    global _FAST_SECRET, _secret_search
    if _redaction.POLICY.extra is None:
        _FAST_SECRET, _secret_search = _redaction.SHORT_TEXT, _redaction.DETECT.search
    else:
        _FAST_SECRET, _secret_search = 0, _redaction.POLICY.secret_text
    for tracker in list(_trackers):
        tracker.fast_names = tracker.fast_path_names()


_redaction.on_change(_policy_changed)

_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_once(key: str, message: str, *args: Any) -> None:
    """Log a warning the first time ``key`` is seen in this process."""
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    _log.warning(message, *args)


def active_run() -> Run | None:
    """The innermost active Run of the current context, or None."""
    return _stack.active()


def last_run() -> Run | None:
    """The most recently ended Run that was started in the current context."""
    return _stack.last()


def flush(timeout: float | None = None) -> bool:
    """Block until everything recorded so far is in the tracking store.

    Runs, tags, params, metrics and artifacts are delivered by a background
    writer; ``flush`` waits for it (at most ``timeout`` seconds; returns False
    if that was not enough). It also runs at normal interpreter exit, and
    every read through pcs (``run.data``, ``run.info``, ``list_artifacts``...)
    flushes first.
    """
    from pcs._backend import flush_all

    return flush_all(timeout)


def _resolve_parent(parent: Run | str | None) -> Run | None:
    if parent is None:
        return _stack.active()
    if isinstance(parent, Run):
        return parent
    if isinstance(parent, str) and parent:
        return remote_handle(parent)  # maybe started by another process: wait for it if read
    raise UsageError(f"parent={parent!r} must be a pcs.Run or an MLflow run id string.")


# ---------------------------------------------------------------------------
# pcs.run(...)
# ---------------------------------------------------------------------------
class RunBlock:
    """The context manager returned by :func:`run` (``with`` and ``async with``)."""

    def __init__(
        self,
        name: str | None,
        experiment_id: str | None,
        tags: Mapping[str, Any] | None,
        params: Mapping[str, Any] | None,
        parent: Run | str | None,
    ) -> None:
        self._args = (name, experiment_id, tags, params)
        self._parent = parent
        self._run: Run | None = None
        self._token: Any = None

    def __enter__(self) -> Run:
        name, experiment_id, tags, params = self._args
        run = Run(
            experiment_id,
            name=name,
            tags=tags,
            params=_redaction.redact_params(params),
            parent=_resolve_parent(self._parent),
        )
        run._interrupted_at_exit = True  # still open at exit: its block never finished
        self._run = run
        self._token = _stack.push(run)
        _events.run_started(run)
        return run

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        run = self._run
        if run is None:
            return
        try:
            run._end_with_exception(exc)
        except Exception as err:
            warn_once(
                f"end:{type(err).__name__}",
                "pcs could not end run %s: %s. Check that the tracking store is reachable.",
                run.identifier,
                err,
            )
        finally:
            _stack.pop(self._token)
            _stack.set_last(run)
            _events.run_ended(run, status_for_exception(exc), exc)

    async def __aenter__(self) -> Run:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def run(
    name: str | None = None,
    *,
    experiment_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    parent: Run | str | None = None,
) -> RunBlock:
    """A new Run for a ``with`` or ``async with`` block, nested under the active run.

    ``parent`` (a Run or a run id) overrides the run stack — for a run that
    lives in another process, say. The run ends FINISHED when the block
    returns, FAILED on an exception, KILLED on KeyboardInterrupt or
    cancellation; the exception propagates unchanged.
    """
    return RunBlock(name, experiment_id, tags, params, parent)


# ---------------------------------------------------------------------------
# @pcs.tracked
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Options:
    name: str | None
    log_return_value: bool
    return_format: str
    redact: frozenset[str]
    exclude: frozenset[str]
    strict: bool


@dataclass(slots=True)
class _Prepared:
    """A call's captured arguments and RunCommand, before its run exists."""

    component: Component
    calls: dict[str, Any]
    captured: Captured
    parent: Run | None
    name: str
    tags: dict[str, str] | None


class _Tracker:
    """What ``@tracked`` knows about one callable, computed once at decoration."""

    def __init__(self, fn: Callable[..., Any], options: _Options) -> None:
        self.fn = fn
        self.options = options
        self.signature = inspect.signature(fn)
        self.params = list(self.signature.parameters.values())
        self.entry_point = fn.__name__
        self._components: dict[Any, Component] = {}
        # Plain positional-or-keyword parameters bind without Signature.bind (faster).
        kinds = {p.kind for p in self.params}
        self._simple: tuple[list[str], dict[str, Any]] | None = None
        if kinds <= {inspect.Parameter.POSITIONAL_OR_KEYWORD}:
            self._simple = (
                [p.name for p in self.params],
                {p.name: p.default for p in self.params if p.default is not p.empty},
            )
        #: the run name of a call of the function itself
        self.function_name = options.name or fn.__qualname__
        #: parameter names, when a call passing them all positionally may take the fast path
        self.fast_names: tuple[str, ...] | None = self.fast_path_names()
        _trackers.add(self)

    def fast_path_names(self) -> tuple[str, ...] | None:
        """The parameter names, if none is a secret, redacted or excluded (see fast_names)."""
        options = self.options
        if self._simple is None or any(
            name in options.redact or name in options.exclude or is_secret_name(name)
            for name in self._simple[0]
        ):
            return None
        return tuple(self._simple[0])

    def component(self, owner: Any) -> Component:
        """The Component of the function itself (``owner`` None) or of its class."""
        found = self._components.get(owner)
        if found is None:
            found = Component.from_callable(self.fn if owner is None else owner)
            self._components[owner] = found
        return found

    def bind(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by parameter name, defaults applied (``self``/``cls`` dropped)."""
        simple = self._simple
        if simple is not None and not kwargs:
            names, defaults = simple
            offset = 0 if instance is None else 1
            if len(args) + offset <= len(names):
                arguments = dict(zip(names[offset:], args, strict=False))
                if len(arguments) + offset < len(names):
                    for name in names[offset + len(arguments):]:
                        if name not in defaults:
                            break  # a missing argument: let Signature.bind say so
                        arguments[name] = defaults[name]
                    else:
                        return arguments
                else:
                    return arguments
        if instance is not None:
            bound = self.signature.bind(instance, *args, **kwargs)
        else:
            bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        if instance is not None:
            arguments.pop(self.params[0].name, None)
        return arguments

    def prepare(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Prepared:
        """Bind and capture the arguments (raises EncodingError only in strict mode)."""
        arguments = self.bind(instance, args, kwargs)
        reasons: list[str] = []
        owner: Any = None
        init: dict[str, Any] | None = None
        if instance is not None:
            owner = instance if isinstance(instance, type) else type(instance)
            if not isinstance(instance, type):
                recorded = getattr(instance, INIT_ATTR, None)
                if isinstance(recorded, _InitRecord):
                    init = recorded.captured.encoded
                    reasons.extend(f"__init__ {r}" for r in recorded.captured.reasons)
                else:
                    reasons.append(
                        f"the instance of {owner.__qualname__} was not created by a "
                        "@pcs.tracked class, so its __init__ arguments are unknown"
                    )
        opts = self.options
        captured = capture(
            arguments, redact=opts.redact, exclude=opts.exclude, strict=opts.strict,
            parameters=self.signature.parameters,
        )
        if reasons:
            captured.reasons[:0] = reasons
        component = self.component(owner)
        calls = {self.entry_point: captured.encoded}
        if init is not None:
            calls = {"__init__": init, **calls}
        name = opts.name or (
            self.fn.__qualname__ if owner is None else f"{component.qualname}.{self.entry_point}"
        )
        return _Prepared(component, calls, captured, _stack.active(), name,
                         _stack.take_call_tags())

    def fast_arguments(self, args: tuple[Any, ...]) -> dict[str, Any] | None:
        """The hot path's capture: the arguments as they are, if all are deferrable scalars.

        Applies to a call of a plain function that passes every parameter
        positionally, none of them named like a secret, redacted or excluded,
        each value a scalar JSON holds exactly (:func:`pcs._canon.is_deferrable`)
        — not a long string, nor one in which the redaction policy finds a
        credential (a URL with a password, a token...). The writer encodes them
        later, with the same result as :func:`capture`.
        """
        names = self.fast_names
        if names is None or len(args) != len(names):
            return None
        for value in args:
            kind = type(value)
            if kind is str:
                if len(value) > _FAST_STR or not value.isascii():
                    return None
                if len(value) < _FAST_SECRET:
                    if "://" in value:
                        return None
                elif _secret_search(value) is not None:
                    return None
            elif kind is float:
                if value - value:  # nan for nan and the infinities
                    return None
            elif kind is int:
                if not -_FAST_INT < value < _FAST_INT:
                    return None
            elif kind is not bool and value is not None:
                return None
        return dict(zip(names, args, strict=False))

    def start_fast(self, arguments: dict[str, Any]) -> ComponentRun | None:
        """:meth:`start` for arguments from :meth:`fast_arguments` (a function, no owner)."""
        return self._start_run(self._components.get(None), {self.entry_point: arguments}, [],
                               {}, {}, _stack.active(), self.function_name,
                               _stack.take_call_tags())

    def start(self, prepared: _Prepared) -> ComponentRun | None:
        """Create the call's run; None (and a warning, once) when it cannot be recorded."""
        captured = prepared.captured
        return self._start_run(prepared.component, prepared.calls, captured.reasons,
                               captured.params, captured.blobs, prepared.parent,
                               prepared.name, prepared.tags)

    def _start_run(
        self,
        component: Component | None,
        calls: dict[str, Any],
        reasons: list[str],
        params: dict[str, str],
        blobs: dict[str, bytes],
        parent: Run | None,
        name: str,
        tags: dict[str, str] | None,
    ) -> ComponentRun | None:
        try:
            if component is None:  # the function's own, made on its first call
                component = self.component(None)
            run = ComponentRun._start(get_backend(), component, self.entry_point, calls,
                                      reasons, params, blobs, parent, name, tags)
        except Exception as exc:
            self._start_failed(exc)
            return None
        if _events.observed:
            _events.run_started(run)
        return run

    def _start_failed(self, exc: Exception) -> None:
        """The call runs untracked: say so once."""
        warn_once(
            f"start:{type(exc).__name__}",
            "pcs could not record a call of %s (%s: %s); the call runs untracked. "
            "Check MLFLOW_TRACKING_URI and that the tracking store is reachable and "
            "writable.",
            self.fn.__qualname__,
            type(exc).__name__,
            exc,
        )

    def finish_returned(self, run: ComponentRun, value: Any) -> None:
        """:meth:`finish` for a call that returned ``value`` (the hot path); never raises."""
        try:
            if self.options.log_return_value:
                run._return_value = value
                run._finish("FINISHED", run._return_payload(value, self.options.return_format))
            else:
                run._finish("FINISHED", None)
        except Exception as err:
            self._warn_finish(run, err)
        finally:
            _stack.set_last(run)
            if _events.observed:
                _events.run_ended(run, "FINISHED", None)

    def _warn_finish(self, run: ComponentRun, err: Exception) -> None:
        warn_once(
            f"finish:{type(err).__name__}",
            "pcs could not record the end of run %s of %s (%s: %s). Check that the "
            "tracking store is reachable and writable.",
            run.identifier,
            self.fn.__qualname__,
            type(err).__name__,
            err,
        )

    def finish(
        self,
        run: ComponentRun,
        exc: BaseException | None,
        value: Any = None,
        has_value: bool = True,
    ) -> None:
        """Record the outcome; never raises."""
        status = status_for_exception(exc)
        try:
            if exc is None and has_value and self.options.log_return_value:
                run._record_return_value(value, self.options.return_format)
            run._end_with_exception(exc)
        except Exception as err:
            self._warn_finish(run, err)
        finally:
            _stack.set_last(run)
            _events.run_ended(run, status, exc)

    def begin(
        self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> ComponentRun | None:
        return self.start(self.prepare(instance, args, kwargs))


def _plain_function(fn: Callable[..., Any], tracker: _Tracker) -> Callable[..., Any]:
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
        arguments = None if kwargs else fast_arguments(args)
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


def _sync_wrapper(tracker: _Tracker) -> Callable[..., Any]:
    push, pop, depth = _stack.push, _stack.pop, _stack.depth

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        arguments = None if instance is not None or kwargs else tracker.fast_arguments(args)
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


def _async_wrapper(tracker: _Tracker) -> Callable[..., Any]:
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


def _generator_wrapper(tracker: _Tracker) -> Callable[..., Any]:
    def drive(prepared: _Prepared, gen: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
        run = tracker.start(prepared)
        if run is None:
            return (yield from gen)
        to_send: Any = None
        to_throw: BaseException | None = None
        try:
            while True:
                token = _stack.push(run)
                try:
                    item = gen.throw(to_throw) if to_throw is not None else gen.send(to_send)
                finally:
                    _stack.pop(token)
                    to_throw = None
                try:
                    to_send = yield item
                except GeneratorExit:
                    raise
                except BaseException as exc:
                    to_throw = exc
        except StopIteration as stop:
            tracker.finish(run, None, stop.value)
            return stop.value
        except GeneratorExit:
            # The consumer closed the generator early: a normal ending.
            token = _stack.push(run)
            try:
                gen.close()
            finally:
                _stack.pop(token)
            tracker.finish(run, None, has_value=False)
            raise
        except BaseException as exc:
            tracker.finish(run, exc)
            raise

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        prepared = tracker.prepare(instance, args, kwargs)
        return drive(prepared, wrapped(*args, **kwargs))

    return wrapper


def _async_generator_wrapper(tracker: _Tracker) -> Callable[..., Any]:
    async def drive(
        prepared: _Prepared, agen: AsyncGenerator[Any, Any]
    ) -> AsyncGenerator[Any, Any]:
        run = tracker.start(prepared)
        if run is None:
            async for item in agen:
                yield item
            return
        to_send: Any = None
        to_throw: BaseException | None = None
        try:
            while True:
                token = _stack.push(run)
                try:
                    if to_throw is not None:
                        item = await agen.athrow(to_throw)
                    else:
                        item = await agen.asend(to_send)
                finally:
                    _stack.pop(token)
                    to_throw = None
                try:
                    to_send = yield item
                except GeneratorExit:
                    raise
                except BaseException as exc:
                    to_throw = exc
        except StopAsyncIteration:
            tracker.finish(run, None, has_value=False)
        except GeneratorExit:
            token = _stack.push(run)
            try:
                await agen.aclose()
            finally:
                _stack.pop(token)
            tracker.finish(run, None, has_value=False)
            raise
        except BaseException as exc:
            tracker.finish(run, exc)
            raise

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        prepared = tracker.prepare(instance, args, kwargs)
        return drive(prepared, wrapped(*args, **kwargs))

    return wrapper


@dataclass(frozen=True)
class _InitRecord:
    """The captured ``__init__`` arguments of an instance of a tracked class."""

    captured: Captured


def _track_class(cls: type, options: _Options) -> type:
    """Record ``__init__`` arguments on each instance; return the same class."""
    original: Callable[..., None] = cls.__init__  # type: ignore[misc]
    signature = inspect.signature(original)
    first = next(iter(signature.parameters), None)

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if type(self) is cls or not isinstance(getattr(self, INIT_ATTR, None), _InitRecord):
            try:
                bound = signature.bind(self, *args, **kwargs)
            except TypeError:
                bound = None  # a bad call: let __init__ raise its own TypeError
            if bound is not None:
                bound.apply_defaults()
                arguments = dict(bound.arguments)
                if first is not None:
                    arguments.pop(first, None)
                record = _InitRecord(
                    capture(arguments, redact=options.redact, exclude=options.exclude,
                            strict=options.strict)
                )
                try:
                    object.__setattr__(self, INIT_ATTR, record)
                except (AttributeError, TypeError):
                    warn_once(
                        f"init:{cls.__qualname__}",
                        "pcs cannot record __init__ arguments on instances of %s (no "
                        "__dict__); their tracked methods are not reproducible.",
                        cls.__qualname__,
                    )
        original(self, *args, **kwargs)

    cls.__init__ = __init__  # type: ignore[misc]
    if not cls.__dict__.get(TRACKED_CLASS_ATTR):
        _track_subclasses(cls, options)
    setattr(cls, TRACKED_CLASS_ATTR, True)
    return cls


def _track_subclasses(cls: type, options: _Options) -> None:
    """Subclasses that define their own ``__init__`` record its arguments too."""
    own = cls.__dict__.get("__init_subclass__")

    def __init_subclass__(sub: type, /, **kwargs: Any) -> None:
        if own is not None:
            own.__func__(sub, **kwargs)
        else:
            super(cls, sub).__init_subclass__(**kwargs)  # type: ignore[arg-type]
        if "__init__" in sub.__dict__:
            _track_class(sub, options)

    cls.__init_subclass__ = classmethod(__init_subclass__)  # type: ignore[assignment]


@overload
def tracked(fn: F, /) -> F: ...


@overload
def tracked(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    log_return_value: bool = True,
    return_format: str = "json",
    redact: Collection[str] = (),
    exclude: Collection[str] = (),
    strict: bool = False,
) -> Callable[[F], F]: ...


def tracked(
    fn: Any = None,
    /,
    *,
    name: str | None = None,
    log_return_value: bool = True,
    return_format: str = "json",
    redact: Collection[str] = (),
    exclude: Collection[str] = (),
    strict: bool = False,
) -> Any:
    """Record every call of a function, method or class as a :class:`pcs.ComponentRun`.

    Use as ``@pcs.tracked`` or ``@pcs.tracked(...)`` on functions, async
    functions, generators, async generators, methods, classmethods and
    staticmethods (put it outside ``@classmethod``/``@staticmethod``) and
    classes (their instances remember their ``__init__`` arguments, so tracked
    methods on them can be replayed).

    Options: ``name`` (the MLflow run name; default the qualified name),
    ``log_return_value`` (default True), ``return_format`` (``"json"``,
    ``"yaml"`` or ``"pickle"``), ``redact`` and ``exclude`` (argument names
    stored as ``<redacted>``), ``strict`` (raise :class:`pcs.EncodingError`
    before the call when an argument cannot be captured exactly).
    """
    if return_format not in RETURN_FORMATS:
        raise UsageError(
            f"@pcs.tracked(return_format={return_format!r}): use one of "
            f"{', '.join(RETURN_FORMATS)}."
        )
    for label, names in (("redact", redact), ("exclude", exclude)):
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise UsageError(
                f"@pcs.tracked({label}=...) takes a collection of argument names, e.g. "
                f"{label}=('password',); got {names!r}."
            )
    options = _Options(
        name, bool(log_return_value), return_format, frozenset(redact), frozenset(exclude),
        bool(strict),
    )
    if fn is None:
        return functools.partial(_decorate, options=options)
    return _decorate(fn, options=options)


def _decorate(fn: Any, options: _Options) -> Any:
    if isinstance(fn, type):
        return _track_class(fn, options)
    target = fn.__func__ if isinstance(fn, classmethod | staticmethod) else fn
    if not callable(target):
        raise UsageError(
            f"@pcs.tracked cannot decorate {fn!r}: it is not a function, method or class."
        )
    tracker = _Tracker(target, options)
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
    decorated = wrapt.decorator(proxy=_TrackedWrapper)(wrapper)(fn)
    decorated.__pcs_tracked__ = tracker  # type: ignore[attr-defined]
    # where the worker of a process pool finds it again (see _TrackedWrapper.__reduce_ex__)
    decorated._self_pcs_reference = (  # type: ignore[attr-defined]
        getattr(target, "__module__", None), getattr(target, "__qualname__", None)
    )
    return decorated


def _is_plain_function(fn: Any) -> bool:
    """A Python function not defined in a class body (methods keep wrapt's binding)."""
    if not isinstance(fn, FunctionType):
        return False
    owner, _, _ = fn.__qualname__.rpartition(".")
    return not owner or owner.endswith("<locals>")


def _import_by_reference(module: str, qualname: str) -> Any:
    """The object named ``module:qualname``, imported (how a tracked callable unpickles)."""
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _reference(proxy: Any) -> tuple[str, str]:
    """``(module, qualname)`` of a tracked callable that pickles by reference, checked."""
    import pickle

    module, qualname = getattr(proxy, "_self_pcs_reference", (None, None))
    if not module or not qualname or "<locals>" in qualname:
        raise pickle.PicklingError(
            f"Can't pickle tracked callable {qualname or proxy!r}: it is not importable by "
            "module and qualified name (define it at module or class level)."
        )
    try:
        owner: Any = importlib.import_module(module)
        parts = qualname.split(".")
        for part in parts[:-1]:
            owner = getattr(owner, part)
        found = inspect.getattr_static(owner, parts[-1])
    except (ImportError, AttributeError):
        found = None
    if found is not proxy:
        raise pickle.PicklingError(
            f"Can't pickle tracked callable {module}.{qualname}: it's not the same object "
            f"as {module}.{qualname}."
        )
    return module, qualname


class _BoundTrackedWrapper(wrapt.BoundFunctionWrapper[Any, Any]):
    """A tracked method bound to an instance or class: pickles like a bound method."""

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, tuple[Any, ...]]:
        parent = self._self_parent
        module, qualname = _reference(parent)
        instance = self._self_instance
        if instance is None or self._self_binding == "staticmethod":
            return (_import_by_reference, (module, qualname))
        return (getattr, (instance, qualname.rpartition(".")[2]))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.__reduce_ex__(2)


class _TrackedWrapper(wrapt.FunctionWrapper[Any, Any]):
    """wrapt's FunctionWrapper that pickles by reference, as the plain function does."""

    __bound_function_wrapper__ = _BoundTrackedWrapper

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, tuple[str, str]]:
        return (_import_by_reference, _reference(self))

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return self.__reduce_ex__(2)


def is_tracked(obj: Any) -> bool:
    """True for a callable or class decorated with ``@pcs.tracked``."""
    return getattr(obj, "__pcs_tracked__", None) is not None or bool(
        isinstance(obj, type) and obj.__dict__.get(TRACKED_CLASS_ATTR)
    )


# Tasks submitted to process pools while a run is active nest under it in the workers
# (see pcs._pools; PCS_INSTRUMENT_POOLS=0 turns this off).
_pools.install()

