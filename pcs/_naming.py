"""The run name of a tracked call: which call this is, at a glance in the MLflow UI.

The rule, in order:

1. ``@pcs.tracked(name="...")`` wins: every call's run has that name.
2. Otherwise the callable's qualified name (``train_one``, ``Model.fit``),
   followed by up to :data:`MAX_NAMED_ARGUMENTS` of the call's arguments that tell
   calls apart at a glance: ``train_one(lr=0.1)``, ``fetch(shard=3, split='test')``.
   An argument is shown when all of these hold:

   * its value is a bool, an int, a float or a string (exactly those types);
   * its text is short: at most :data:`MAX_VALUE_CHARS` characters; a string
     also has no whitespace or unprintable character (a label, not prose);
   * it is not the parameter's default (the call chose it);
   * it is not a secret: its name is not in ``redact``/``exclude`` and does not
     look like a secret (``token``, ``password``...), and a string holds no
     credential (the same policy as the params, :mod:`pcs._redaction`).

   Arguments are taken in the signature's order. If the name would be longer
   than :data:`MAX_NAME_CHARS`, arguments are dropped from the end.
3. While a plugin rewrites arguments (``pcs_arguments_captured``), names show
   no arguments: the plugin may redact what the call received.

So a sweep ``train_one(0.1)``, ``train_one(0.2)`` reads as ``train_one(lr=0.1)``,
``train_one(lr=0.2)``, while ``tokenize("The cat sat")`` stays ``tokenize``.
Every name starts with the qualified name, so ``pcs.runs(name="train_one*")`` finds
them all; ``pcs.entry_point`` keeps the bare callable name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping
from typing import Any, Final

from pcs import _events, _redaction

__all__ = ["MAX_NAMED_ARGUMENTS", "MAX_NAME_CHARS", "MAX_VALUE_CHARS", "fast_run_name",
           "run_name"]

MAX_NAMED_ARGUMENTS: Final = 2
"""At most this many arguments appear in a run name."""
MAX_VALUE_CHARS: Final = 16
"""An argument appears only if its value's text is at most this long."""
MAX_NAME_CHARS: Final = 80
"""Arguments are dropped from a name that would be longer (the qualified name stays)."""

#: strings: their repr adds two quotes
_MAX_STR: Final = MAX_VALUE_CHARS - 2
_is_secret_name = _redaction.POLICY.is_secret_name
_secret_text = _redaction.POLICY.secret_text


def run_name(
    qualname: str,
    arguments: Mapping[str, Any],
    parameters: Mapping[str, inspect.Parameter],
    redact: Collection[str] = (),
    exclude: Collection[str] = (),
) -> str:
    """The run name of a call of ``qualname`` with the bound ``arguments`` (see the rule).

    ``parameters``: the callable's signature's, to tell defaults apart.
    """
    if _events.arguments_hook is not None:
        return qualname  # a plugin may redact arguments: show none (fail closed)

    def hidden(name: str, value: Any) -> bool:
        if name in redact or name in exclude or _is_secret_name(name):
            return True
        return type(value) is str and _secret_text(value) is not None

    defaults = {name: parameter.default for name, parameter in parameters.items()}
    return _named(qualname, _shown(arguments, defaults, hidden))


_NO_DEFAULT: Final = inspect.Parameter.empty


def fast_run_name(qualname: str, arguments: Mapping[str, Any],
                  defaults: Mapping[str, Any]) -> str:
    """:func:`run_name` for the arguments of the tracked call's fast path (the hot path).

    Only for ``arguments`` that ``Tracker.fast_arguments`` let through: no parameter is
    secret, redacted or excluded, no plugin rewrites arguments, and no string holds a
    credential (it ran the redaction policy's test), so those checks are not repeated.
    ``defaults``: the parameters' defaults by name (those without one left out).
    """
    return _named(qualname, _shown(arguments, defaults, None))


def _shown(arguments: Mapping[str, Any], defaults: Mapping[str, Any],
           hidden: Callable[[str, Any], bool] | None) -> list[str]:
    """The ``name=value`` texts of the arguments the rule shows, at most
    :data:`MAX_NAMED_ARGUMENTS`; ``hidden(name, value)``: a secret (None: none can be)."""
    shown: list[str] = []
    for name, value in arguments.items():
        kind = type(value)
        if kind is str:
            if not 0 < len(value) <= _MAX_STR or " " in value or not value.isprintable():
                continue
        elif kind is not float and kind is not int and kind is not bool:
            continue
        default = defaults.get(name, _NO_DEFAULT)
        if type(default) is kind and default == value:
            continue  # the call did not choose it
        if hidden is not None and hidden(name, value):
            continue
        text = repr(value)
        if len(text) > MAX_VALUE_CHARS:
            continue
        shown.append(f"{name}={text}")
        if len(shown) == MAX_NAMED_ARGUMENTS:
            break
    return shown


def _named(qualname: str, shown: list[str]) -> str:
    """The name: ``qualname`` and the ``name=value`` texts of the arguments shown."""
    if not shown:
        return qualname
    name = f"{qualname}({', '.join(shown)})"
    if len(name) > MAX_NAME_CHARS:
        name = f"{qualname}({shown[0]})"
        if len(name) > MAX_NAME_CHARS:
            return qualname
    return name
