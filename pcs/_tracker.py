"""What ``@pcs.tracked`` knows about one callable, and how one call of it is recorded.

A :class:`Tracker` is made once, when the callable is decorated. For each
call the wrappers (:mod:`pcs._wrappers`) ask it to bind and capture the
arguments (:meth:`Tracker.prepare`, or :meth:`Tracker.fast_arguments` on the
hot path), to start the call's ComponentRun and to finish it;
:meth:`Tracker.call` makes a whole call and returns the run it created, which
is what a replay needs. Recording never changes what the call does: a run
that cannot be started or ended is logged once and the call goes on.
"""

from __future__ import annotations

import inspect
import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import MethodType
from typing import Any

from pcs import _events, _lineage, _redaction, _stack
from pcs._canon import DEFERRABLE_INT, EXTENSIONS
from pcs._capture import SHORT_STR, Captured, capture, is_secret_name
from pcs._generators import drive_async_generator, drive_generator
from pcs._naming import fast_run_name, run_name
from pcs._store import get_backend
from pcs._store.uri import import_lock
from pcs._suppress import suppressed
from pcs.component import Component
from pcs.component_run import ComponentRun, finish_call, recorded_id, start_call
from pcs.conventions import MAX_TAG_VALUE_LENGTH
from pcs.run import Run, end_with_exception, status_for_exception

__all__ = [
    "INIT_ATTR",
    "CallOutcome",
    "InitRecord",
    "Options",
    "Prepared",
    "Tracker",
    "ensure_plugins",
    "recorded_arguments",
    "warn_once",
]

_log = logging.getLogger("pcs")

#: Attribute on instances of tracked classes holding their captured ``__init__`` arguments.
INIT_ATTR = "__pcs_init_arguments__"

#: the hot path's bounds on scalar arguments (see Tracker.fast_arguments): those of the
#: argument policy and of deferred encoding, bound to module globals for speed
_FAST_STR = SHORT_STR
_FAST_INT = DEFERRABLE_INT
#: the redaction policy's test of a string for credentials: a string shorter than
#: _FAST_SECRET needs only a substring test for "://" (pcs._redaction.SHORT_TEXT), a longer
#: one the built-in patterns' regex. Once the user added patterns (which may match
#: anything), every string goes through the whole policy. Kept current by _policy_changed.
_secret_search: Callable[[str], object] = _redaction.DETECT.search
_FAST_SECRET = _redaction.SHORT_TEXT
#: every Tracker, to recompute its fast_names when the redaction policy changes
_trackers: weakref.WeakSet[Tracker] = weakref.WeakSet()


def _policy_changed() -> None:
    global _FAST_SECRET, _secret_search
    if _redaction.POLICY.extra is None:
        _FAST_SECRET, _secret_search = _redaction.SHORT_TEXT, _redaction.DETECT.search
    else:
        _FAST_SECRET, _secret_search = 0, _redaction.POLICY.secret_text
    _plugins_changed()


def _plugins_changed() -> None:
    for tracker in list(_trackers):
        tracker.fast_names = tracker.fast_path_names()


_redaction.on_change(_policy_changed)
_events.on_plugins_change(_plugins_changed)


def ensure_plugins() -> None:
    """Load the entry-point plugins, the first time a run needs them (see :mod:`pcs.plugins`)."""
    if not _events.plugins_loaded:
        with import_lock():  # fork() waits for these imports (see pcs._store.lifecycle)
            from pcs.plugins import load

            load()


#: returned values lineage never follows (no identity of their own): one set lookup
_NO_LINEAGE = _lineage.NO_IDENTITY


def _with_lineage(
    tags: dict[str, str] | None, instance: Any, arguments: dict[str, Any]
) -> dict[str, str] | None:
    """``tags`` plus the lineage tags of a call receiving values tracked calls returned."""
    if instance is not None and not isinstance(instance, type):
        inputs = _lineage.inputs_of({"self": instance, **arguments})
    else:
        inputs = _lineage.inputs_of(arguments)
    if not inputs:
        return tags
    return {**(tags or {}), **_lineage.tags_for(inputs, MAX_TAG_VALUE_LENGTH)}


# A value of a type pcs does not know loads the plugins first: one of them may encode it.
EXTENSIONS.set_loader(ensure_plugins)


