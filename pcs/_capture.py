"""Argument capture for tracked calls: the argument policy.

Each bound argument is encoded once with the canonical typed encoding
(:mod:`pcs._canon`), under the redaction policy (:mod:`pcs._redaction`). Then:

* arguments named in ``exclude`` or ``redact``, arguments whose name looks like
  a secret (password, token, api_key, authorization, cookie, session...),
  :class:`pcs.Secret` values and strings holding a credential (a URL with a
  password, a Bearer token, a JWT, an AWS key...) are replaced by a *redacted*
  node — at any depth: under secret-named mapping keys and fields too — before
  anything is hashed or persisted, and make the run not reproducible unless the
  value is supplied again at replay (``rerun(overrides=...)``). ``None``,
  booleans, empty values and a parameter's default value are not secrets;
* values that cannot be encoded become placeholders (type, repr, digest) and
  make the run not reproducible, or raise :class:`~pcs.EncodingError` before
  the call when ``strict=True``;
* values whose encoding is larger than :data:`MAX_INLINE_BYTES` are stored as
  content-addressed artifacts and referenced by digest — never truncated.

Alongside, each argument gets a short display text that is logged as the
MLflow param ``arg.<name>``: the value's display when it is at most
:data:`pcs._param_text.PARAM_SUMMARY_LENGTH` characters, else a summary such as
``<list of 3,000 floats, sha256 1a2b3c4d5e6f…>`` (see :mod:`pcs._param_text`).
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from pcs import _canon, _redaction
from pcs._param_text import PARAM_SUMMARY_LENGTH, param_text, recorded_text
from pcs.conventions import ARGUMENT_PARAM_PREFIX, MAX_PARAM_KEY_LENGTH
from pcs.secret import Secret

__all__ = [
    "MAX_INLINE_BYTES",
    "SHORT_STR",
    "Captured",
    "capture",
    "is_secret_name",
    "param_key",
    "recorded_params",
]

_PARAM_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")


@functools.lru_cache(maxsize=4096)
def param_key(name: str, prefix: str = ARGUMENT_PARAM_PREFIX) -> str:
    """``arg.<name>`` made acceptable to MLflow: unusual characters escaped, length capped.

    ``prefix``: ``init.`` for the ``__init__`` arguments of a tracked class.
    """
    safe = _PARAM_KEY_UNSAFE.sub(lambda m: f"_x{ord(m.group()):x}_", name)
    safe = safe.replace("..", "._x2e_")
    key = f"{prefix}{safe}"
    if len(key) > MAX_PARAM_KEY_LENGTH:
        key = f"{key[:MAX_PARAM_KEY_LENGTH - 18]}~{_canon.digest(name)[:16]}"
    return key


#: Encoded arguments larger than this are stored as artifacts, by digest.
MAX_INLINE_BYTES = 64 * 1024

_POLICY = _redaction.POLICY
_SCALARS = (str, int, float, bool, type(None))
#: strings up to this many characters are scalars: at most 6 bytes per character once
#: encoded, far below MAX_INLINE_BYTES, and within MLflow's param value limit
SHORT_STR = 4096


def is_secret_name(name: str) -> bool:
    """True when an argument called ``name`` is redacted by default (unless trivial)."""
    return _POLICY.is_secret_name(name)


@dataclass(slots=True)
class Captured:
    """The captured arguments of one call."""

    #: name -> encoded tree (redacted, placeholder and artifact nodes included), a
    #: deferred scalar as it is (see :func:`pcs._canon.is_deferrable`) or a deferred
    #: container ``{"s": snapshot}`` (see :func:`_snapshot`); the param ``arg.<name>`` of
    #: a deferred value is derived by the writer, not listed in ``params``
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
    parameters: Mapping[str, inspect.Parameter] | None = None,
) -> Captured:
    """Encode the bound ``arguments`` of one call under the argument policy.

    ``parameters`` (the callable's signature's) tell default values apart: an
    argument equal to its default is recorded as it is, even under a secret name.
    """
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
        if scalar and (kind is not str or _POLICY.secret_text(value) is None):
            # The hot path: a plain scalar under a name known to be innocuous.
            known = _plain_names.get((name, redact, exclude))
            if known is not None:
                if _canon.is_deferrable(value):
                    encoded[name] = value  # encoded by the writer (see _canon.trees)
                else:
                    encoded[name] = tree = _canon.encode(value)
                    params[known] = param_text(_text(value), tree)
                continue
        reason = _redaction_reason(name, value, redact, exclude, parameters)
        if (
            reason is None
            and type(value) is not Secret
            and name not in redact
            and name not in exclude
            and not _POLICY.is_secret_name(name)
        ):
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
            encoded[name] = tree = _canon.encode(value)
            params[param_key(name)] = param_text(_text(value), tree)
            continue
        if kind is list or kind is dict:
            snapshot = _snapshot(value)
            if snapshot is not None:  # encoded by the writer, with the same result
                encoded[name] = snapshot
                continue
        try:
            tree, hidden = _canon.encode_redacted(value, _POLICY, strict=strict, root=name)
        except Exception as exc:
            if strict:
                raise
            # Fail closed: a value pcs could not check for secrets is not recorded.
            reason = f"redacted (pcs could not check it for secrets: {type(exc).__name__})"
            tree, hidden = _canon.redacted_node(reason), [f"{name}: {reason}"]
        if hidden:
            out.reasons.extend(
                f"argument {h}; supply {name!r} again to replay "
                f"(rerun(overrides={{{name!r}: ...}}))"
                for h in hidden
            )
        problems = _canon.find_placeholders(tree, root=name)
        if problems:
            out.reasons.extend(f"argument {p}" for p in problems)
        blob = _canon.canonical_bytes(tree)
        if len(blob) > MAX_INLINE_BYTES:
            digest = _canon.artifact_digest(blob)
            out.blobs[digest] = blob
            text = f"<artifact sha256:{digest} ({len(blob)} bytes)>"
            tree = _canon.artifact_ref_node(digest, len(blob))
        elif hidden:
            text = param_text(_redaction.tree_text(tree, PARAM_SUMMARY_LENGTH), tree, blob)
        else:
            text = param_text(_display(value, problems), tree, blob)
        out.encoded[name] = tree
        out.params[param_key(name)] = text
    return out


#: the most elements a deferred list (entries a deferred dict) may have, and the longest
#: string in either: the canonical bytes then stay below MAX_INLINE_BYTES (no artifact)
SNAPSHOT_ITEMS = 1024
SNAPSHOT_ENTRIES = 256
SNAPSHOT_STR = 40
_PLAIN_TYPES = frozenset({float, int, str, bool, type(None)})
_INT_BOUND = _canon.DEFERRABLE_INT
#: key tuples of deferred dicts already checked (short ASCII strings, no secret name)
_innocent_keys: set[tuple[str, ...]] = set()


def _plain_str(value: str) -> bool:
    """A short ASCII string in which the redaction policy finds no credential."""
    if len(value) > SNAPSHOT_STR or not value.isascii():
        return False
    if len(value) < _redaction.SHORT_TEXT and _POLICY.extra is None:
        return "://" not in value  # all the built-in patterns need for a short text
    return _POLICY.secret_text(value) is None


def _plain_values(values: Any) -> bool:
    """Every value a deferrable scalar that is no secret (see :func:`_plain_str`)."""
    for item in values:
        kind = type(item)
        if kind is float:
            if item - item:  # nan for nan and the infinities
                return False
        elif kind is int:
            if not -_INT_BOUND < item < _INT_BOUND:
                return False
        elif kind is str:
            if not _plain_str(item):
                return False
        elif kind is not bool and item is not None:
            return False
    return True


def _snapshot(value: list[Any] | dict[Any, Any]) -> dict[str, Any] | None:
    """A deferred container (``{"s": copy}``, or ``{"f": base64}`` for a list of floats)
    to encode later, or None (encode now).

    The copy is the consistent snapshot: its elements are immutable. Only values
    that encode exactly as JSON holds them qualify (see :func:`_plain_values`),
    under keys that are short strings not named like a secret: what
    :func:`capture` would have encoded without redacting, a placeholder or an
    artifact. A list of floats travels as its IEEE 754 bytes (exact, NaN and
    infinities included), which is cheaper to copy and to journal than text.
    """
    if isinstance(value, list):  # exactly a list: capture() checks the type
        if not 0 < len(value) <= SNAPSHOT_ITEMS:
            return None
        if list(map(type, value)).count(float) == len(value):
            return {_canon.FLOATS: _canon.pack_floats(value)}
        if not _plain_values(value):
            return None
        return {_canon.SNAPSHOT: value.copy()}
    if not 0 < len(value) <= SNAPSHOT_ENTRIES:
        return None
    keys = tuple(value)
    if keys not in _innocent_keys:
        secret_name, named = _POLICY.is_secret_name, _POLICY.named
        for key in keys:
            if type(key) is not str or not _plain_str(key) or secret_name(key):
                return None
            try:  # the policy as the encoder asks it; if asking fails, encode now (fail closed)
                if named(key, value[key]) is not None:
                    return None
            except Exception:
                return None
        if len(_innocent_keys) > 1_000:
            _innocent_keys.clear()
        _innocent_keys.add(keys)
    if not _plain_values(value.values()):
        return None
    return {_canon.SNAPSHOT: value.copy()}


def recorded_params(arguments: Mapping[str, Any], prefix: str) -> dict[str, str]:
    """The params ``<prefix><name>`` of arguments as records hold them (trees or deferred
    scalars): how the writer logs the ``__init__`` arguments of a tracked class's
    instance (``init.<name>``) on the runs of its tracked methods."""
    params: dict[str, str] = {}
    for name, value in arguments.items():
        text = recorded_text(value)
        if text is not None:
            params[param_key(name, prefix)] = text
    return params


#: (argument name, redact, exclude) -> its param key, for names that are never redacted
_plain_names: dict[tuple[str, Collection[str], Collection[str]], str] = {}


def _redaction_reason(
    name: str,
    value: Any,
    redact: Collection[str],
    exclude: Collection[str],
    parameters: Mapping[str, inspect.Parameter] | None,
) -> str | None:
    if name in exclude:
        return "excluded"
    if isinstance(value, Secret):
        return "a pcs.Secret"
    if isinstance(value, str):
        label = _POLICY.secret_text(value)
        if label is not None:
            return f"redacted (it looks like {label})"
    if _redaction.is_trivial(value) or _is_default(name, value, parameters):
        return None  # None, a bool, an empty value, the default: not a secret
    if name in redact:
        return "redacted"
    if _POLICY.is_secret_name(name):
        return "redacted (its name looks like a secret)"
    return None


def _is_default(
    name: str, value: Any, parameters: Mapping[str, inspect.Parameter] | None
) -> bool:
    """True when ``value`` is the parameter's default (compared only for plain scalars)."""
    if parameters is None:
        return False
    parameter = parameters.get(name)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return False
    default = parameter.default
    if value is default:
        return True
    kind = type(value)
    return kind is type(default) and kind in _SCALARS and bool(value == default)


def _on_policy_change() -> None:
    _plain_names.clear()
    _innocent_keys.clear()


_redaction.on_change(_on_policy_change)


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
