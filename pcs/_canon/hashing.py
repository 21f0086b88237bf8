"""Canonical bytes and the digests built on them (the hashing rules of ``pcs-canon/1``).

:func:`canonical_bytes` is the one serialisation that is hashed: UTF-8 JSON
with sorted keys and no whitespace. :func:`digest` prefixes it with the format
name, so a pcs digest never equals another SHA-256 of the same bytes;
:func:`artifact_digest` is the plain SHA-256 by which artifacts are addressed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

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


def tree_bytes(tree: Any) -> bytes:
    """canonical_bytes() without the key check, for trees pcs built or validated itself."""
    return _JSON.encode(tree).encode("utf-8")


def digest(obj: Any) -> str:
    """SHA-256 (hex) of ``b"pcs-canon/1\\0" + canonical_bytes(obj)``."""
    return hashlib.sha256(_DOMAIN + canonical_bytes(obj)).hexdigest()


def tree_digest(tree: Any) -> str:
    """:func:`digest` of data whose dict keys are known to be str (trees from encode/validate).

    For such data the hash equals :func:`digest`'s; it only skips the walk that
    looks for non-str dict keys, so pass nothing else (JSON would turn such a
    key into a string). Data JSON cannot hold falls back to :func:`digest`,
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
