"""Readable block-style YAML of JSON-compatible data, written fast and without PyYAML.

The writer makes one registry artifact (``pcs.run_command_registry.yaml``)
per tracked call, off the caller's thread but on the path of every delivered
run, where PyYAML's representer would cost about fifty times the C JSON
encoder. :func:`block_yaml` writes the same data as YAML a person reads:

* mappings in block style, one key per line, indented by two spaces per level;
* sequences (argument trees such as ``["f", "0.1"]``) in flow style, on one line;
* multi-line strings (a component's source) as literal block scalars (``|``);
* other strings plain where YAML 1.1 reads them back as the same string
  (``qualname: Model.fit``), double-quoted otherwise, with YAML escapes.

:func:`pcs._yaml.load_yaml` (the safe loader, C or pure Python) reads the text
back as exactly the data written — the tests check this on random strings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["block_yaml", "mapping_lines"]

#: strings written plain: a letter or underscore first, then no character YAML treats
#: specially (no spaces, colons, quotes, brackets, '#', ',')
_PLAIN: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_./+-]*\Z")
#: plain-looking words YAML 1.1 resolves to booleans or null
_RESERVED: Final = frozenset({"true", "false", "yes", "no", "on", "off", "null", "y", "n"})
#: characters a YAML double-quoted scalar must escape that JSON leaves as they are: DEL,
#: C1 controls (NEL is a YAML line break), surrogates, line/paragraph separators, BOM,
#: non-characters
_UNPRINTABLE: Final = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]")
_json = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(", ", ": ")).encode
_INDENT: Final = "  "


def block_yaml(data: Mapping[str, Any]) -> str:
    """YAML text of ``data`` (dicts with str keys, lists, str, int, finite float, bool,
    None), keys in the mapping's own order; see the module docstring."""
    return "".join(mapping_lines(data, 0))


def mapping_lines(data: Mapping[str, Any], level: int) -> list[str]:
    """The lines (each ending in a newline) of ``data`` as a block mapping at ``level``.

    A caller can keep the lines of a part that repeats (a component) and join
    them into many documents.
    """
    indent = _INDENT * level
    lines: list[str] = []
    for key, value in data.items():
        head = f"{indent}{_scalar(key)}:"
        if type(value) is dict:
            if value:
                lines.append(head + "\n")
                lines.extend(mapping_lines(value, level + 1))
            else:
                lines.append(head + " {}\n")
        elif type(value) is str and "\n" in value and _literal_ok(value):
            lines.append(f"{head} {_literal(value, indent + _INDENT)}")
        else:
            lines.append(f"{head} {_flow(value)}\n")
    return lines


def _flow(value: Any) -> str:
    """A scalar, or a list in flow style (JSON, which YAML reads alike, made printable)."""
    kind = type(value)
    if kind is str:
        return _scalar(value)
    if kind is float:
        return _float(value)
    if kind is list:
        if _no_floats(value):
            return _escaped(_json(value))
        return "[" + ", ".join(_flow(item) for item in value) + "]"
    if kind is dict:
        return "{" + ", ".join(f"{_scalar(k)}: {_flow(v)}" for k, v in value.items()) + "}"
    if value is None or kind is bool or kind is int:
        return _json(value)
    raise TypeError(f"{kind.__qualname__} is not JSON-compatible data")


def _no_floats(value: Any) -> bool:
    """True when ``value`` (a list) holds no float at any depth: JSON writes it as YAML does."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is float:
            return False
        if kind is list:
            stack.extend(item)
        elif kind is dict:
            stack.extend(item.values())
    return True


def _float(value: float) -> str:
    """A float as YAML 1.1 resolves it: PyYAML needs a dot and a signed exponent."""
    text = repr(value)
    if text in ("inf", "-inf", "nan"):
        raise ValueError(f"{value!r} has no exact JSON-compatible form")
    mantissa, _, exponent = text.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    if exponent and exponent[0] not in "+-":
        exponent = "+" + exponent
    return f"{mantissa}e{exponent}" if exponent else mantissa


def _scalar(text: str) -> str:
    """A string as a plain scalar when YAML reads it back unchanged, else double-quoted."""
    if _PLAIN.match(text) and text.lower() not in _RESERVED:
        return text
    return _escaped(_json(text))


def _escaped(text: str) -> str:
    """JSON text with what JSON leaves raw but YAML cannot hold escaped (``\\x85``...)."""
    if text.isascii() and "\x7f" not in text:
        return text
    return _UNPRINTABLE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _literal_ok(text: str) -> bool:
    """True when ``text`` survives a literal block scalar exactly."""
    if not text.strip("\n"):
        return False  # line breaks only: a literal block would read back empty
    if _UNPRINTABLE.search(text) or "\r" in text or "\t" in text:
        return False
    if any(c < " " for c in text.replace("\n", "")):
        return False
    lines = text.split("\n")
    # Trailing spaces, and lines of spaces only, are not kept exactly by every reader.
    return not any(line != line.rstrip(" ") for line in lines)


def _literal(text: str, indent: str) -> str:
    """``|2-`` and the indented lines: the explicit indentation allows leading spaces."""
    body = text.rstrip("\n")
    trailing = len(text) - len(body)
    chomp = "-" if trailing == 0 else "" if trailing == 1 else "+"
    lines = body.split("\n")
    out = [f"|2{chomp}\n"]
    out.extend(f"{indent}{line}\n" if line else "\n" for line in lines)
    out.extend("\n" for _ in range(trailing - 1))
    return "".join(out)
