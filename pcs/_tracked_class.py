"""``@pcs.tracked`` on a class: its instances remember their ``__init__`` arguments.

A tracked method called on such an instance can then be replayed: the
replay builds an equal instance from the recorded arguments first. The
class itself is returned unchanged but for its ``__init__`` (and an
``__init_subclass__`` that tracks the ``__init__`` of every subclass).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from pcs._capture import capture
from pcs._tracker import INIT_ATTR, InitRecord, Options, recorded_arguments, warn_once

__all__ = ["TRACKED_CLASS_ATTR", "track_class"]

#: Attribute set (True) on every class decorated with ``@pcs.tracked``.
TRACKED_CLASS_ATTR = "__pcs_tracked_class__"


def track_class(cls: type, options: Options) -> type:
    """Record ``__init__`` arguments on each instance; return the same class."""
    original: Callable[..., None] = cls.__init__  # type: ignore[misc]
    signature = inspect.signature(original)
    first = next(iter(signature.parameters), None)

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if type(self) is cls or not isinstance(getattr(self, INIT_ATTR, None), InitRecord):
            try:
                bound = signature.bind(self, *args, **kwargs)
            except TypeError:
                bound = None  # a bad call: let __init__ raise its own TypeError
            if bound is not None:
                bound.apply_defaults()
                arguments = dict(bound.arguments)
                if first is not None:
                    arguments.pop(first, None)
                arguments = recorded_arguments(f"{cls.__qualname__}.__init__", arguments)
                record = InitRecord(
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


def _track_subclasses(cls: type, options: Options) -> None:
    """Subclasses that define their own ``__init__`` record its arguments too."""
    own = cls.__dict__.get("__init_subclass__")

    def __init_subclass__(sub: type, /, **kwargs: Any) -> None:
        if own is not None:
            own.__func__(sub, **kwargs)
        else:
            super(cls, sub).__init_subclass__(**kwargs)  # type: ignore[arg-type]
        if "__init__" in sub.__dict__:
            track_class(sub, options)

    cls.__init_subclass__ = classmethod(__init_subclass__)  # type: ignore[assignment]
