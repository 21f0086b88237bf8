"""The encoder: a Python value to its ``pcs-canon/1`` tree.

:func:`encode` turns a value into a *tree*: JSON-compatible data made of lists
``[tag, payload...]``. Scalars of an exact built-in type go through the
:data:`~pcs._canon.scalars.SCALARS` table, containers through the
:class:`Encoder`, which also refuses cycles and excessive depth and turns
anything else (enum members, datetimes with zones, namedtuples, subclasses of
``str``/``int``/``float``) into its node, or into a *placeholder* when there is
no exact encoding. Dict entries and set elements are sorted by their canonical
bytes, so insertion order never matters.

The hot path uses :func:`is_deferrable` and :func:`trees`: scalars JSON holds
exactly are recorded as they are and encoded later, with the same result.
"""

from __future__ import annotations

import binascii
import datetime as _dt
import decimal
import enum
import io
import itertools
import json
import pathlib
import re
import sys
from array import array
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from pcs._canon.extensions import EXTENSION_TAG, EXTENSIONS, Extension, UnknownExtension, class_path
from pcs._canon.hashing import placeholder_digest, tree_bytes
from pcs._canon.markers import (
    MAX_DEPTH,
    REPR_LIMIT,
    ArtifactRef,
    Placeholder,
    Redacted,
    Tree,
    artifact_ref_node,
    redacted_node,
)
from pcs._canon.paths import SET_ELEMENT, Field, KeyOf, ValueAt, format_path
from pcs._canon.scalars import SCALARS, SUB_BASES, Scalar, plain_offset
from pcs.exceptions import EncodingError

__all__ = [
    "CONTAINERS",
    "DEFERRABLE_INT",
    "FLOATS",
    "SNAPSHOT",
    "Encoder",
    "bounded",
    "encode",
    "is_deferrable",
    "pack_floats",
    "snapshot_value",
    "sort_entries",
    "trees",
    "type_name",
    "unpack_floats",
]

_ADDRESS = re.compile(r" at 0x[0-9A-Fa-f]+")


