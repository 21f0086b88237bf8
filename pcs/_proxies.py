"""The wrapt proxies of tracked methods, classmethods, staticmethods and of the tracked
generators and coroutine functions: wrapt's ``FunctionWrapper`` that pickles by reference
(module and qualified name), as a tracked plain function does.

Imported by :mod:`pcs._wrappers` the first time it wraps something other than a plain
function: importing wrapt costs tens of milliseconds (it imports asyncio and
importlib.metadata), which ``import pcs`` does not pay.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import wrapt

__all__ = ["decorate"]


def decorate(wrapper: Callable[..., Any], fn: Any) -> Any:
    """``fn`` wrapped by ``wrapper(wrapped, instance, args, kwargs)`` (wrapt's decorator
    protocol), as a proxy that binds like ``fn`` and pickles by reference."""
    return wrapt.decorator(proxy=_TrackedWrapper)(wrapper)(fn)


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
    #: ``(module, qualname)`` of the tracked callable, where the worker of a process pool
    #: finds it again (set by :func:`wrap`; wrapt keeps ``_self_`` names on the proxy)
    _self_pcs_reference: tuple[str | None, str | None] = (None, None)

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, tuple[str, str]]:
        return (_import_by_reference, _reference(self))

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return self.__reduce_ex__(2)
