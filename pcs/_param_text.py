"""How a captured argument reads as an MLflow param (``arg.<name>``, ``init.<name>``).

A param is for reading and comparing runs in the MLflow UI, not for storing
the value: the value itself is in the call's ArgumentSet (the registry
artifact) or, when large, in an artifact by digest. So a param's text is the
value's display (``0.1``, ``[1, 2, 3]``) when that is at most
:data:`PARAM_SUMMARY_LENGTH` characters, and otherwise a short, honest summary
made from the value's canonical tree::

    <list of 3,000 floats, sha256 1a2b3c4d5e6f…>
    <str of 1,200 chars, sha256 9f86d081884c…>
    <dict of 50 keys, sha256 2c26b46b68ff…>

— its type, its length, the type of its elements when they all have the same
one, and the first 12 hex digits of the SHA-256 of its canonical encoding (the
same digest names the artifact when the value is stored as one). Two runs show
the same summary only for the same value.
"""

from __future__ import annotations

from typing import Any, Final

from pcs import _canon, _redaction

__all__ = ["PARAM_SUMMARY_LENGTH", "param_text", "recorded_text", "summary"]

PARAM_SUMMARY_LENGTH: Final = 250
"""Displays longer than this many characters become a summary: about what a column of the
MLflow UI's runs table shows, and the param value limit of older MLflow versions."""

#: digest hex digits a summary shows
_DIGEST_DIGITS: Final = 12

#: tree tag -> the type name a summary shows (extensions: their registered name)
_TYPE_NAMES: Final[dict[str, str]] = {
    "N": "None", "b": "bool", "i": "int", "ix": "int", "f": "float", "c": "complex",
    "s": "str", "su": "str", "y": "bytes", "ya": "bytearray", "l": "list", "t": "tuple",
    "d": "dict", "set": "set", "fset": "frozenset", "e": "enum", "ev": "enum", "nt":
    "namedtuple", "sub": "object", "dt": "datetime", "da": "date", "tm": "time",
    "td": "timedelta", "dec": "Decimal", "uuid": "UUID", "path": "path",
    "placeholder": "unencodable value", "artifact": "artifact", "redacted": "redacted value",
}
#: tags whose payload (node[1]) is the list of elements
_SEQUENCES: Final = frozenset({"l", "t", "set", "fset"})


def param_text(text: str, tree: Any, blob: bytes | None = None) -> str:
    """``text`` if it is short enough for a param, else :func:`summary` of ``tree``.

    ``blob``: the canonical bytes of ``tree`` when the caller has them already.
    """
    if len(text) <= PARAM_SUMMARY_LENGTH:
        return text
    return summary(tree, blob)


def summary(tree: Any, blob: bytes | None = None) -> str:
    """``<list of 3,000 floats, sha256 1a2b3c4d5e6f…>``: what ``tree`` holds, in short."""
    if blob is None:
        blob = _canon.canonical_bytes(tree)
    digest = _canon.artifact_digest(blob)[:_DIGEST_DIGITS]
    return f"<{_shape(tree)}, sha256 {digest}…>"


def _type_name(node: Any) -> str:
    if type(node) is not list or not node or type(node[0]) is not str:
        return "value"
    tag = node[0]
    if tag == "x" and len(node) > 1 and type(node[1]) is str:
        return node[1]
    return _TYPE_NAMES.get(tag, "value")


def _plural(name: str) -> str:
    if name == "None":
        return "None values"
    if name.endswith(("s", "x")):
        return f"{name}es"
    return f"{name}s"


def _shape(node: Any) -> str:
    """``list of 3,000 floats``, ``dict of 50 keys``, ``str of 1,200 chars``, or a type name."""
    name = _type_name(node)
    payload = node[1] if type(node) is list and len(node) > 1 else None
    tag = node[0] if type(node) is list and node else None
    if tag in _SEQUENCES and type(payload) is list:
        kinds = {_type_name(item) for item in payload}
        items = _plural(kinds.pop()) if len(kinds) == 1 else "items"
        return f"{name} of {len(payload):,} {items}"
    if tag == "d" and type(payload) is list:
        return f"{name} of {len(payload):,} keys"
    if tag == "s" and type(payload) is str:
        return f"{name} of {len(payload):,} chars"
    return name


def recorded_text(value: Any) -> str | None:
    """The param text of one argument as records hold it: a tree or a deferred scalar.

    What the writer logs for arguments it did not see captured (deferred scalars,
    and the ``__init__`` arguments of a tracked class's instance). A redacted
    value reads ``<redacted>``; an excluded one has no param (None).
    """
    if type(value) is dict:  # a deferred container (see pcs._canon.SNAPSHOT)
        snapshot = _canon.snapshot_value(value)
        return param_text(repr(snapshot), _canon.encode(snapshot))
    if type(value) is not list:  # a deferred scalar (see pcs._canon.is_deferrable)
        text = str(value)
        return text if len(text) <= PARAM_SUMMARY_LENGTH else summary(_canon.encode(value))
    tag = value[0] if value else None
    if tag == "redacted":
        return None if value[1:] == ["excluded"] else _redaction.REDACTED_TEXT
    if tag == "artifact" and len(value) == 2 and type(value[1]) is dict:
        return f"<artifact sha256:{value[1].get('digest')} ({value[1].get('size')} bytes)>"
    if tag in _PLAIN_TAGS:
        try:
            text = str(_canon.decode(value))
        except Exception:
            text = _redaction.tree_text(value, PARAM_SUMMARY_LENGTH)
    else:
        text = _redaction.tree_text(value, PARAM_SUMMARY_LENGTH)
    return param_text(text, value)


#: trees of the scalars whose param text is ``str(value)``, as for captured scalars
_PLAIN_TAGS: Final = frozenset({"N", "b", "i", "ix", "f", "s"})
