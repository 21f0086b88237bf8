"""Trees of scalar values, one small function per exact type.

The encoder dispatches on these tables; the decoder re-encodes what it read
with the same functions to prove that a tree is canonical (one value, one
spelling).
"""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
import pathlib
import uuid
from collections.abc import Callable
from typing import Any, Final, TypeAlias

from pcs._canon.markers import Tree

__all__ = [
    "SCALARS",
    "SUB_BASES",
    "Scalar",
    "enc_date",
    "enc_decimal",
    "enc_float",
    "enc_int",
    "enc_str",
    "enc_timedelta",
    "enc_uuid",
    "plain_offset",
]

_INT_MAX_BITS: Final = 8192  # ints wider than this use the hexadecimal "ix" tag


def _enc_none(value: None) -> Tree:
    return ["N"]


def _enc_bool(value: bool) -> Tree:
    return ["b", value]


def enc_int(value: int) -> Tree:
    if value.bit_length() <= _INT_MAX_BITS:
        return ["i", int.__repr__(value)]
    return ["ix", format(value, "x")]


def enc_float(value: float) -> Tree:
    return ["f", float.__repr__(value)]


def enc_str(value: str) -> Tree:
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


def enc_decimal(value: decimal.Decimal) -> Tree:
    return ["dec", str(value)]


def enc_uuid(value: uuid.UUID) -> Tree:
    return ["uuid", str(value)]


def enc_date(value: _dt.date) -> Tree:
    return ["da", value.isoformat()]


def enc_timedelta(value: _dt.timedelta) -> Tree:
    return ["td", value.days, value.seconds, value.microseconds]


def _enc_path(value: pathlib.PurePath) -> Tree:
    return ["path", type(value).__name__, str(value)]


def plain_offset(tz: _dt.tzinfo) -> bool:
    """True for a ``datetime.timezone`` that isoformat() describes completely."""
    if type(tz) is not _dt.timezone:
        return False
    offset = tz.utcoffset(None)
    return tz == _dt.timezone(offset) and tz.tzname(None) == _dt.timezone(offset).tzname(None)


Scalar: TypeAlias = Callable[[Any], Tree]

# Exact-type dispatch: subclasses (IntEnum, numpy.float64, str subclasses...) miss
# this table on purpose and are handled by Encoder.other().
SCALARS: Final[dict[type, Scalar]] = {
    type(None): _enc_none,
    bool: _enc_bool,
    int: enc_int,
    float: enc_float,
    str: enc_str,
    bytes: _enc_bytes,
    bytearray: _enc_bytearray,
    complex: _enc_complex,
    decimal.Decimal: enc_decimal,
    uuid.UUID: enc_uuid,
    _dt.date: enc_date,
    _dt.timedelta: enc_timedelta,
    pathlib.PurePosixPath: _enc_path,
    pathlib.PureWindowsPath: _enc_path,
    pathlib.PosixPath: _enc_path,
    pathlib.WindowsPath: _enc_path,
}

# Builtin bases whose subclasses are encoded as ["sub", class path, base tree].
SUB_BASES: Final[tuple[tuple[type, Scalar, Callable[[Any], Any]], ...]] = (
    (str, enc_str, str.__str__),
    (int, enc_int, int.__index__),
    (float, enc_float, float.__float__),
)
