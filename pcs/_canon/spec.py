"""Specs: their plain JSON content and their two written forms.

A spec describes one object as JSON data: an *identifier* and *fields*, written
nested (``{identifier: {fields}}``) or flat (``{"identifier": identifier,
**fields}``). :func:`plain_copy` admits only JSON data into a spec;
:func:`split_spec` and :func:`join_spec` convert between the forms. The hash
of a spec is :func:`~pcs._canon.hashing.spec_hash`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from pcs._canon.markers import MAX_DEPTH
from pcs.exceptions import SpecError

__all__ = ["join_spec", "plain_copy", "split_spec"]


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
                f"{where}: {obj!r} is not allowed in a spec; encode it with pcs.canon.encode()"
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
        "pcs.canon.encode() first."
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