def recorded_arguments(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments of a call of ``name`` as pcs records them: after the plugins' hook.

    Loads the entry-point plugins on the first call that needs them (the
    fast path is off until then, see :meth:`Tracker.fast_path_names`).
    """
    ensure_plugins()
    hook = _events.arguments_hook
    if hook is None:
        return arguments
    return hook(_stack.active(), name, arguments)

#: the keys warn_once has seen
_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_once(key: str, message: str, *args: Any) -> None:
    """Log a warning the first time ``key`` is seen in this process."""
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    _log.warning(message, *args)


@dataclass(frozen=True)
class Options:
    """The options of ``@pcs.tracked(...)`` (see :func:`pcs.tracked`)."""

    name: str | None
    log_return_value: bool
    return_format: str
    redact: frozenset[str]
    exclude: frozenset[str]
    strict: bool


@dataclass(frozen=True)
class InitRecord:
    """The captured ``__init__`` arguments of an instance of a tracked class."""

    captured: Captured


class Prepared:
    """A call's captured arguments and RunCommand, before its run exists.

    A plain class, not a dataclass: building a dataclass costs ``import pcs``
    about half a millisecond.
    """

    __slots__ = ("calls", "captured", "component", "name", "parent", "run", "tags")

    def __init__(
        self,
        component: Component,
        calls: dict[str, Any],
        captured: Captured,
        parent: Run | None,
        name: str,
        tags: dict[str, str] | None,
    ) -> None:
        self.component = component
        self.calls = calls
        self.captured = captured
        self.parent = parent
        self.name = name
        #: extra tags for the run (a replay's)
        self.tags = tags
        #: the call's run, once :meth:`Tracker.start` made it (None: not recorded)
        self.run: ComponentRun | None = None


class CallOutcome:
    """How a call made by :meth:`Tracker.call` went: its run, and the exception it raised.

    A plain class, not a dataclass: building a dataclass costs ``import pcs``
    about half a millisecond.
    """

    __slots__ = ("error", "run")

    def __init__(self, run: ComponentRun | None, error: Exception | None) -> None:
        #: the run the call created; None when pcs could not record it (it ran untracked)
        self.run = run
        #: the ``Exception`` the call raised, or None
        self.error = error

    def __repr__(self) -> str:
        return f"CallOutcome(run={self.run!r}, error={self.error!r})"


class Tracker:
    """What ``@tracked`` knows about one callable, computed once at decoration.

    The decorated callable holds it as ``__pcs_tracked__``. The wrappers call
    :meth:`begin` (or :meth:`prepare` and :meth:`start`) and :meth:`finish`;
    :meth:`call` makes a whole call and returns the run it created, which is
    what a replay needs.
    """

    def __init__(self, fn: Callable[..., Any], options: Options) -> None:
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
        #: the format the return value is logged in (None: not logged)
        self.log_format = options.return_format if options.log_return_value else None
        #: parameter names, when a call passing them all positionally may take the fast path
        self.fast_names: tuple[str, ...] | None = self.fast_path_names()
        _trackers.add(self)

    def fast_path_names(self) -> tuple[str, ...] | None:
        """The parameter names, if none is a secret, redacted or excluded (see fast_names).

        None too until the plugins are loaded, and while a plugin rewrites arguments.
        """
        options = self.options
        if not _events.plugins_loaded or _events.arguments_hook is not None:
            return None
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

    def prepare(
        self,
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        tags: dict[str, str] | None = None,
    ) -> Prepared:
        """Bind and capture the arguments (raises EncodingError only in strict mode).

        ``tags``: extra tags for the call's run (a replay's, see :meth:`call`).
        """
        arguments = self.bind(instance, args, kwargs)
        reasons: list[str] = []
        owner: Any = None
        init: dict[str, Any] | None = None
        if instance is not None:
            owner = instance if isinstance(instance, type) else type(instance)
        opts = self.options
        component = self.component(owner)
        name = opts.name or run_name(
            self.fn.__qualname__ if owner is None else f"{component.qualname}.{self.entry_point}",
            arguments, self.signature.parameters, opts.redact, opts.exclude,
        )
        tags = _with_lineage(tags, instance, arguments)
        arguments = recorded_arguments(name, arguments)
        if instance is not None and not isinstance(instance, type):
            recorded = getattr(instance, INIT_ATTR, None)
            if isinstance(recorded, InitRecord):
                init = recorded.captured.encoded
                reasons.extend(f"__init__ {r}" for r in recorded.captured.reasons)
            else:
                reasons.append(
                    f"the instance of {owner.__qualname__} was not created by a "
                    "@pcs.tracked class, so its __init__ arguments are unknown"
                )
        captured = capture(
            arguments, redact=opts.redact, exclude=opts.exclude, strict=opts.strict,
            parameters=self.signature.parameters,
        )
        if reasons:
            captured.reasons[:0] = reasons
        calls = {self.entry_point: captured.encoded}
        if init is not None:
            calls = {"__init__": init, **calls}
        return Prepared(component, calls, captured, _stack.active(), name, tags)

    def fast_arguments(self, args: tuple[Any, ...],
                       kwargs: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The hot path's capture: the arguments as they are, if all are deferrable scalars.

        Applies to a call of a plain function that passes every parameter, positionally
        or by keyword (the positional ones first), none of them named like a secret,
        redacted or excluded,
        each value a scalar JSON holds exactly (:func:`pcs._canon.is_deferrable`)
        — not a long string, nor one in which the redaction policy finds a
        credential (a URL with a password, a token...). The writer encodes them
        later, with the same result as :func:`capture`.
        """
        names = self.fast_names
        if names is None:
            return None
        values = args
        if kwargs:
            count = len(args)
            if count + len(kwargs) != len(names):
                return None
            try:
                values = (*args, *[kwargs[name] for name in names[count:]])
            except KeyError:  # a keyword for a parameter passed positionally, or unknown
                return None
        elif len(args) != len(names):
            return None
        for value in values:
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
        return dict(zip(names, values, strict=False))

    def start_fast(self, arguments: dict[str, Any]) -> ComponentRun | None:
        """:meth:`start` for arguments from :meth:`fast_arguments` (a function, no owner)."""
        name = self.options.name or fast_run_name(self.function_name, arguments,
                                                  self._simple[1])  # type: ignore[index]
        return self._start_run(self._components.get(None), {self.entry_point: arguments}, [],
                               {}, {}, _stack.active(), name, None)

    def start(self, prepared: Prepared) -> ComponentRun | None:
        """Create the call's run; None (and a warning, once) when it cannot be recorded."""
        captured = prepared.captured
        prepared.run = run = self._start_run(
            prepared.component, prepared.calls, captured.reasons, captured.params,
            captured.blobs, prepared.parent, prepared.name, prepared.tags,
        )
        return run

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
        if suppressed():  # inside pcs.untracked(): a plain call
            return None
        try:
            if component is None:  # the function's own, made on its first call
                component = self.component(None)
            run = start_call(get_backend(), component, self.entry_point, calls, reasons, params,
                             blobs, parent, name, tags)
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
            if type(value) not in _NO_LINEAGE:
                _lineage.produced(value, recorded_id(run))
            finish_call(run, value, self.log_format)
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
            if exc is None:
                if has_value and type(value) not in _NO_LINEAGE:
                    _lineage.produced(value, recorded_id(run))
                finish_call(run, value, self.log_format if has_value else None)
            else:
                end_with_exception(run, exc)
        except Exception as err:
            self._warn_finish(run, err)
        finally:
            _stack.set_last(run)
            _events.run_ended(run, status, exc)

    def begin(
        self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> ComponentRun | None:
        if suppressed():
            return None
        return self.start(self.prepare(instance, args, kwargs))

    def call(
        self,
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        tags: dict[str, str],
    ) -> CallOutcome:
        """Make one call as a tracked call whose run gets ``tags``; return the run and error.

        For callers that need the run a call creates (a replay) rather than
        its result. ``instance`` is what the call is bound to, as wrapt passes
        it: the instance of a method, the class of a classmethod, None for
        functions and staticmethods. The run nests under the active run; a
        generator is driven to its end. The call's ``Exception`` is returned
        in the outcome, not raised. Coroutine functions and async generators
        go through :meth:`call_async`.
        """
        fn = self.fn if instance is None else MethodType(self.fn, instance)
        prepared: Prepared | None = None
        try:
            prepared = self.prepare(instance, args, kwargs, tags)
            if inspect.isgeneratorfunction(self.fn):
                for _item in drive_generator(self, prepared, fn(*args, **kwargs)):
                    pass
            else:
                run = self.start(prepared)
                if run is None:
                    fn(*args, **kwargs)
                else:
                    token = _stack.push(run)
                    try:
                        result = fn(*args, **kwargs)
                    except BaseException as exc:
                        _stack.pop(token)
                        self.finish(run, exc)
                        raise
                    _stack.pop(token)
                    self.finish_returned(run, result)
        except Exception as exc:
            return CallOutcome(prepared.run if prepared is not None else None, exc)
        return CallOutcome(prepared.run, None)

    async def call_async(
        self,
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        tags: dict[str, str],
    ) -> CallOutcome:
        """:meth:`call` for a coroutine function or an async generator (driven to its end)."""
        fn = self.fn if instance is None else MethodType(self.fn, instance)
        prepared: Prepared | None = None
        try:
            prepared = self.prepare(instance, args, kwargs, tags)
            if inspect.isasyncgenfunction(self.fn):
                async for _item in drive_async_generator(self, prepared, fn(*args, **kwargs)):
                    pass
            else:
                run = self.start(prepared)
                if run is None:
                    await fn(*args, **kwargs)
                else:
                    token = _stack.push(run)
                    try:
                        result = await fn(*args, **kwargs)
                    except BaseException as exc:
                        _stack.pop(token)
                        self.finish(run, exc)
                        raise
                    _stack.pop(token)
                    self.finish(run, None, result)
        except Exception as exc:
            return CallOutcome(prepared.run if prepared is not None else None, exc)
        return CallOutcome(prepared.run, None)
