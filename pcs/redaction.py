"""``pcs.redaction``: what pcs treats as a secret, and how to add to it.

pcs redacts secrets before anything is hashed or persisted — call arguments
at any depth (mapping keys, dataclass / attrs / pydantic fields, attributes),
return values and the params of ``pcs.run(params=...)``. A value is a secret
when its name looks like one (``db_password``, ``X-Api-Key``,
``refreshToken``; not ``tokenizer`` or ``author``), when it is a
:class:`pcs.Secret`, or when it is a string holding a credential (a Bearer or
Basic credential, a JWT, a PEM private key, a URL with a password, an AWS
access key id, ``sk-``/``ghp_``/``xoxb-``... vendor keys). ``None``, booleans,
empty values and a parameter's default value are never secrets.

Add your own names and patterns once, at start-up::

    import pcs

    pcs.redaction.add_names("pin", "otp", "license_key")
    pcs.redaction.add_patterns(r"acme_[0-9a-f]{32}")

Changes apply to every call recorded after them, in this process.
"""

from __future__ import annotations

import re

from pcs import _redaction

__all__ = [
    "NAME_TERMS",
    "VALUE_PATTERNS",
    "add_names",
    "add_patterns",
    "is_secret_name",
    "patterns",
    "reset",
    "secret_text",
]

NAME_TERMS = _redaction.NAME_TERMS
"""The built-in secret name terms (matched as word parts of a name)."""

VALUE_PATTERNS = _redaction.VALUE_PATTERNS
"""The built-in value patterns: ``(what it is, regex)``."""


def add_names(*names: str) -> None:
    """Treat values called any of ``names`` as secrets (matched like the built-in terms).

    A name is split into word parts, case and separators ignored: ``"pin"``
    matches ``pin``, ``user_pin`` and ``userPin``; ``"license_key"`` matches
    ``licenseKey`` and ``X-License-Key``.
    """
    _redaction.POLICY.add_names(names)


def add_patterns(*patterns: str | re.Pattern[str]) -> None:
    """Treat strings in which any of these regexes is found (``re.search``) as secrets."""
    _redaction.POLICY.add_patterns(patterns)


def patterns() -> tuple[str, ...]:
    """The patterns added with :func:`add_patterns` (the built-in ones are
    :data:`VALUE_PATTERNS`)."""
    return _redaction.POLICY.patterns


def reset() -> None:
    """Forget every name and pattern added: back to the built-in policy."""
    _redaction.POLICY.reset()


def is_secret_name(name: str) -> bool:
    """True when a value called ``name`` is redacted (unless it is None, a bool or empty)."""
    return _redaction.is_secret_name(name)


def secret_text(text: str) -> str | None:
    """What kind of credential ``text`` holds (``"a JSON Web Token"``...), or None."""
    return _redaction.secret_text(text)
