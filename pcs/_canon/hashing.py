"""Canonical bytes and the digests built on them (the hashing rules of ``pcs-canon/1``).

:func:`canonical_bytes` is the one serialisation that is hashed: UTF-8 JSON
with sorted keys and no whitespace. :func:`digest` prefixes it with the format
name, so a pcs digest never equals another SHA-256 of the same bytes;
:func:`artifact_digest` is the plain SHA-256 by which artifacts are addressed.

The bytes are those of the standard library's ``json`` encoder (the
definition). ``orjson`` writes them several times faster and is used only where
its bytes are provably the same: exact ``dict`` / ``list`` / ``tuple`` / ``str``
/ ``int`` / ``bool`` / ``None`` and floats that both spell in plain decimal
(zero, or 1e-4 <= |x| < 1e16: shortest round-trip digits, as ``repr``).
Everything else takes the ``json`` encoder: what orjson refuses (subclasses,
ints beyond 64 bits, lone surrogates, nesting deeper than 255, non-str keys),
what it spells differently (``1e-05`` as ``0.00001``, ``1e-07`` as ``1e-7``,
exponents before orjson 3.11.7) and what ``json`` refuses but orjson writes
(NaN and infinities as ``null``, enums, UUIDs). Both sort keys by code point
(orjson compares UTF-8 bytes, which orders alike) and escape the same
characters. ``tests/test_fast_writer.py`` checks this byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

import orjson

from pcs._canon.markers import FORMAT
from pcs.exceptions import UsageError

__all__ = [
    "artifact_digest",
    "canonical_bytes",
    "digest",
    "placeholder_digest",
    "spec_hash",
    "tree_bytes",
    "tree_digest",
]

_DOMAIN: Final = FORMAT.encode("ascii") + b"\0"
_PLACEHOLDER_DOMAIN: Final = b"pcs-placeholder/1\0"

_JSON = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
_OPTIONS: Final = (orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_SUBCLASS
                   | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME)
_dumps = orjson.dumps
_NUMBER: Final = frozenset(b"0123456789.-")
_TOKEN_START: Final = frozenset(b"[,:")
_MINUS: Final = ord("-")  # ints: ``int in bytes`` is a memchr (``bytes in bytes`` costs 10x)
_PLUS: Final = ord("+")
#: Floats both spell alike in plain decimal (repr's range), and a probe of the installed
#: orjson: before 3.11.7 it wrote ``1e16`` where json writes ``1e+16``; then json only.
_PROBE: Final = [0.1, -0.0, 1e-4, 9999999999999998.0, 0.30000000000000004, 1e16, -1e300, 2**63]
_FAST: Final = _dumps(_PROBE, None, _OPTIONS) == _JSON.encode(_PROBE).encode()


def artifact_digest(data: bytes) -> str:
    """Plain SHA-256 hex of ``data``: how artifacts are addressed (``sha256sum`` agrees)."""
    return hashlib.sha256(data).hexdigest()


def canonical_bytes(obj: Any) -> bytes:
    """Deterministic UTF-8 JSON of a JSON-compatible object.

    Keys sorted, no whitespace, non-ASCII kept as UTF-8, NaN and infinities
    refused.  Raises :class:`~pcs.exceptions.UsageError` for anything JSON
    cannot hold.
    """
    if _FAST:
        try:
            data = _dumps(obj, None, _OPTIONS)
        except TypeError:  # orjson.JSONEncodeError: see the module's docstring
            pass
        else:  # every key a str, no cycle; json would spell every value alike?
            if _spelled_alike(obj):
                return data
    bad_key = _non_str_key(obj)
    if bad_key is not None:
        raise UsageError(
            f"Cannot serialise canonically: dict key {bad_key!r} is not a str (JSON would turn "
            "it into a string and make it collide). Encode Python values with "
            "pcs.canon.encode() first."
        )
    try:
        return _JSON.encode(obj).encode("utf-8")
    except (TypeError, ValueError, UnicodeError) as exc:
        raise UsageError(
            f"Cannot serialise {type(obj).__name__} canonically: {exc}. "
            "Only JSON data (dict with str keys, list, str, int, finite float, bool, None) "
            "can be hashed; encode Python values with pcs.canon.encode() first."
        ) from exc


def _spelled_alike(obj: Any) -> bool:
    """Whether json spells ``obj``, which orjson accepted (so it holds no cycle), as orjson."""
    stack: list[Any] = [(obj,)]
    pop, push = stack.pop, stack.append
    while stack:
        for value in pop():
            cls = type(value)
            if cls is str:
                continue
            if cls is list or cls is tuple:
                push(value)
            elif cls is dict:
                push(value.values())
            elif cls is float:
                if not (-1e16 < value < 1e16 and (value >= 1e-4 or value <= -1e-4 or value == 0)):
                    return False  # NaN, an infinity, or json writes an exponent
            elif cls is not int and cls is not bool and value is not None:
                return False  # an enum member, a UUID...
    return True


def _non_str_key(obj: Any) -> Any:
    """The first dict key that is not a str, or None (JSON would silently stringify it)."""
    stack = [obj]
    pop, push = stack.pop, stack.extend
    seen: set[int] = set()  # a container met twice is not walked twice (cycles end)
    while stack:
        item = pop()
        cls = type(item)
        if (cls is list or cls is tuple or cls is dict) and id(item) not in seen:
            seen.add(id(item))
            if cls is dict:
                for key in item:
                    if not isinstance(key, str):
                        return key if key is not None else "None"
                item = item.values()
            push(item)
    return None


def tree_bytes(tree: Any) -> bytes:
    """canonical_bytes() without the key check, for trees pcs built or validated itself.

    Such trees hold only lists, dicts, str, int, bool and None; orjson's bytes
    are taken unless they may hold a number json spells otherwise (``_hazard``).
    """
    if _FAST:
        try:
            data = _dumps(tree, None, _OPTIONS)
        except TypeError:  # orjson.JSONEncodeError
            pass
        else:
            if not _hazard(data, tree):
                return data
    return _JSON.encode(tree).encode("utf-8")


def _hazard(data: bytes, tree: Any) -> bool:
    """Whether orjson's ``data`` of ``tree`` may hold a number json spells otherwise.

    That is a number token (one that starts after ``[`` ``,`` ``:`` or at the
    start) for a float below 1e-4 (``0.00001``, ``1e-7``) or with an exponent,
    or a ``null`` that is not None but NaN or an infinity (reading ``data`` back
    tells). Such text inside a string costs a needless fallback to json, no more.
    """
    if data.find(b"null") >= 0 and orjson.loads(data) != tree:
        return True
    return (_number_token(data, b"0.0000")
            or (_MINUS in data and _number_token(data, b"e-"))
            or (_PLUS in data and _number_token(data, b"e+")))


def _number_token(data: bytes, needle: bytes) -> bool:
    """Whether ``needle`` occurs in ``data`` within a number token (see _hazard)."""
    at = data.find(needle)
    while at >= 0:
        start = at
        while start and data[start - 1] in _NUMBER:
            start -= 1
        if not start or data[start - 1] in _TOKEN_START:
            return True
        at = data.find(needle, at + 1)
    return False


def digest(obj: Any) -> str:
    """SHA-256 (hex) of ``b"pcs-canon/1\\0" + canonical_bytes(obj)``."""
    return hashlib.sha256(_DOMAIN + canonical_bytes(obj)).hexdigest()


def tree_digest(tree: Any) -> str:
    """:func:`digest` of data whose dict keys are known to be str (trees from encode/validate).

    For such data the hash equals :func:`digest`'s; it only skips the walk that
    looks for non-str dict keys (JSON would turn such a key into a string) and
    for enum members and UUIDs (JSON refuses them, orjson writes them), so pass
    nothing else. Other data JSON cannot hold falls back to :func:`digest`,
    which raises the explanatory :class:`~pcs.exceptions.UsageError`.
    """
    try:
        return hashlib.sha256(_DOMAIN + tree_bytes(tree)).hexdigest()
    except (TypeError, ValueError, UnicodeError):
        return digest(tree)  # raises the explanatory UsageError


def spec_hash(identifier: str, fields: Mapping[str, Any], *, trusted: bool = False) -> str:
    """Hash of a spec: ``digest(["spec", identifier, fields])``, ignoring ``spec_hash``.

    ``trusted``: pcs built ``fields`` from trees itself (every dict key is a
    str), so the check for other keys is skipped; the hash is the same.
    """
    body = {key: value for key, value in fields.items() if key != "spec_hash"}
    return tree_digest(["spec", identifier, body]) if trusted else digest(
        ["spec", identifier, body])


def placeholder_digest(type_name: str, text: str) -> str:
    """The ``digest`` of a placeholder: SHA-256 of its type name and (bounded) repr.

    ``sha256(b"pcs-placeholder/1\\0" + UTF-8(type_name + "\\0" + text))``: it
    tells values apart only as far as their repr does.
    """
    material = f"{type_name}\0{text}".encode()
    return hashlib.sha256(_PLACEHOLDER_DOMAIN + material).hexdigest()
