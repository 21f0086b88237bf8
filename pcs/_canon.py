"""Canonical, typed encoding of Python values: format ``pcs-canon/1``.

:func:`encode` turns a Python value into a *tree*: JSON-compatible data made of
lists ``[tag, payload...]``.  The tag keeps the Python type, so values that
compare equal in Python but are different values (``1``, ``1.0``, ``True``;
``(1, 2)`` and ``[1, 2]``; ``0.0`` and ``-0.0``) never share a tree.  Dict
entries and set elements are sorted by their canonical bytes, so insertion
order never matters.  :func:`decode` is the exact inverse for every value that
could be encoded.  :func:`digest` hashes a tree with SHA-256 over
:func:`canonical_bytes`; it depends only on the value, never on ``hash()``,
``id()``, ``PYTHONHASHSEED`` or dict order.

Values that cannot be encoded exactly become *placeholder* nodes (type, a
bounded repr, a digest); with ``strict=True`` :class:`~pcs.exceptions.EncodingError`
is raised instead.  Iterators and generators are never consumed.

The format is documented tag by tag in ``docs/encoding.rst`` so that other
tools can read it.  Changing the meaning of a tag requires a new format
version.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import decimal
import enum
import hashlib
import inspect
import io
import itertools
import json
import math
import os
import pathlib
import re
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, Protocol, TypeAlias

from pcs.exceptions import EncodingError, SpecError, UsageError

__all__ = [
    "DEFERRABLE_INT",
    "FORMAT",
    "MAX_DEPTH",
    "REPR_LIMIT",
    "ArtifactRef",
    "Placeholder",
    "Redacted",
    "Redactor",
    "Tree",
    "artifact_digest",
    "artifact_ref_node",
    "canonical_bytes",
    "copy_tree",
    "decode",
    "digest",
    "encode",
    "encode_redacted",
    "find_artifact_refs",
    "find_placeholders",
    "find_redacted",
    "is_deferrable",
    "join_spec",
    "plain_copy",
    "redacted_node",
    "spec_hash",
    "split_spec",
    "trees",
    "validate",
]

FORMAT: Final = "pcs-canon/1"
"""Name and version of the encoding; stored in every spec that holds trees."""

MAX_DEPTH: Final = 64
"""Containers nested deeper than this become placeholders (``reason: too deep``)."""

REPR_LIMIT: Final = 200
"""Placeholders keep at most this many characters of the value's repr."""

_DOMAIN: Final = FORMAT.encode("ascii") + b"\0"
_PLACEHOLDER_DOMAIN: Final = b"pcs-placeholder/1\0"
_INT_MAX_BITS: Final = 8192  # ints wider than this use the hexadecimal "ix" tag
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DECIMAL_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_HEX_INT = re.compile(r"-?[1-9a-f][0-9a-f]*")
_ADDRESS = re.compile(r" at 0x[0-9A-Fa-f]+")

Tree: TypeAlias = list[Any]
"""A node of the typed tree: ``[tag, payload...]`` (JSON-compatible)."""

_JSON = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


# --------------------------------------------------------------------------- markers


@dataclasses.dataclass(frozen=True, slots=True)
class Placeholder:
    """What :func:`decode` returns for a value that could not be encoded.

    ``digest`` is a SHA-256 of the type name and the (address-free) repr, so it
    tells values apart only as far as their repr does: it is *not* a hash of
    the value's content.
    """

    type: str
    repr: str
    digest: str
    reason: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class ArtifactRef:
    """A value stored elsewhere (an artifact) under its SHA-256 ``digest``."""

    digest: str
    size: int


@dataclasses.dataclass(frozen=True, slots=True)
class Redacted:
    """A value that was deliberately not recorded (for example a secret)."""

    reason: str = ""


def artifact_ref_node(digest: str, size: int) -> Tree:
    """The node of a value stored as an artifact: ``["artifact", {"digest", "size"}]``.

    ``digest`` is :func:`artifact_digest` of the artifact's bytes (by convention
    the :func:`canonical_bytes` of the value's tree) and ``size`` their length.
    """
    if type(digest) is not str or not _HEX64.fullmatch(digest):
        raise UsageError(f"Artifact digest {digest!r} is not a lowercase sha256 hex digest.")
    if type(size) is not int or size < 0:
        raise UsageError(f"Artifact size {size!r} must be an int >= 0.")
    return ["artifact", {"digest": digest, "size": size}]


def redacted_node(reason: str = "") -> Tree:
    """The node of a value that was deliberately not recorded: ``["redacted", reason]``.

    Nothing derived from the value (not even a hash) goes into the node.
    """
    if type(reason) is not str:
        raise UsageError(f"The reason of a redacted value must be a str, not {type(reason)}.")
    return ["redacted", reason]


# --------------------------------------------------------------------------- bytes and hashes


def artifact_digest(data: bytes) -> str:
    """Plain SHA-256 hex of ``data``: how artifacts are addressed (``sha256sum`` agrees)."""
    return hashlib.sha256(data).hexdigest()


def canonical_bytes(obj: Any) -> bytes:
    """Deterministic UTF-8 JSON of a JSON-compatible object.

    Keys sorted, no whitespace, non-ASCII kept as UTF-8, NaN and infinities
    refused.  Raises :class:`~pcs.exceptions.UsageError` for anything JSON
    cannot hold.
    """
    bad_key = _non_str_key(obj)
    if bad_key is not None:
        raise UsageError(
            f"Cannot serialise canonically: dict key {bad_key!r} is not a str (JSON would turn "
            "it into a string and make it collide). Encode Python values with "
            "pcs._canon.encode() first."
        )
    try:
        return _JSON.encode(obj).encode("utf-8")
    except (TypeError, ValueError, UnicodeError) as exc:
        raise UsageError(
            f"Cannot serialise {type(obj).__name__} canonically: {exc}. "
            "Only JSON data (dict with str keys, list, str, int, finite float, bool, None) "
            "can be hashed; encode Python values with pcs._canon.encode() first."
        ) from exc


def _non_str_key(obj: Any) -> Any:
    """The first dict key that is not a str, or None (JSON would silently stringify it)."""
    stack = [obj]
    pop, push = stack.pop, stack.extend
    while stack:
        item = pop()
        cls = type(item)
        if cls is list or cls is tuple:
            push(item)
        elif cls is dict:
            for key in item:
                if not isinstance(key, str):
                    return key if key is not None else "None"
            push(item.values())
    return None


