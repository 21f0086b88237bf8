"""The decoder: a ``pcs-canon/1`` tree back to its Python value, or a proof it is well formed.

:func:`decode` is the exact inverse of :func:`~pcs._canon.encoder.encode` for
every value that could be encoded; :func:`validate` checks a tree without
importing anything. Both refuse a tree that is malformed or not canonical (one
value has one tree), with a :class:`~pcs.exceptions.SpecError` naming the path.
Each tag has one ``_d_*`` function, dispatched through ``_DECODERS``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
import enum
import inspect
import os
import pathlib
import re
import sys
import uuid
from collections.abc import Callable
from typing import Any, Final

from pcs._canon.extensions import EXTENSIONS, UnknownExtension
from pcs._canon.hashing import tree_bytes
from pcs._canon.markers import FORMAT, HEX64, MAX_DEPTH, ArtifactRef, Placeholder, Redacted, Tree
from pcs._canon.scalars import enc_date, enc_decimal, enc_int, enc_str, enc_timedelta, enc_uuid
from pcs.exceptions import SpecError

__all__ = ["decode", "read_artifact_ref", "validate"]

_DECIMAL_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_HEX_INT = re.compile(r"-?[1-9a-f][0-9a-f]*")


def _unresolved(node: Tree) -> tuple[str, bytes]:
    """Stands in for a value of an importable class during validation (nothing is imported)."""
    return ("<unresolved>", tree_bytes(node))


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
    d.canonical(node, path, enc_int(value))
    return value


def _d_bigint(d: _Decoder, node: Tree, path: str, depth: int) -> int:
    d.arity(node, path, 2)
    text = d.text(node, path)
    if not _HEX_INT.fullmatch(text):
        raise _fail(path, f"{text[:40]!r} is not a canonical hexadecimal integer")
    value = int(text, 16)
    d.canonical(node, path, enc_int(value))
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
    d.canonical(node, path, enc_str(value))
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
    d.canonical(node, path, enc_str(value))
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
        order.append(tree_bytes(entry[0]) + b"\0" + tree_bytes(entry[1]))
    _check_sorted(path, order, len(result))
    return result


def _d_set(d: _Decoder, node: Tree, path: str, depth: int) -> set[Any] | frozenset[Any]:
    elements = []
    order: list[bytes] = []
    for i, item in enumerate(d.items(node, path)):
        where = f"{path}{{{i}}}"
        elements.append(d.hashable(d.dec(item, where, depth + 1), where))
        order.append(tree_bytes(item))
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
    d.canonical(node, path, enc_date(value))
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
    d.canonical(node, path, enc_timedelta(value))
    return value


def _d_decimal(d: _Decoder, node: Tree, path: str, depth: int) -> decimal.Decimal:
    d.arity(node, path, 2)
    text = d.text(node, path)
    try:
        value = decimal.Decimal(text)
    except decimal.InvalidOperation:
        raise _fail(path, f"{text[:40]!r} is not a decimal number") from None
    d.canonical(node, path, enc_decimal(value))
    return value


def _d_uuid(d: _Decoder, node: Tree, path: str, depth: int) -> uuid.UUID:
    d.arity(node, path, 2)
    text = d.text(node, path)
    try:
        value = uuid.UUID(text)
    except ValueError:
        raise _fail(path, f"{text!r} is not a UUID") from None
    d.canonical(node, path, enc_uuid(value))
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
        or not HEX64.fullmatch(info["digest"])
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
        or not HEX64.fullmatch(info["digest"])
        or type(info["size"]) is not int
        or info["size"] < 0
    ):
        raise _fail(path, "an artifact reference needs digest (sha256 hex) and size (int >= 0)")
    return ArtifactRef(info["digest"], info["size"])


def _d_redacted(d: _Decoder, node: Tree, path: str, depth: int) -> Redacted:
    d.arity(node, path, 2)
    return Redacted(d.text(node, path))


def _d_extension(d: _Decoder, node: Tree, path: str, depth: int) -> Any:
    """``["x", name, version, payload]``: decoded by the extension registered under ``name``."""
    d.arity(node, path, 4)
    name, version = d.text(node, path), node[2]
    if type(version) is not int or version < 1:
        raise _fail(path, f"extension {name!r} needs a version (an int >= 1), found {version!r}")
    payload = d.dec(node[3], f"{path}<{name}>", depth + 1)
    if not d.resolve:
        return None
    extension = EXTENSIONS.by_name(name)
    if extension is None or version > extension.version:
        if extension is None:
            reason = (f"no plugin registers the encoding extension {name!r} in this process; "
                      "install and enable the plugin that wrote it")
        else:
            reason = (f"written by version {version} of the extension {name!r}, newer than the "
                      f"installed version {extension.version}; upgrade its plugin")
        return UnknownExtension(name, version, tree_bytes(node[3]).decode(), reason)
    try:
        return extension.decode(payload, version)
    except Exception as exc:
        raise SpecError(
            f"Cannot decode {path}: the decoder of the encoding extension {name!r} (version "
            f"{version}) failed: {type(exc).__name__}: {exc}. The data was edited, or the "
            "installed plugin cannot read what wrote it."
        ) from exc


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
    "x": _d_extension,
}


def decode(tree: Any, *, root: str = "value") -> Any:
    """Rebuild the Python value of a tree (exact inverse of :func:`encode`).

    Placeholder, artifact and redacted nodes decode to :class:`Placeholder`,
    :class:`ArtifactRef` and :class:`Redacted`; an extension node whose
    plugin is not registered to :class:`UnknownExtension`.  Enum, namedtuple and builtin
    subclass nodes import their class by ``module:qualname``.  A malformed or
    non-canonical tree raises :class:`~pcs.exceptions.SpecError`.
    """
    return _Decoder(resolve=True).dec(tree, root, 0)


def validate(tree: Any, *, root: str = "value") -> None:
    """Check that ``tree`` is a well-formed, canonical tree without importing anything.

    Raises :class:`~pcs.exceptions.SpecError` naming the offending path.
    """
    _Decoder(resolve=False).dec(tree, root, 0)


def read_artifact_ref(node: Tree, path: str) -> ArtifactRef:
    """The :class:`ArtifactRef` of an ``artifact`` node (checked; nothing is imported)."""
    return _d_artifact(_Decoder(resolve=False), node, path, 0)