def type_name(cls: type) -> str:
    """``module.qualname`` of ``cls``: how a placeholder names the type it stands for."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _safe_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not break encoding
        text = f"<repr() failed: {type(exc).__name__}>"
    return bounded(text)


def bounded(text: str) -> str:
    """``text`` without memory addresses, at most REPR_LIMIT characters, storable as UTF-8."""
    text = _ADDRESS.sub("", text)
    if len(text) > REPR_LIMIT:
        text = text[: REPR_LIMIT - 3] + "..."
    # Lone surrogates cannot be stored as UTF-8; make them visible instead.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def sort_entries(pairs: list[tuple[bytes, Tree, Tree]]) -> list[Tree]:
    """``[key, value]`` entries of a dict node in canonical order; ``pairs`` holds
    ``(canonical bytes of the key node, key node, value node)`` and is sorted in place."""
    pairs.sort(key=lambda item: item[0])
    for first, second in itertools.pairwise(pairs):
        if first[0] == second[0]:  # equal encoded keys (e.g. two NaN keys): order by value
            pairs.sort(key=lambda item: (item[0], tree_bytes(item[2])))
            break
    return [[key, value] for _, key, value in pairs]


class Encoder:
    """Encodes one value; keeps the path it is at (for messages) and the containers
    it is inside (to refuse cycles and excessive depth)."""

    __slots__ = ("active", "path", "root", "strict")

    def __init__(self, strict: bool, root: str) -> None:
        self.strict = strict
        self.root = root
        self.path: list[Any] = []
        self.active: set[int] = set()

    def enc(self, value: Any) -> Tree:
        cls = type(value)
        scalar = SCALARS.get(cls)
        if scalar is not None:
            return scalar(value)
        container = CONTAINERS.get(cls)
        if container is not None:
            return container(self, value)
        return self.other(value)

    # -- containers

    def enter(self, value: Any) -> Tree | None:
        """Refuse cycles and excessive depth; None means "go ahead"."""
        if id(value) in self.active:
            return self.placeholder(value, "cycle: the value contains itself")
        if len(self.active) >= MAX_DEPTH:
            return self.placeholder(value, f"nested deeper than {MAX_DEPTH} containers")
        self.active.add(id(value))
        return None

    def seq(self, tag: str, value: list[Any] | tuple[Any, ...]) -> Tree:
        refused = self.enter(value)
        if refused is not None:
            return refused
        path = self.path
        items = []
        try:
            for index, item in enumerate(value):
                path.append(index)
                items.append(self.enc(item))
                path.pop()
        finally:
            self.active.discard(id(value))
        return [tag, items]

    def enc_list(self, value: list[Any]) -> Tree:
        return self.seq("l", value)

    def enc_tuple(self, value: tuple[Any, ...]) -> Tree:
        return self.seq("t", value)

    def enc_dict(self, value: dict[Any, Any]) -> Tree:
        refused = self.enter(value)
        if refused is not None:
            return refused
        path = self.path
        pairs: list[tuple[bytes, Tree, Tree]] = []
        try:
            for key, item in list(value.items()):
                path.append(KeyOf(key))
                key_tree = self.enc(key)
                path[-1] = ValueAt(key)
                item_tree = self.enc(item)
                path.pop()
                pairs.append((tree_bytes(key_tree), key_tree, item_tree))
        finally:
            self.active.discard(id(value))
        return ["d", sort_entries(pairs)]

    def enc_set(self, value: set[Any] | frozenset[Any]) -> Tree:
        refused = self.enter(value)
        if refused is not None:
            return refused
        path = self.path
        elements: list[tuple[bytes, Tree]] = []
        try:
            for item in list(value):
                path.append(SET_ELEMENT)
                tree = self.enc(item)
                path.pop()
                elements.append((tree_bytes(tree), tree))
        finally:
            self.active.discard(id(value))
        elements.sort(key=lambda element: element[0])
        return ["set" if type(value) is set else "fset", [tree for _, tree in elements]]

    # -- everything else

    def other(self, value: Any) -> Tree:
        cls = type(value)
        if cls in _MARKERS:
            return self.enc_marker(value)
        extension = EXTENSIONS.lookup(cls)
        if extension is not None:  # a plugin's encoding comes before pcs's own for subclasses
            return self.enc_extension(value, extension)
        if isinstance(value, enum.Enum):
            return self.enc_enum(value)
        if cls is _dt.datetime:
            return self.enc_datetime(value)
        if cls is _dt.time:
            return self.enc_time(value)
        if isinstance(value, tuple) and hasattr(cls, "_fields") and hasattr(cls, "_make"):
            return self.enc_namedtuple(value)
        for base, scalar, to_base in SUB_BASES:
            if isinstance(value, base):
                return self.enc_subclass(value, scalar, to_base)
        return self.placeholder(value, _why_unencodable(value))

    def enc_extension(self, value: Any, extension: Extension) -> Tree:
        """``["x", name, version, payload]``: a value of a type a plugin registered."""
        refused = self.enter(value)
        if refused is not None:
            return refused
        try:
            try:
                payload = extension.encode(value)
            except Exception as exc:
                return self.placeholder(
                    value,
                    f"the encoder of extension {extension.name!r} refused it "
                    f"({type(exc).__name__}: {bounded(str(exc))})",
                )
            return [EXTENSION_TAG, extension.name, extension.version, self.enc(payload)]
        finally:
            self.active.discard(id(value))

    def enc_marker(self, value: Placeholder | ArtifactRef | Redacted | UnknownExtension) -> Tree:
        """Markers returned by decode() encode back to the node they came from."""
        if isinstance(value, UnknownExtension):
            return [EXTENSION_TAG, value.name, value.version, json.loads(value.payload)]
        if isinstance(value, Redacted):
            return redacted_node(value.reason)
        if isinstance(value, ArtifactRef):
            return artifact_ref_node(value.digest, value.size)
        if self.strict:
            where = format_path(self.root, self.path)
            raise EncodingError(
                f"Cannot encode {where} exactly: it is a placeholder for an unencodable "
                f"{value.type} ({value.repr}). Supply the real value, or use strict=False."
            )
        info = {"type": value.type, "repr": value.repr, "digest": value.digest}
        return ["placeholder", {**info, "reason": value.reason}]

    def enc_enum(self, value: enum.Enum) -> Tree:
        cls = type(value)
        path = class_path(cls)
        if path is None:
            return self.placeholder(
                value, "enum class defined inside a function cannot be imported again"
            )
        name = value._name_
        if isinstance(name, str) and cls.__members__.get(name) is value:
            return ["e", path, name]
        if isinstance(value, enum.Flag):  # a combination of flags has no member name
            return ["ev", path, self.enc(value._value_)]
        return self.placeholder(value, "enum member without a name")

    def enc_datetime(self, value: _dt.datetime) -> Tree:
        tz = value.tzinfo
        if tz is None or plain_offset(tz):
            return ["dt", value.isoformat(), value.fold, None]
        key = getattr(tz, "key", None)
        if type(tz).__module__ == "zoneinfo" and isinstance(key, str):
            return ["dt", value.replace(tzinfo=None).isoformat(), value.fold, key]
        return self.placeholder(value, f"time zone of type {type_name(type(tz))} is not encoded")

    def enc_time(self, value: _dt.time) -> Tree:
        tz = value.tzinfo
        if tz is None or plain_offset(tz):
            return ["tm", value.isoformat(), value.fold]
        return self.placeholder(value, f"time zone of type {type_name(type(tz))} is not encoded")

    def enc_namedtuple(self, value: tuple[Any, ...]) -> Tree:
        cls = type(value)
        path = class_path(cls)
        fields = getattr(cls, "_fields", None)
        if path is None:
            return self.placeholder(value, "class defined inside a function cannot be imported")
        if (
            not isinstance(fields, tuple)
            or len(fields) != len(value)
            or getattr(value, "__dict__", None)
        ):
            return self.placeholder(value, "tuple subclass that is not a plain namedtuple")
        refused = self.enter(value)
        if refused is not None:
            return refused
        items = []
        try:
            for name, item in zip(fields, value, strict=True):
                self.path.append(Field(str(name)))
                items.append(self.enc_field(str(name), item))
                self.path.pop()
        finally:
            self.active.discard(id(value))
        return ["nt", path, items]

    def enc_subclass(self, value: Any, scalar: Scalar, to_base: Callable[[Any], Any]) -> Tree:
        cls = type(value)
        path = class_path(cls)
        if path is None:
            return self.placeholder(value, "class defined inside a function cannot be imported")
        if getattr(value, "__dict__", None):
            return self.placeholder(value, "instance attributes of a builtin subclass")
        try:
            base_tree = scalar(to_base(value))
            rebuilt = cls(to_base(value))
            exact = type(rebuilt) is cls and scalar(to_base(rebuilt)) == base_tree
        except Exception:
            exact = False
        if not exact:
            return self.placeholder(value, f"{cls.__qualname__}(value) does not rebuild the value")
        return ["sub", path, base_tree]

    def enc_field(self, name: str, item: Any) -> Tree:
        """The tree of a named field's value (a hook for the redacting encoder)."""
        return self.enc(item)

    def describe(self, value: Any) -> str:
        """The repr kept in a placeholder (a hook for the redacting encoder)."""
        return _safe_repr(value)

    def placeholder(self, value: Any, reason: str) -> Tree:
        kind = type_name(type(value))
        text = self.describe(value)
        if self.strict:
            where = format_path(self.root, self.path)
            raise EncodingError(
                f"Cannot encode {where} exactly: {reason} (type {kind}, value {text}). "
                "Pass a value pcs can encode (None, bool, int, float, complex, str, bytes, list, "
                "tuple, dict, set, datetime, Decimal, UUID, path, enum, namedtuple), exclude "
                "the argument, or use strict=False to record a placeholder (the run is then "
                "marked as not replayable)."
            )
        digest_hex = placeholder_digest(kind, text)
        return [
            "placeholder",
            {"type": kind, "repr": text, "digest": digest_hex, "reason": reason},
        ]