def _tree_bytes(tree: Any) -> bytes:
    """canonical_bytes() without the key check, for trees pcs built or validated itself."""
    return _JSON.encode(tree).encode("utf-8")


def digest(obj: Any) -> str:
    """SHA-256 (hex) of ``b"pcs-canon/1\\0" + canonical_bytes(obj)``."""
    return hashlib.sha256(_DOMAIN + canonical_bytes(obj)).hexdigest()


def _tree_digest(tree: Any) -> str:
    """digest() of data whose dict keys are known to be str (trees from encode/validate)."""
    try:
        return hashlib.sha256(_DOMAIN + _tree_bytes(tree)).hexdigest()
    except (TypeError, ValueError, UnicodeError):
        return digest(tree)  # raises the explanatory UsageError


def spec_hash(identifier: str, fields: Mapping[str, Any], *, trusted: bool = False) -> str:
    """Hash of a spec: ``digest(["spec", identifier, fields])``, ignoring ``spec_hash``.

    ``trusted``: pcs built ``fields`` from trees itself (every dict key is a
    str), so the check for other keys is skipped; the hash is the same.
    """
    body = {key: value for key, value in fields.items() if key != "spec_hash"}
    return _tree_digest(["spec", identifier, body]) if trusted else digest(
        ["spec", identifier, body])


# --------------------------------------------------------------------------- encoding


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _class_path(cls: type) -> str | None:
    """``module:qualname`` if the class can be imported again by that path."""
    module = getattr(cls, "__module__", None)
    qualname = getattr(cls, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return None
    return f"{module}:{qualname}"


def _safe_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not break encoding
        text = f"<repr() failed: {type(exc).__name__}>"
    return _bounded(text)


def _bounded(text: str) -> str:
    """``text`` without memory addresses, at most REPR_LIMIT characters, storable as UTF-8."""
    text = _ADDRESS.sub("", text)
    if len(text) > REPR_LIMIT:
        text = text[: REPR_LIMIT - 3] + "..."
    # Lone surrogates cannot be stored as UTF-8; make them visible instead.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _enc_none(value: None) -> Tree:
    return ["N"]


def _enc_bool(value: bool) -> Tree:
    return ["b", value]


def _enc_int(value: int) -> Tree:
    if value.bit_length() <= _INT_MAX_BITS:
        return ["i", int.__repr__(value)]
    return ["ix", format(value, "x")]


def _enc_float(value: float) -> Tree:
    return ["f", float.__repr__(value)]


def _enc_str(value: str) -> Tree:
    if value.isascii():
        return ["s", value]
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "surrogatepass")
        return ["su", base64.b64encode(raw).decode("ascii")]
    return ["s", value]


def _enc_complex(value: complex) -> Tree:
    return ["c", float.__repr__(value.real), float.__repr__(value.imag)]


def _enc_bytes(value: bytes) -> Tree:
    return ["y", base64.b64encode(value).decode("ascii")]


def _enc_bytearray(value: bytearray) -> Tree:
    return ["ya", base64.b64encode(value).decode("ascii")]


def _enc_decimal(value: decimal.Decimal) -> Tree:
    return ["dec", str(value)]


def _enc_uuid(value: uuid.UUID) -> Tree:
    return ["uuid", str(value)]


def _enc_date(value: _dt.date) -> Tree:
    return ["da", value.isoformat()]


def _enc_timedelta(value: _dt.timedelta) -> Tree:
    return ["td", value.days, value.seconds, value.microseconds]


def _enc_path(value: pathlib.PurePath) -> Tree:
    return ["path", type(value).__name__, str(value)]


def _plain_offset(tz: _dt.tzinfo) -> bool:
    """True for a ``datetime.timezone`` that isoformat() describes completely."""
    if type(tz) is not _dt.timezone:
        return False
    offset = tz.utcoffset(None)
    return tz == _dt.timezone(offset) and tz.tzname(None) == _dt.timezone(offset).tzname(None)


_Scalar = Callable[[Any], Tree]

# Exact-type dispatch: subclasses (IntEnum, numpy.float64, str subclasses...) miss
# this table on purpose and are handled by _Encoder.other().
_SCALARS: Final[dict[type, _Scalar]] = {
    type(None): _enc_none,
    bool: _enc_bool,
    int: _enc_int,
    float: _enc_float,
    str: _enc_str,
    bytes: _enc_bytes,
    bytearray: _enc_bytearray,
    complex: _enc_complex,
    decimal.Decimal: _enc_decimal,
    uuid.UUID: _enc_uuid,
    _dt.date: _enc_date,
    _dt.timedelta: _enc_timedelta,
    pathlib.PurePosixPath: _enc_path,
    pathlib.PureWindowsPath: _enc_path,
    pathlib.PosixPath: _enc_path,
    pathlib.WindowsPath: _enc_path,
}

# Builtin bases whose subclasses are encoded as ["sub", class path, base tree].
_SUB_BASES: Final[tuple[tuple[type, _Scalar, Callable[[Any], Any]], ...]] = (
    (str, _enc_str, str.__str__),
    (int, _enc_int, int.__index__),
    (float, _enc_float, float.__float__),
)


class _KeyOf:
    """Path segment: the key itself (not its value) of a dict entry."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key


class _ValueAt:
    """Path segment: the value stored under ``key``."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key


