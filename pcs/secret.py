"""``pcs.Secret``: a value pcs must never hash, log or persist."""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["Secret"]

T = TypeVar("T")


class Secret(Generic[T]):
    """Wrap a secret so that tracked calls record ``<redacted>`` instead of it.

    ``Secret("hunter2").get()`` returns the value; ``repr`` and ``str`` never
    show it. A tracked call that received a Secret is not reproducible unless
    the value is supplied again at replay.
    """

    __slots__ = ("_value",)

    def __init__(self, value: T) -> None:
        self._value = value

    def get(self) -> T:
        """The wrapped value."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('<redacted>')"

    __str__ = __repr__

    def __reduce__(self) -> tuple[type[Secret[T]], tuple[T]]:
        return (type(self), (self._value,))