def _why_unencodable(value: Any) -> str:
    if isinstance(value, io.IOBase):
        return "open file or stream"
    if isinstance(value, Iterator):
        return "iterator or generator (pcs never consumes it)"
    for base in (list, dict, set, frozenset, bytes, complex, tuple):
        if isinstance(value, base):
            return f"subclass of {base.__name__}; convert it to a plain {base.__name__}"
    if isinstance(value, (_dt.date, _dt.timedelta, decimal.Decimal, pathlib.PurePath)):
        return "subclass of a supported type"
    return "values of this type have no exact encoding"


_MARKERS: Final = frozenset({Placeholder, ArtifactRef, Redacted, UnknownExtension})

_Container = Callable[[Encoder, Any], Tree]
CONTAINERS: Final[dict[type, _Container]] = {
    list: Encoder.enc_list,
    tuple: Encoder.enc_tuple,
    dict: Encoder.enc_dict,
    set: Encoder.enc_set,
    frozenset: Encoder.enc_set,
}


def encode(value: Any, *, strict: bool = False, root: str = "value") -> Tree:
    """Encode ``value`` as a ``pcs-canon/1`` tree.

    Values with no exact encoding become placeholder nodes; with
    ``strict=True`` an :class:`~pcs.exceptions.EncodingError` naming the
    offending path (starting at ``root``, e.g. ``args['x'][2]``) is raised
    instead.  The returned tree is fresh: callers may keep it.
    """
    scalar = SCALARS.get(type(value))
    if scalar is not None:
        return scalar(value)
    return Encoder(strict, root).enc(value)