class _Field:
    """Path segment: a named field (namedtuple)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


_SET_ELEMENT: Final = object()


def _short_key(key: Any) -> str:
    if type(key) in (str, int, bool, float) or key is None:
        text = repr(key)
    else:
        text = f"<{type(key).__name__} key>"
    return text if len(text) <= 60 else text[:57] + "..."


def _format_path(root: str, segments: list[Any]) -> str:
    parts = [root]
    for seg in segments:
        if isinstance(seg, int):
            parts.append(f"[{seg}]")
        elif isinstance(seg, _ValueAt):
            parts.append(f"[{_short_key(seg.key)}]")
        elif isinstance(seg, _KeyOf):
            parts.append(f".keys()[{_short_key(seg.key)}]")
        elif isinstance(seg, _Field):
            parts.append(f".{seg.name}")
        else:
            parts.append(".<set element>")
    return "".join(parts)


def _sort_entries(pairs: list[tuple[bytes, Tree, Tree]]) -> list[Tree]:
    pairs.sort(key=lambda item: item[0])
    for first, second in itertools.pairwise(pairs):
        if first[0] == second[0]:  # equal encoded keys (e.g. two NaN keys): order by value
            pairs.sort(key=lambda item: (item[0], _tree_bytes(item[2])))
            break
    return [[key, value] for _, key, value in pairs]


class _Encoder:
    __slots__ = ("active", "path", "root", "strict")

    def __init__(self, strict: bool, root: str) -> None:
        self.strict = strict
        self.root = root
        self.path: list[Any] = []
        self.active: set[int] = set()

    def enc(self, value: Any) -> Tree:
        cls = type(value)
        scalar = _SCALARS.get(cls)
        if scalar is not None:
            return scalar(value)
        container = _CONTAINERS.get(cls)
        if container is not None:
            return container(self, value)
        return self.other(value)

    # -- containers

    def _enter(self, value: Any) -> Tree | None:
        """Refuse cycles and excessive depth; None means "go ahead"."""
        if id(value) in self.active:
            return self.placeholder(value, "cycle: the value contains itself")
        if len(self.active) >= MAX_DEPTH:
            return self.placeholder(value, f"nested deeper than {MAX_DEPTH} containers")
        self.active.add(id(value))
        return None

    def seq(self, tag: str, value: list[Any] | tuple[Any, ...]) -> Tree:
        refused = self._enter(value)
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
        refused = self._enter(value)
        if refused is not None:
            return refused
        path = self.path
        pairs: list[tuple[bytes, Tree, Tree]] = []
        try:
            for key, item in list(value.items()):
                path.append(_KeyOf(key))
                key_tree = self.enc(key)
                path[-1] = _ValueAt(key)
                item_tree = self.enc(item)
                path.pop()
                pairs.append((_tree_bytes(key_tree), key_tree, item_tree))
        finally:
            self.active.discard(id(value))
        return ["d", _sort_entries(pairs)]

    def enc_set(self, value: set[Any] | frozenset[Any]) -> Tree:
        refused = self._enter(value)
        if refused is not None:
            return refused
        path = self.path
        elements: list[tuple[bytes, Tree]] = []
        try:
            for item in list(value):
                path.append(_SET_ELEMENT)
                tree = self.enc(item)
                path.pop()
                elements.append((_tree_bytes(tree), tree))
        finally:
            self.active.discard(id(value))
        elements.sort(key=lambda element: element[0])
        return ["set" if type(value) is set else "fset", [tree for _, tree in elements]]

    # -- everything else

    def other(self, value: Any) -> Tree:
        cls = type(value)
        if cls in _MARKERS:
            return self.enc_marker(value)
        if isinstance(value, enum.Enum):
            return self.enc_enum(value)
        if cls is _dt.datetime:
            return self.enc_datetime(value)
        if cls is _dt.time:
            return self.enc_time(value)
        if isinstance(value, tuple) and hasattr(cls, "_fields") and hasattr(cls, "_make"):
            return self.enc_namedtuple(value)
        for base, scalar, to_base in _SUB_BASES:
            if isinstance(value, base):
                return self.enc_subclass(value, scalar, to_base)
        return self.placeholder(value, _why_unencodable(value))

    def enc_marker(self, value: Placeholder | ArtifactRef | Redacted) -> Tree:
        """Markers returned by decode() encode back to the node they came from."""
        if isinstance(value, Redacted):
            return redacted_node(value.reason)
        if isinstance(value, ArtifactRef):
            return artifact_ref_node(value.digest, value.size)
        if self.strict:
            where = _format_path(self.root, self.path)
            raise EncodingError(
                f"Cannot encode {where} exactly: it is a placeholder for an unencodable "
                f"{value.type} ({value.repr}). Supply the real value, or use strict=False."
            )
        info = {"type": value.type, "repr": value.repr, "digest": value.digest}
        return ["placeholder", {**info, "reason": value.reason}]

    def enc_enum(self, value: enum.Enum) -> Tree:
        cls = type(value)
        path = _class_path(cls)
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
        if tz is None or _plain_offset(tz):
            return ["dt", value.isoformat(), value.fold, None]
        key = getattr(tz, "key", None)
        if type(tz).__module__ == "zoneinfo" and isinstance(key, str):
            return ["dt", value.replace(tzinfo=None).isoformat(), value.fold, key]
        return self.placeholder(value, f"time zone of type {_type_name(type(tz))} is not encoded")

    def enc_time(self, value: _dt.time) -> Tree:
        tz = value.tzinfo
        if tz is None or _plain_offset(tz):
            return ["tm", value.isoformat(), value.fold]
        return self.placeholder(value, f"time zone of type {_type_name(type(tz))} is not encoded")

    def enc_namedtuple(self, value: tuple[Any, ...]) -> Tree:
        cls = type(value)
        path = _class_path(cls)
        fields = getattr(cls, "_fields", None)
        if path is None:
            return self.placeholder(value, "class defined inside a function cannot be imported")
        if (
            not isinstance(fields, tuple)
            or len(fields) != len(value)
            or getattr(value, "__dict__", None)
        ):
            return self.placeholder(value, "tuple subclass that is not a plain namedtuple")
        refused = self._enter(value)
        if refused is not None:
            return refused
        items = []
        try:
            for name, item in zip(fields, value, strict=True):
                self.path.append(_Field(str(name)))
                items.append(self.enc_field(str(name), item))
                self.path.pop()
        finally:
            self.active.discard(id(value))
        return ["nt", path, items]

    def enc_subclass(self, value: Any, scalar: _Scalar, to_base: Callable[[Any], Any]) -> Tree:
        cls = type(value)
        path = _class_path(cls)
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
        """The tree of a named field's value (a hook for :class:`_RedactingEncoder`)."""
        return self.enc(item)

    def describe(self, value: Any) -> str:
        """The repr kept in a placeholder (a hook for :class:`_RedactingEncoder`)."""
        return _safe_repr(value)

    def placeholder(self, value: Any, reason: str) -> Tree:
        type_name = _type_name(type(value))
        text = self.describe(value)
        if self.strict:
            where = _format_path(self.root, self.path)
            raise EncodingError(
                f"Cannot encode {where} exactly: {reason} (type {type_name}, value {text}). "
                "Pass a value pcs can encode (None, bool, int, float, complex, str, bytes, list, "
                "tuple, dict, set, datetime, Decimal, UUID, path, enum, namedtuple), exclude "
                "the argument, or use strict=False to record a placeholder (the run is then "
                "marked as not replayable)."
            )
        material = f"{type_name}\0{text}".encode()
        digest_hex = hashlib.sha256(_PLACEHOLDER_DOMAIN + material).hexdigest()
        return [
            "placeholder",
            {"type": type_name, "repr": text, "digest": digest_hex, "reason": reason},
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


_MARKERS: Final = frozenset({Placeholder, ArtifactRef, Redacted})

_Container = Callable[[_Encoder, Any], Tree]
_CONTAINERS: Final[dict[type, _Container]] = {
    list: _Encoder.enc_list,
    tuple: _Encoder.enc_tuple,
    dict: _Encoder.enc_dict,
    set: _Encoder.enc_set,
    frozenset: _Encoder.enc_set,
}


def encode(value: Any, *, strict: bool = False, root: str = "value") -> Tree:
    """Encode ``value`` as a ``pcs-canon/1`` tree.

    Values with no exact encoding become placeholder nodes; with
    ``strict=True`` an :class:`~pcs.exceptions.EncodingError` naming the
    offending path (starting at ``root``, e.g. ``args['x'][2]``) is raised
    instead.  The returned tree is fresh: callers may keep it.
    """
    scalar = _SCALARS.get(type(value))
    if scalar is not None:
        return scalar(value)
    return _Encoder(strict, root).enc(value)


# ------------------------------------------------------------------ redacting encoder


class Redactor(Protocol):
    """A redaction policy, as :func:`encode_redacted` asks it (see :mod:`pcs._redaction`)."""

    def value(self, value: Any) -> str | None:
        """Why ``value`` itself must not be recorded (the redacted node's reason), or None."""

    def named(self, name: Any, value: Any) -> str | None:
        """Why the value under the mapping key or field ``name`` must not be recorded."""

    def describe(self, value: Any) -> tuple[str, list[str]]:
        """A repr of ``value`` holding no secret, and the paths (relative) it left out."""


_CHECKED: Final = frozenset({str, bytes, bytearray})


class _RedactingEncoder(_Encoder):
    """The encoder, asking a :class:`Redactor` about every value, key and field first."""

    __slots__ = ("found", "redactor")

    def __init__(self, strict: bool, root: str, redactor: Redactor) -> None:
        super().__init__(strict, root)
        self.redactor = redactor
        self.found: list[str] = []

    def redact(self, reason: str) -> Tree:
        self.found.append(f"{_format_path(self.root, self.path)}: {reason}")
        return redacted_node(reason)

    def enc(self, value: Any) -> Tree:
        cls = type(value)
        scalar = _SCALARS.get(cls)
        if scalar is not None:
            if cls in _CHECKED:
                reason = self.redactor.value(value)
                if reason is not None:
                    return self.redact(reason)
            return scalar(value)
        if cls is dict:
            return self.enc_dict(value)
        if cls is set or cls is frozenset:
            return self.enc_set(value)
        container = _CONTAINERS.get(cls)
        if container is not None:
            return container(self, value)
        reason = self.redactor.value(value)
        if reason is not None:
            return self.redact(reason)
        return self.other(value)

    def enc_dict(self, value: dict[Any, Any]) -> Tree:
        refused = self._enter(value)
        if refused is not None:
            return refused
        path, found = self.path, len(self.found)
        named = self.redactor.named
        pairs: list[tuple[bytes, Tree, Tree]] = []
        secret_key = False
        try:
            for key, item in list(value.items()):
                path.append(_KeyOf(key))
                key_tree = self.enc(key)
                if key_tree[0] == "redacted":
                    secret_key = True
                    path[-1] = _ValueAt("<key>")  # never the secret key in a path
                else:
                    path[-1] = _ValueAt(key)
                reason = named(key, item)
                item_tree = self.redact(reason) if reason is not None else self.enc(item)
                path.pop()
                pairs.append((_tree_bytes(key_tree), key_tree, item_tree))
        finally:
            self.active.discard(id(value))
        if secret_key:  # redacted keys could collide: the whole mapping is redacted
            del self.found[found:]
            return self.redact("redacted (a key looks like a secret)")
        return ["d", _sort_entries(pairs)]

    def enc_set(self, value: set[Any] | frozenset[Any]) -> Tree:
        found = len(self.found)
        tree = super().enc_set(value)
        if len(self.found) > found and tree[0] != "placeholder":
            del self.found[found:]  # redacted elements could collide: the whole set is
            return self.redact("redacted (an element looks like a secret)")
        return tree

    def enc_field(self, name: str, item: Any) -> Tree:
        reason = self.redactor.named(name, item)
        return self.enc(item) if reason is None else self.redact(reason)

    def describe(self, value: Any) -> str:
        text, hidden = self.redactor.describe(value)
        where = _format_path(self.root, self.path)
        self.found.extend(f"{where}{path}: redacted inside a placeholder" for path in hidden)
        return _bounded(text)


def encode_redacted(
    value: Any, redactor: Redactor, *, strict: bool = False, root: str = "value"
) -> tuple[Tree, list[str]]:
    """:func:`encode` under a redaction policy: ``(tree, what was redacted)``.

    Every value, mapping key and named field is shown to ``redactor`` first; a
    secret becomes a redacted node (a mapping or set with a secret key or
    element is redacted whole) and placeholders keep ``redactor``'s secret-free
    repr. The list holds ``"path: reason"`` for each value left out.
    """
    encoder = _RedactingEncoder(strict, root, redactor)
    return encoder.enc(value), encoder.found


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


def trees(arguments: Mapping[str, Any]) -> dict[str, Tree]:
    """``arguments`` with every deferred scalar (a non-list value) encoded as its tree."""
    return {
        name: value if type(value) is list else encode(value)
        for name, value in arguments.items()
    }


# --------------------------------------------------------------------------- decoding


def _unresolved(node: Tree) -> tuple[str, bytes]:
    """Stands in for a value of an importable class during validation (nothing is imported)."""
    return ("<unresolved>", _tree_bytes(node))


def _fail(path: str, problem: str) -> SpecError:
    return SpecError(
        f"Malformed {FORMAT} tree at {path}: {problem}. The data was not written by pcs "
        "or was edited; re-create it from the original value."
    )


class _Decoder:
    __slots__ = ("resolve",)

    def __init__(self, resolve: bool) -> None:
        self.resolve = resolve

    def dec(self, node: Any, path: str, depth: int) -> Any:
        if type(node) is not list or not node or type(node[0]) is not str:
            raise _fail(path, f"expected a list [tag, ...], found {_short(node)}")
        handler = _DECODERS.get(node[0])
        if handler is None:
            raise _fail(path, f"unknown tag {node[0]!r}")
        if depth > 3 * MAX_DEPTH:
            raise _fail(path, "nested too deeply")
        return handler(self, node, path, depth)

    def arity(self, node: Tree, path: str, count: int) -> None:
        if len(node) != count:
            raise _fail(path, f"tag {node[0]!r} takes {count - 1} payload item(s)")

    def text(self, node: Tree, path: str, index: int = 1) -> str:
        value = node[index]
        if type(value) is not str:
            raise _fail(path, f"tag {node[0]!r} expects a string payload")
        return value

    def canonical(self, node: Tree, path: str, expected: Tree) -> None:
        if expected != node:
            raise _fail(path, f"{_short(node)} is not in canonical form ({_short(expected)})")

    def import_class(self, node: Tree, path: str, index: int, base: type) -> Any:
        spec = self.text(node, path, index)
        module_name, sep, qualname = spec.partition(":")
        if not sep or not module_name or not qualname:
            raise _fail(path, f"class path {spec!r} is not 'module:qualname'")
        if not self.resolve:
            return None
        module = sys.modules.get(module_name)
        if module is None:
            # Decoding never imports: a crafted tree could name any module, and importing
            # runs its code. The program imports the modules of its own value types.
            raise SpecError(
                f"Cannot decode {path}: class {spec!r} lives in module {module_name!r}, which "
                "is not imported. Import it first (pcs never imports code while decoding)."
            )
        try:
            obj: Any = module
            for part in qualname.split("."):
                obj = inspect.getattr_static(obj, part)
        except Exception as exc:
            raise SpecError(
                f"Cannot decode {path}: class {spec!r} cannot be imported ({exc}). Install or "
                "import the code that defines it."
            ) from exc
        if not isinstance(obj, type) or not issubclass(obj, base):
            raise _fail(path, f"{spec!r} is not a subclass of {base.__name__}")
        return obj

    def items(self, node: Tree, path: str) -> list[Any]:
        self.arity(node, path, 2)
        if type(node[1]) is not list:
            raise _fail(path, f"tag {node[0]!r} expects a list payload")
        return node[1]

    def hashable(self, value: Any, path: str) -> Any:
        try:
            hash(value)
        except TypeError:
            raise _fail(
                path, f"unhashable {type(value).__name__} used as a key or element"
            ) from None
        return value


def _short(node: Any) -> str:
    text = repr(node)
    return text if len(text) <= 80 else text[:77] + "..."


def _d_none(d: _Decoder, node: Tree, path: str, depth: int) -> None:
    d.arity(node, path, 1)


def _d_bool(d: _Decoder, node: Tree, path: str, depth: int) -> bool:
    d.arity(node, path, 2)
    if type(node[1]) is not bool:
        raise _fail(path, "tag 'b' expects true or false")
    return node[1]


def _d_int(d: _Decoder, node: Tree, path: str, depth: int) -> int:
    d.arity(node, path, 2)
    text = d.text(node, path)
    if len(text) > 2500 or not _DECIMAL_INT.fullmatch(text) or text == "-0":
        raise _fail(path, f"{text[:40]!r} is not a canonical decimal integer")
    value = int(text)
    d.canonical(node, path, _enc_int(value))
    return value


def _d_bigint(d: _Decoder, node: Tree, path: str, depth: int) -> int:
    d.arity(node, path, 2)
    text = d.text(node, path)
    if not _HEX_INT.fullmatch(text):
        raise _fail(path, f"{text[:40]!r} is not a canonical hexadecimal integer")
    value = int(text, 16)
    d.canonical(node, path, _enc_int(value))
    return value


def _float_payload(d: _Decoder, node: Tree, path: str, index: int) -> float:
    text = d.text(node, path, index)
    try:
        value = float(text)
    except ValueError:
        raise _fail(path, f"{text[:40]!r} is not a float") from None
    if float.__repr__(value) != text:
        raise _fail(path, f"{text!r} is not the canonical repr of a float")
    return value


def _d_float(d: _Decoder, node: Tree, path: str, depth: int) -> float:
    d.arity(node, path, 2)
    return _float_payload(d, node, path, 1)


def _d_complex(d: _Decoder, node: Tree, path: str, depth: int) -> complex:
    d.arity(node, path, 3)
    return complex(_float_payload(d, node, path, 1), _float_payload(d, node, path, 2))


def _d_str(d: _Decoder, node: Tree, path: str, depth: int) -> str:
    d.arity(node, path, 2)
    value = d.text(node, path)
    d.canonical(node, path, _enc_str(value))
    return value


def _b64(d: _Decoder, node: Tree, path: str) -> bytes:
    d.arity(node, path, 2)
    text = d.text(node, path)
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeError):
        raise _fail(path, "payload is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise _fail(path, "base64 payload is not canonical")
    return raw


def _d_surrogate_str(d: _Decoder, node: Tree, path: str, depth: int) -> str:
    try:
        value = _b64(d, node, path).decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise _fail(path, "payload is not UTF-8 (with surrogates)") from None
    d.canonical(node, path, _enc_str(value))
    return value


def _d_bytes(d: _Decoder, node: Tree, path: str, depth: int) -> bytes:
    return _b64(d, node, path)


def _d_bytearray(d: _Decoder, node: Tree, path: str, depth: int) -> bytearray:
    return bytearray(_b64(d, node, path))


def _d_list(d: _Decoder, node: Tree, path: str, depth: int) -> list[Any]:
    return [d.dec(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(d.items(node, path))]


def _d_tuple(d: _Decoder, node: Tree, path: str, depth: int) -> tuple[Any, ...]:
    return tuple(_d_list(d, node, path, depth))


def _check_sorted(path: str, keys: list[bytes], decoded: int) -> None:
    for i in range(1, len(keys)):
        if keys[i - 1] > keys[i]:
            raise _fail(f"{path}[{i}]", "entries are not in canonical order")
    if decoded != len(keys):
        raise _fail(path, "the same key or element appears twice")


def _d_dict(d: _Decoder, node: Tree, path: str, depth: int) -> dict[Any, Any]:
    result: dict[Any, Any] = {}
    order: list[bytes] = []
    for i, entry in enumerate(d.items(node, path)):
        where = f"{path}[{i}]"
        if type(entry) is not list or len(entry) != 2:
            raise _fail(where, "a dict entry must be a [key, value] pair")
        key = d.hashable(d.dec(entry[0], where, depth + 1), where)
        result[key] = d.dec(entry[1], f"{path}[{_short(key)}]", depth + 1)
        order.append(_tree_bytes(entry[0]) + b"\0" + _tree_bytes(entry[1]))
    _check_sorted(path, order, len(result))
    return result


def _d_set(d: _Decoder, node: Tree, path: str, depth: int) -> set[Any] | frozenset[Any]:
    elements = []
    order: list[bytes] = []
    for i, item in enumerate(d.items(node, path)):
        where = f"{path}{{{i}}}"
        elements.append(d.hashable(d.dec(item, where, depth + 1), where))
        order.append(_tree_bytes(item))
    result = set(elements) if node[0] == "set" else frozenset(elements)
    _check_sorted(path, order, len(result))
    return result


def _d_enum(d: _Decoder, node: Tree, path: str, depth: int) -> Any:
    d.arity(node, path, 3)
    cls = d.import_class(node, path, 1, enum.Enum)
    name = d.text(node, path, 2)
    if cls is None:
        return _unresolved(node)
    member = cls.__members__.get(name)
    if member is None:
        raise SpecError(
            f"Cannot decode {path}: enum {cls.__qualname__} has no member {name!r} (it has "
            f"{sorted(cls.__members__)}). The enum changed since the value was recorded."
        )
    return member


def _d_enum_value(d: _Decoder, node: Tree, path: str, depth: int) -> Any:
    d.arity(node, path, 3)
    cls = d.import_class(node, path, 1, enum.Enum)
    value = d.dec(node[2], f"{path}.value", depth + 1)
    if cls is None:
        return _unresolved(node)
    try:
        return cls(value)
    except (ValueError, TypeError) as exc:
        raise SpecError(f"Cannot decode {path}: {exc}") from exc


def _d_namedtuple(d: _Decoder, node: Tree, path: str, depth: int) -> Any:
    d.arity(node, path, 3)
    cls = d.import_class(node, path, 1, tuple)
    if type(node[2]) is not list:
        raise _fail(path, "tag 'nt' expects a list of items")
    items = [d.dec(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(node[2])]
    if cls is None:
        return _unresolved(node)
    try:
        return cls._make(items)
    except Exception as exc:
        raise SpecError(f"Cannot decode {path}: {cls.__qualname__}._make() failed: {exc}") from exc


def _d_subclass(d: _Decoder, node: Tree, path: str, depth: int) -> Any:
    d.arity(node, path, 3)
    inner = node[2]
    if type(inner) is not list or not inner or inner[0] not in ("s", "su", "i", "ix", "f"):
        raise _fail(path, "tag 'sub' expects a str, int or float tree")
    base = {"s": str, "su": str, "i": int, "ix": int, "f": float}[inner[0]]
    cls = d.import_class(node, path, 1, base)
    value = d.dec(inner, path, depth + 1)
    if cls is None:
        return _unresolved(node)
    try:
        return cls(value)
    except Exception as exc:
        raise SpecError(
            f"Cannot decode {path}: {cls.__qualname__}({value!r}) failed: {exc}"
        ) from exc


def _d_datetime(d: _Decoder, node: Tree, path: str, depth: int) -> _dt.datetime:
    d.arity(node, path, 4)
    text = d.text(node, path)
    fold, zone = node[2], node[3]
    if fold not in (0, 1) or type(fold) is not int:
        raise _fail(path, "fold must be 0 or 1")
    try:
        value = _dt.datetime.fromisoformat(text).replace(fold=fold)
    except ValueError:
        raise _fail(path, f"{text!r} is not an ISO 8601 datetime") from None
    if zone is None:
        d.canonical(node, path, ["dt", value.isoformat(), fold, None])
        return value
    if type(zone) is not str or value.tzinfo is not None:
        raise _fail(path, "zone must be an IANA key and the time must be naive")
    d.canonical(node, path, ["dt", value.isoformat(), fold, zone])
    if not d.resolve:
        return value
    import zoneinfo

    try:
        return value.replace(tzinfo=zoneinfo.ZoneInfo(zone))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise SpecError(f"Cannot decode {path}: unknown time zone {zone!r} ({exc})") from exc


def _d_date(d: _Decoder, node: Tree, path: str, depth: int) -> _dt.date:
    d.arity(node, path, 2)
    text = d.text(node, path)
    try:
        value = _dt.date.fromisoformat(text)
    except ValueError:
        raise _fail(path, f"{text!r} is not an ISO 8601 date") from None
    d.canonical(node, path, _enc_date(value))
    return value


def _d_time(d: _Decoder, node: Tree, path: str, depth: int) -> _dt.time:
    d.arity(node, path, 3)
    text = d.text(node, path)
    fold = node[2]
    if fold not in (0, 1) or type(fold) is not int:
        raise _fail(path, "fold must be 0 or 1")
    try:
        value = _dt.time.fromisoformat(text).replace(fold=fold)
    except ValueError:
        raise _fail(path, f"{text!r} is not an ISO 8601 time") from None
    d.canonical(node, path, ["tm", value.isoformat(), fold])
    return value


def _d_timedelta(d: _Decoder, node: Tree, path: str, depth: int) -> _dt.timedelta:
    d.arity(node, path, 4)
    if any(type(part) is not int for part in node[1:]):
        raise _fail(path, "tag 'td' expects three integers")
    try:
        value = _dt.timedelta(days=node[1], seconds=node[2], microseconds=node[3])
    except OverflowError:
        raise _fail(path, "timedelta out of range") from None
    d.canonical(node, path, _enc_timedelta(value))
    return value


def _d_decimal(d: _Decoder, node: Tree, path: str, depth: int) -> decimal.Decimal:
    d.arity(node, path, 2)
    text = d.text(node, path)
    try:
        value = decimal.Decimal(text)
    except decimal.InvalidOperation:
        raise _fail(path, f"{text[:40]!r} is not a decimal number") from None
    d.canonical(node, path, _enc_decimal(value))
    return value


def _d_uuid(d: _Decoder, node: Tree, path: str, depth: int) -> uuid.UUID:
    d.arity(node, path, 2)
    text = d.text(node, path)
    try:
        value = uuid.UUID(text)
    except ValueError:
        raise _fail(path, f"{text!r} is not a UUID") from None
    d.canonical(node, path, _enc_uuid(value))
    return value


_PATH_CLASSES: Final[dict[str, type[pathlib.PurePath]]] = {
    "PurePosixPath": pathlib.PurePosixPath,
    "PureWindowsPath": pathlib.PureWindowsPath,
    "PosixPath": pathlib.PurePosixPath if os.name == "nt" else pathlib.PosixPath,
    "WindowsPath": pathlib.WindowsPath if os.name == "nt" else pathlib.PureWindowsPath,
}
_PURE_FLAVOUR: Final[dict[str, type[pathlib.PurePath]]] = {
    "PurePosixPath": pathlib.PurePosixPath,
    "PureWindowsPath": pathlib.PureWindowsPath,
    "PosixPath": pathlib.PurePosixPath,
    "WindowsPath": pathlib.PureWindowsPath,
}


def _d_path(d: _Decoder, node: Tree, path: str, depth: int) -> pathlib.PurePath:
    d.arity(node, path, 3)
    kind = d.text(node, path, 1)
    text = d.text(node, path, 2)
    pure = _PURE_FLAVOUR.get(kind)
    if pure is None:
        raise _fail(path, f"unknown path class {kind!r}")
    if str(pure(text)) != text:
        raise _fail(path, f"{text!r} is not a normalised {kind}")
    return _PATH_CLASSES[kind](text)


def _d_placeholder(d: _Decoder, node: Tree, path: str, depth: int) -> Placeholder:
    d.arity(node, path, 2)
    info = node[1]
    if (
        type(info) is not dict
        or set(info) != {"type", "repr", "digest", "reason"}
        or any(type(v) is not str for v in info.values())
        or not _HEX64.fullmatch(info["digest"])
    ):
        raise _fail(path, "a placeholder needs str fields type, repr, digest (sha256), reason")
    return Placeholder(info["type"], info["repr"], info["digest"], info["reason"])


def _d_artifact(d: _Decoder, node: Tree, path: str, depth: int) -> ArtifactRef:
    d.arity(node, path, 2)
    info = node[1]
    if (
        type(info) is not dict
        or set(info) != {"digest", "size"}
        or type(info["digest"]) is not str
        or not _HEX64.fullmatch(info["digest"])
        or type(info["size"]) is not int
        or info["size"] < 0
    ):
        raise _fail(path, "an artifact reference needs digest (sha256 hex) and size (int >= 0)")
    return ArtifactRef(info["digest"], info["size"])


def _d_redacted(d: _Decoder, node: Tree, path: str, depth: int) -> Redacted:
    d.arity(node, path, 2)
    return Redacted(d.text(node, path))


_DECODERS: Final[dict[str, Callable[[_Decoder, Tree, str, int], Any]]] = {
    "N": _d_none,
    "b": _d_bool,
    "i": _d_int,
    "ix": _d_bigint,
    "f": _d_float,
    "c": _d_complex,
    "s": _d_str,
    "su": _d_surrogate_str,
    "y": _d_bytes,
    "ya": _d_bytearray,
    "l": _d_list,
    "t": _d_tuple,
    "d": _d_dict,
    "set": _d_set,
    "fset": _d_set,
    "e": _d_enum,
    "ev": _d_enum_value,
    "nt": _d_namedtuple,
    "sub": _d_subclass,
    "dt": _d_datetime,
    "da": _d_date,
    "tm": _d_time,
    "td": _d_timedelta,
    "dec": _d_decimal,
    "uuid": _d_uuid,
    "path": _d_path,
    "placeholder": _d_placeholder,
    "artifact": _d_artifact,
    "redacted": _d_redacted,
}


def decode(tree: Any, *, root: str = "value") -> Any:
    """Rebuild the Python value of a tree (exact inverse of :func:`encode`).

    Placeholder, artifact and redacted nodes decode to :class:`Placeholder`,
    :class:`ArtifactRef` and :class:`Redacted`.  Enum, namedtuple and builtin
    subclass nodes import their class by ``module:qualname``.  A malformed or
    non-canonical tree raises :class:`~pcs.exceptions.SpecError`.
    """
    return _Decoder(resolve=True).dec(tree, root, 0)


def validate(tree: Any, *, root: str = "value") -> None:
    """Check that ``tree`` is a well-formed, canonical tree without importing anything.

    Raises :class:`~pcs.exceptions.SpecError` naming the offending path.
    """
    _Decoder(resolve=False).dec(tree, root, 0)


# --------------------------------------------------------------------------- inspection


def _walk(tree: Any, path: str, depth: int = 0) -> Iterator[tuple[str, Tree]]:
    """Yield (path, node) for every node; tolerant of malformed input."""
    if type(tree) is not list or not tree or depth > 3 * MAX_DEPTH:
        return
    yield path, tree
    tag = tree[0]
    if tag in ("l", "t", "set", "fset") and len(tree) == 2 and type(tree[1]) is list:
        for index, item in enumerate(tree[1]):
            yield from _walk(item, f"{path}[{index}]", depth + 1)
    elif tag == "nt" and len(tree) == 3 and type(tree[2]) is list:
        for index, item in enumerate(tree[2]):
            yield from _walk(item, f"{path}[{index}]", depth + 1)
    elif tag == "ev" and len(tree) == 3:
        yield from _walk(tree[2], f"{path}.value", depth + 1)
    elif tag == "d" and len(tree) == 2 and type(tree[1]) is list:
        for entry in tree[1]:
            if type(entry) is list and len(entry) == 2:
                label = _key_label(entry[0])
                yield from _walk(entry[0], f"{path}.keys()[{label}]", depth + 1)
                yield from _walk(entry[1], f"{path}[{label}]", depth + 1)


def _key_label(key_tree: Any) -> str:
    if type(key_tree) is list and len(key_tree) == 2 and key_tree[0] in ("s", "i", "b", "f"):
        try:
            return _short_key(decode(key_tree))
        except SpecError:
            pass
    return "<key>"


def find_placeholders(tree: Any, *, root: str = "value") -> list[str]:
    """Human-readable reasons, with paths, for every placeholder in ``tree``.

    An empty list means the tree encodes its value exactly (artifact references
    count as exact; redacted values are listed by :func:`find_redacted`).
    """
    found = []
    for path, node in _walk(tree, root):
        if node[0] == "placeholder" and len(node) == 2 and type(node[1]) is dict:
            info = node[1]
            found.append(
                f"{path}: {info.get('reason', 'not encodable')} "
                f"(type {info.get('type')}, value {info.get('repr')})"
            )
    return found


def find_redacted(tree: Any, *, root: str = "value") -> list[str]:
    """Paths of every redacted value in ``tree`` (with the reason, if any)."""
    found = []
    for path, node in _walk(tree, root):
        if node[0] == "redacted" and len(node) == 2:
            found.append(f"{path}: {node[1]}" if node[1] else path)
    return found


def find_artifact_refs(tree: Any, *, root: str = "value") -> list[tuple[str, ArtifactRef]]:
    """``(path, ArtifactRef)`` for every artifact reference in ``tree``."""
    found = []
    for path, node in _walk(tree, root):
        if node[0] == "artifact":
            found.append((path, _d_artifact(_Decoder(resolve=False), node, path, 0)))
    return found


def copy_tree(tree: Any) -> Any:
    """Deep copy of JSON-compatible data (lists and dicts are copied, leaves shared)."""
    cls = type(tree)
    if cls is list:
        return [copy_tree(item) for item in tree]
    if cls is dict:
        return {key: copy_tree(item) for key, item in tree.items()}
    return tree


# --------------------------------------------------------------------------- plain spec data

_PLAIN_LEAVES: Final = (str, int, bool, type(None))


def plain_copy(obj: Any, *, where: str = "spec") -> Any:
    """Validated deep copy of JSON data: the only content specs may hold.

    Accepts dicts with str keys, lists (tuples become lists), str, int, bool,
    None and finite floats; anything else raises
    :class:`~pcs.exceptions.SpecError` naming the location (``where`` is the
    prefix, e.g. ``"argument set spec 'abc'"``).
    """
    return _plain(obj, where, set())


def _plain(obj: Any, where: str, active: set[int]) -> Any:
    cls = type(obj)
    if cls is str:
        if not obj.isascii():
            try:
                obj.encode("utf-8")
            except UnicodeEncodeError:
                raise SpecError(f"{where}: string with lone surrogates cannot be stored") from None
        return obj
    if cls in _PLAIN_LEAVES:
        return obj
    if cls is float:
        if not math.isfinite(obj):
            raise SpecError(
                f"{where}: {obj!r} is not allowed in a spec; encode it with pcs._canon.encode()"
            )
        return obj
    if cls in (dict, list, tuple):
        if id(obj) in active:
            raise SpecError(f"{where}: the data contains itself (a cycle)")
        if len(active) > 4 * MAX_DEPTH:
            raise SpecError(f"{where}: nested more than {4 * MAX_DEPTH} levels deep")
        active.add(id(obj))
        try:
            if cls is dict:
                result = {}
                for key, value in obj.items():
                    if type(key) is not str:
                        raise SpecError(
                            f"{where}: key {key!r} is a {type(key).__name__}; spec keys must be str"
                        )
                    result[key] = _plain(value, f"{where}[{key!r}]", active)
                return result
            return [_plain(value, f"{where}[{i}]", active) for i, value in enumerate(obj)]
        finally:
            active.discard(id(obj))
    raise SpecError(
        f"{where}: {cls.__module__}.{cls.__qualname__} is not JSON data; specs hold only dict "
        "(str keys), list, str, int, float, bool and None. Encode Python values with "
        "pcs._canon.encode() first."
    )


# --------------------------------------------------------------------------- spec forms


def split_spec(spec: Mapping[str, Any], *, kind: str = "spec") -> tuple[str, dict[str, Any]]:
    """Return ``(identifier, fields)`` of a spec in nested or flat form.

    Nested: ``{identifier: {fields}}``.  Flat: ``{"identifier": identifier, **fields}``.
    The fields are a shallow copy.
    """
    if not isinstance(spec, Mapping):
        raise SpecError(f"A {kind} must be a mapping, not {type(spec).__name__}.")
    identifier = spec.get("identifier")
    if isinstance(identifier, str):
        fields = {key: value for key, value in spec.items() if key != "identifier"}
    elif len(spec) == 1:
        identifier, inner = next(iter(spec.items()))
        if not isinstance(identifier, str) or not isinstance(inner, Mapping):
            raise SpecError(
                f"A nested {kind} must be {{identifier: {{fields}}}} with a str identifier; "
                f"found key {identifier!r} -> {type(inner).__name__}."
            )
        fields = dict(inner)
    else:
        raise SpecError(
            f"Cannot read {kind} with keys {sorted(map(str, spec))[:10]}: expected the nested "
            "form {identifier: {fields}} or the flat form {'identifier': ..., **fields}."
        )
    if not identifier:
        raise SpecError(f"A {kind} needs a non-empty identifier.")
    if "identifier" in fields:
        raise SpecError(f"{kind} {identifier!r}: 'identifier' cannot also be a field.", identifier)
    return identifier, fields


def join_spec(
    identifier: str, fields: Mapping[str, Any], *, flatten: bool = False
) -> dict[str, Any]:
    """Build the nested (default) or flat form of a spec from its parts (no copy)."""
    if flatten:
        return {"identifier": identifier, **fields}
    return {identifier: dict(fields)}
