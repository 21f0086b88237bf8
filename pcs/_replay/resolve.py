"""Finding the callable to replay: import its module, walk ``module:qualname`` statically.

Nothing but the module import runs code: attributes are read with
:func:`inspect.getattr_static` (no descriptors, properties or
``__getattr__``), and anything that is not ``@pcs.tracked`` is refused before
it could be called.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pcs._replay.refusal import Refusal
from pcs.component import Component, clear_git_cache
from pcs.exceptions import ReplayError, UnsafeReplayError
from pcs.tracking import TRACKED_CLASS_ATTR, Tracker

__all__ = ["Target", "resolve"]

_NOT_TRACKED = (
    "pcs runs only @pcs.tracked code (a spec can name any importable callable, such as "
    "os:system). If this is your code, decorate it with @pcs.tracked and record the "
    "call again."
)


@dataclass(frozen=True)
class Target:
    """The tracked callable a replay will call."""

    kind: str  # "function", "method", "classmethod" or "staticmethod"
    owner: Any  # the module or class holding the entry point
    entry_point: str
    tracker: Tracker
    current: Component  # the code identity of what is importable now

    def signatures(self) -> dict[str, inspect.Signature]:
        """The signatures to bind, by entry point (``__init__`` first for methods)."""
        signature = self.tracker.signature
        params = list(signature.parameters.values())
        result: dict[str, inspect.Signature] = {}
        if self.kind == "method":
            init = inspect.signature(self.owner.__init__)
            result["__init__"] = init.replace(parameters=list(init.parameters.values())[1:])
        if self.kind in ("method", "classmethod"):
            signature = signature.replace(parameters=params[1:])
        result[self.entry_point] = signature
        return result

    def receiver(self, init: tuple[tuple[Any, ...], dict[str, Any]] | None) -> Any:
        """What the call is bound to: a new instance for a method, the class for a classmethod.

        None for functions and staticmethods. A method's instance is created
        from its recorded ``__init__`` arguments ``init``.
        """
        if self.kind == "classmethod":
            return self.owner
        if self.kind != "method":
            return None
        args, kwargs = init if init is not None else ((), {})
        try:
            return self.owner(*args, **kwargs)
        except Exception as exc:
            raise Refusal(
                ReplayError,
                f"re-creating the {self.owner.__qualname__} instance from its recorded __init__ "
                f"arguments raised {type(exc).__name__}: {exc}",
            ) from exc


def resolve(component: Component, entry_point: str, calls: Mapping[str, Any]) -> Target:
    """Import the component's module and find its tracked entry point, or refuse."""
    clear_git_cache()  # the work tree may have changed since this process looked
    module = _import_module(component.module)
    owner: Any = module
    obj: Any = module
    where = f"module {component.module!r}"
    for part in component.qualname.split("."):
        owner = obj
        obj = _static(obj, part, where)
        where = f"{component.module}:{part}" if owner is module else f"{where}.{part}"
    if isinstance(obj, type):
        return _resolve_in_class(obj, component, entry_point, calls)
    tracker = _tracker_of(obj)
    if tracker is None:
        raise Refusal(UnsafeReplayError, f"{component.path} is not a @pcs.tracked callable. "
                      f"{_NOT_TRACKED}")
    if tracker.entry_point != entry_point:
        raise Refusal(
            ReplayError,
            f"{component.path} is now a callable named {tracker.entry_point!r}, not "
            f"{entry_point!r}; the code changed since the run was recorded.",
        )
    return Target("function", owner, entry_point, tracker, Component.from_callable(tracker.fn))


def _resolve_in_class(
    cls: type, component: Component, entry_point: str, calls: Mapping[str, Any]
) -> Target:
    raw = _static(cls, entry_point, f"class {component.path}")
    tracker = _tracker_of(raw)
    if tracker is None:
        raise Refusal(
            UnsafeReplayError,
            f"{component.path}.{entry_point} is not a @pcs.tracked callable. {_NOT_TRACKED}",
        )
    wrapped = getattr(raw, "__wrapped__", None)
    if isinstance(wrapped, classmethod):
        kind = "classmethod"
    elif isinstance(wrapped, staticmethod):
        kind = "staticmethod"
    else:
        kind = "method"
        if not _is_tracked_class(cls):
            raise Refusal(
                UnsafeReplayError,
                f"class {component.path} is not a @pcs.tracked class, so pcs will not "
                f"create an instance of it to call {entry_point}. {_NOT_TRACKED}",
            )
        if "__init__" not in calls:
            raise Refusal(
                ReplayError,
                f"the __init__ arguments of the {component.qualname} instance were not "
                "recorded (its class was not @pcs.tracked when the call was made); decorate "
                "the class with @pcs.tracked and record the call again.",
            )
    return Target(kind, cls, entry_point, tracker, Component.from_callable(cls))


def _import_module(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
            raise Refusal(
                ReplayError,
                f"module {module!r} no longer exists (it cannot be imported from sys.path). "
                "Install or restore the code that defined it, or put its folder on sys.path "
                "(PYTHONPATH).",
            ) from None
        raise Refusal(
            ReplayError,
            f"importing module {module!r} failed: ModuleNotFoundError: {exc}. Install what it "
            "imports.",
        ) from exc
    except Exception as exc:
        raise Refusal(
            ReplayError,
            f"importing module {module!r} raised {type(exc).__name__}: {exc}. Fix the module.",
        ) from exc


def _static(obj: Any, name: str, where: str) -> Any:
    """``getattr`` without running descriptors, properties or ``__getattr__``."""
    try:
        return inspect.getattr_static(obj, name)
    except AttributeError:
        raise Refusal(
            ReplayError,
            f"{where} has no attribute {name!r} any more; it was renamed, moved or deleted "
            "since the run was recorded.",
        ) from None


def _tracker_of(obj: Any) -> Tracker | None:
    try:
        found = inspect.getattr_static(obj, "__pcs_tracked__", None)
    except Exception:
        return None
    return found if isinstance(found, Tracker) else None


def _is_tracked_class(cls: type) -> bool:
    return any(
        isinstance(base.__dict__, Mapping) and base.__dict__.get(TRACKED_CLASS_ATTR)
        for base in cls.__mro__
    )