# ------------------------------------------------------------------ deferred scalars

DEFERRABLE_INT: Final = 2**62
"""Deferrable ints lie strictly within ±this: exact in every JSON reader pcs uses."""


def is_deferrable(value: Any) -> bool:
    """True for a scalar that JSON holds exactly, so it may be encoded later.

    A tracked call's hot path puts such values into its records as they are
    (``3``, ``0.5``, ``"x"``, ``True``, ``None``) instead of as trees; whoever
    reads the records turns them into trees with :func:`trees` — the result is
    identical to encoding them at once. Finite floats, ints within 62 bits and
    ASCII strings qualify: a JSON round trip keeps them exactly, type included.
    """
    kind = type(value)
    if kind is float:
        return bool(value - value == 0.0)  # False for nan and the infinities
    if kind is int:
        return bool(-DEFERRABLE_INT < value < DEFERRABLE_INT)
    if kind is str:
        return bool(value.isascii())
    return kind is bool or value is None


SNAPSHOT: Final = "s"
"""The key of a deferred container's record form, ``{"s": snapshot}``: a copy of a list or
dict of deferrable scalars taken on the caller's thread (see ``pcs._capture``), encoded
later. Trees are lists and deferred scalars are not containers, so a dict is never
either."""


FLOATS: Final = "f"
"""The key of a deferred list of floats' record form, ``{"f": base64}``: the base64 of the
floats' IEEE 754 binary64 bytes, little-endian (see :func:`pack_floats`)."""


def pack_floats(values: list[float]) -> str:
    """The ``{"f": ...}`` payload of a list of floats: exact, NaN and infinities included."""
    packed = array("d", values)
    if sys.byteorder == "big":  # pragma: no cover - little-endian on every machine here
        packed.byteswap()
    return binascii.b2a_base64(packed.tobytes(), newline=False).decode("ascii")


def unpack_floats(payload: str) -> list[float]:
    """The list of floats :func:`pack_floats` packed."""
    packed = array("d")
    packed.frombytes(binascii.a2b_base64(payload))
    if sys.byteorder == "big":  # pragma: no cover
        packed.byteswap()
    return packed.tolist()


def snapshot_value(value: dict[str, Any]) -> Any:
    """The value a deferred container (``{"s": ...}`` or ``{"f": ...}``) holds."""
    if FLOATS in value:
        return unpack_floats(value[FLOATS])
    return value[SNAPSHOT]


def trees(arguments: Mapping[str, Any]) -> dict[str, Tree]:
    """``arguments`` with every deferred scalar (a non-list value) and deferred container
    (a dict, see :data:`SNAPSHOT`) encoded as its tree."""
    return {
        name: value if type(value) is list
        else encode(snapshot_value(value)) if type(value) is dict else encode(value)
        for name, value in arguments.items()
    }


