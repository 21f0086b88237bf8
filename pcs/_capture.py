"""Argument capture for tracked calls: the argument policy.

Each bound argument is encoded once with the canonical typed encoding
(:mod:`pcs._canon`). Then, in this order:

* arguments named in ``exclude`` or ``redact``, arguments whose name looks like
  a secret (password, secret, token, api_key, authorization, credential...),
  :class:`pcs.Secret` values and URLs carrying a password are replaced by a
  *redacted* node — before anything is hashed or persisted — and make the run
  not reproducible unless the value is supplied again at replay;
* values that cannot be encoded become placeholders (type, repr, digest) and
  make the run not reproducible, or raise :class:`~pcs.EncodingError` before
  the call when ``strict=True``;
* values whose encoding is larger than :data:`MAX_INLINE_BYTES` are stored as
  content-addressed artifacts and referenced by digest — never truncated.

Alongside, each argument gets a short display text that is logged as the
MLflow param ``arg.<name>`` when it fits MLflow's limits.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from pcs import _canon
from pcs._records import MAX_PARAM_VALUE_LENGTH, param_key
from pcs.secret import Secret

__all__ = ["MAX_INLINE_BYTES", "SHORT_STR", "Captured", "capture", "is_secret_name", "param_key"]

#: Encoded arguments larger than this are stored as artifacts, by digest.
MAX_INLINE_BYTES = 64 * 1024

_SECRET_NAME = re.compile(
    r"pass(word|wd|phrase)?$|secret|token|api[_-]?key|apikey|authorization|auth[_-]?header"
    r"|credential|private[_-]?key|access[_-]?key",
    re.IGNORECASE,
)
_URL_WITH_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:[^/\s@]+@")
_SCALARS = (str, int, float, bool, type(None))
#: strings up to this many characters are scalars: at most 6 bytes per character once
#: encoded, far below MAX_INLINE_BYTES, and within MLflow's param value limit
SHORT_STR = 4096


def is_secret_name(name: str) -> bool:
    """True when an argument called ``name`` is redacted by default."""
    return _SECRET_NAME.search(name) is not None


@dataclass(slots=True)
class Captured:
    """The captured arguments of one call."""

    #: name -> encoded tree (redacted, placeholder and artifact nodes included), or a
    #: deferred scalar as it is (see :func:`pcs._canon.is_deferrable`); its param
    #: ``arg.<name>`` is then derived by the writer, not listed in ``params``
    encoded: dict[str, Any] = field(default_factory=dict)
    #: MLflow params ``arg.<name>`` -> display text
    params: dict[str, str] = field(default_factory=dict)
    #: why the call cannot be replayed exactly (empty: it can)
    reasons: list[str] = field(default_factory=list)
    #: digest -> canonical bytes of each large value stored as an artifact
    blobs: dict[str, bytes] = field(default_factory=dict)


def capture(
    arguments: Mapping[str, Any],
    *,
    redact: Collection[str] = (),
    exclude: Collection[str] = (),
    strict: bool = False,
) -> Captured:
    """Encode the bound ``arguments`` of one call under the argument policy."""
    out = Captured()
    encoded, params = out.encoded, out.params
    for name, value in arguments.items():
        kind = type(value)
        # A scalar is always exactly encodable and small (its text fits an MLflow param).
        scalar = (
            kind is float
            or kind is bool
            or value is None
            or (kind is str and len(value) <= SHORT_STR)
            or (kind is int and value.bit_length() < SHORT_STR)
        )
        if scalar and (kind is not str or "://" not in value):
            # The hot path: a plain scalar under a name known to be innocuous.
            known = _plain_names.get((name, redact, exclude))
            if known is not None:
                if _canon.is_deferrable(value):
                    encoded[name] = value  # encoded by the writer (see _canon.trees)
                else:
                    encoded[name] = _canon.encode(value)
                    text = _text(value)
                    if len(text) <= MAX_PARAM_VALUE_LENGTH:
                        params[known] = text
                continue
        reason = _redaction_reason(name, value, redact, exclude)
        if reason is None and type(value) is not Secret:
            if len(_plain_names) > 10_000:
                _plain_names.clear()
            _plain_names[(name, redact, exclude)] = param_key(name)
        if reason is not None:
            out.encoded[name] = _canon.redacted_node(reason)
            if name not in exclude:
                out.params[param_key(name)] = "<redacted>"
            out.reasons.append(
                f"argument {name!r} is {reason}; supply it again to replay "
                f"(rerun(overrides={{{name!r}: ...}}))"
            )
            continue
        if scalar:
            encoded[name] = _canon.encode(value)
            text = _text(value)
            if len(text) <= MAX_PARAM_VALUE_LENGTH:
                params[param_key(name)] = text
            continue
        try:
            tree = _canon.encode(value, strict=strict, root=name)
        except Exception as exc:
            if strict:
                raise
            tree = _canon.encode(_Unencodable(exc))
        problems = _canon.find_placeholders(tree, root=name)
        if problems:
            out.reasons.extend(f"argument {p}" for p in problems)
        blob = _canon.canonical_bytes(tree)
        if len(blob) > MAX_INLINE_BYTES:
            digest = _canon.artifact_digest(blob)
            out.blobs[digest] = blob
            tree = _canon.artifact_ref_node(digest, len(blob))
            text = f"<artifact sha256:{digest} ({len(blob)} bytes)>"
        else:
            text = _display(value, problems)
        out.encoded[name] = tree
        if len(text) <= MAX_PARAM_VALUE_LENGTH:
            out.params[param_key(name)] = text
    return out


#: (argument name, redact, exclude) -> its param key, for names that are never redacted
_plain_names: dict[tuple[str, Collection[str], Collection[str]], str] = {}


def _redaction_reason(
    name: str, value: Any, redact: Collection[str], exclude: Collection[str]
) -> str | None:
    if name in exclude:
        return "excluded"
    if name in redact:
        return "redacted"
    if isinstance(value, Secret):
        return "a pcs.Secret"
    if _secret_name(name):
        return "redacted (its name looks like a secret)"
    if isinstance(value, str) and "://" in value and _URL_WITH_PASSWORD.match(value):
        return "redacted (a URL with a password)"
    return None


@functools.lru_cache(maxsize=4096)
def _secret_name(name: str) -> bool:
    return is_secret_name(name)


def _text(value: Any) -> str:
    """``str(value)`` that MLflow can store: lone surrogates escaped as ``\\udxxx``."""
    text = str(value)
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _display(value: Any, problems: list[str]) -> str:
    if problems:
        return f"<unencodable {type(value).__module__}.{type(value).__qualname__}>"
    if type(value) in _SCALARS:
        return _text(value)
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__qualname__}>"
    return text


class _Unencodable:
    """Stands in for a value whose encoding raised (a buggy ``__eq__``, say)."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def __repr__(self) -> str:
        return f"<value whose encoding raised {type(self.exc).__name__}: {self.exc}>"
