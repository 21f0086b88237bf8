"""How a location inside a value is named in messages: ``args['x'][2].keys()['k']``.

The encoder keeps a list of path *segments* while it descends (a list index,
a dict key or value, a namedtuple field, a set element) and spells it with
:func:`format_path` only when it needs to: in an error or a redaction report.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["SET_ELEMENT", "Field", "KeyOf", "ValueAt", "format_path", "short_key"]


class KeyOf:
    """Path segment: the key itself (not its value) of a dict entry."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key


class ValueAt:
    """Path segment: the value stored under ``key``."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key


class Field:
    """Path segment: a named field (namedtuple)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


SET_ELEMENT: Final = object()
"""Path segment: an element of a set (sets have no index)."""


def short_key(key: Any) -> str:
    """A dict key as a path shows it: the repr of a simple key, else its type; at most 60."""
    if type(key) in (str, int, bool, float) or key is None:
        text = repr(key)
    else:
        text = f"<{type(key).__name__} key>"
    return text if len(text) <= 60 else text[:57] + "..."


def format_path(root: str, segments: list[Any]) -> str:
    """``root`` followed by each segment (an ``int`` is a sequence index)."""
    parts = [root]
    for seg in segments:
        if isinstance(seg, int):
            parts.append(f"[{seg}]")
        elif isinstance(seg, ValueAt):
            parts.append(f"[{short_key(seg.key)}]")
        elif isinstance(seg, KeyOf):
            parts.append(f".keys()[{short_key(seg.key)}]")
        elif isinstance(seg, Field):
            parts.append(f".{seg.name}")
        else:
            parts.append(".<set element>")
    return "".join(parts)
