"""pcs_types: dataclasses, attrs classes, pydantic models, ``OrderedDict`` and
``Counter``, encoded exactly, field by field.

A first-party pcs plugin, installed with pcs and registered through the
``pcs`` entry-point group under the name ``types`` (disable it with
``PCS_DISABLE_PLUGINS=types``). It implements ``pcs_register_encoders``;
attrs and pydantic are never imported by it (their classes are recognised
once your program has imported the library).

Payloads (extension version 1; see :doc:`/plugins`):

``dataclass`` / ``attrs``
    ``{"class": "module:QualName", "fields": {name: value}}``: every field
    (``init=False`` ones too), each value encoded by pcs, so a field named
    like a secret is redacted as a dict key would be. Decoding rebuilds the
    instance without calling ``__init__`` or ``__post_init__`` (the fields
    are set as recorded, frozen classes included), like ``copy.copy`` does.
    An instance carrying attributes that are not fields is not encoded
    (a placeholder says so).
``pydantic``
    ``{"class": ..., "fields": {...}, "fields_set": [...], "extra": {...} | None,
    "private": {...} | None}`` for pydantic v2 models, rebuilt with
    ``model_construct`` (no validation runs again: the values are the
    validated ones).
``collections.OrderedDict``
    the ``(key, value)`` pairs in order (order is part of its equality).
``collections.Counter``
    the counts, as a dict.

The class must be importable by its path (not defined inside a function),
and its module imported when the value is decoded: pcs never imports code.
"""

from __future__ import annotations

import collections
import dataclasses
import sys
from typing import Any

from pcs.canon import class_path, resolve_class
from pcs.hookspecs import hookimpl

__all__ = ["VERSION", "pcs_register_encoders"]

#: the version of every extension this plugin writes
VERSION = 1


def _path_of(value: Any) -> str:
    path = class_path(type(value))
    if path is None:
        raise TypeError("the class is defined inside a function, so it cannot be found again")
    return path


def _new(payload: dict[str, Any], fields: dict[str, Any]) -> Any:
    """An instance of the payload's class with ``fields`` set, ``__init__`` not called."""
    cls: Any = resolve_class(payload["class"])
    instance = cls.__new__(cls)
    for name, value in fields.items():
        object.__setattr__(instance, name, value)
    return instance


def _only_fields(value: Any, names: list[str]) -> None:
    extra = sorted(set(getattr(value, "__dict__", {})) - set(names))
    if extra:
        raise TypeError(f"the instance has attributes that are not fields: {extra}")


# -- dataclasses -------------------------------------------------------------------------
def _is_dataclass(cls: type) -> bool:
    return dataclasses.is_dataclass(cls)


def encode_dataclass(value: Any) -> dict[str, Any]:
    """``{"class", "fields"}`` of a dataclass instance."""
    names = [field.name for field in dataclasses.fields(value)]
    _only_fields(value, names)
    return {"class": _path_of(value), "fields": {name: getattr(value, name) for name in names}}


def decode_dataclass(payload: dict[str, Any], version: int) -> Any:
    """The dataclass instance of a payload."""
    instance = _new(payload, payload["fields"])
    if not dataclasses.is_dataclass(instance):
        raise TypeError(f"{payload['class']} is not a dataclass any more")
    return instance


# -- attrs -------------------------------------------------------------------------------
def _is_attrs(cls: type) -> bool:
    attr = sys.modules.get("attr")
    return attr is not None and bool(attr.has(cls))


def encode_attrs(value: Any) -> dict[str, Any]:
    """``{"class", "fields"}`` of an attrs instance."""
    attr = sys.modules["attr"]
    names = [field.name for field in attr.fields(type(value))]
    _only_fields(value, names)
    return {"class": _path_of(value), "fields": {name: getattr(value, name) for name in names}}


def decode_attrs(payload: dict[str, Any], version: int) -> Any:
    """The attrs instance of a payload."""
    return _new(payload, payload["fields"])


# -- pydantic ----------------------------------------------------------------------------
def _is_pydantic(cls: type) -> bool:
    pydantic = sys.modules.get("pydantic")
    return (pydantic is not None and isinstance(cls, type)
            and issubclass(cls, pydantic.BaseModel) and hasattr(cls, "model_construct"))


def encode_pydantic(value: Any) -> dict[str, Any]:
    """The fields, the set fields, extra and private attributes of a pydantic v2 model."""
    fields = {name: getattr(value, name) for name in type(value).model_fields}
    return {
        "class": _path_of(value),
        "fields": fields,
        "fields_set": sorted(value.model_fields_set),
        "extra": dict(value.__pydantic_extra__) if value.__pydantic_extra__ else None,
        "private": dict(value.__pydantic_private__) if value.__pydantic_private__ else None,
    }


def decode_pydantic(payload: dict[str, Any], version: int) -> Any:
    """The pydantic model of a payload (``model_construct``: not validated again)."""
    cls: Any = resolve_class(payload["class"])
    values = dict(payload["fields"])
    values.update(payload["extra"] or {})
    model = cls.model_construct(_fields_set=set(payload["fields_set"]), **values)
    for name, value in (payload["private"] or {}).items():
        setattr(model, name, value)
    return model


# -- collections -------------------------------------------------------------------------
def encode_ordered_dict(value: collections.OrderedDict[Any, Any]) -> list[tuple[Any, Any]]:
    """The ``(key, value)`` pairs, in order."""
    return list(value.items())


def decode_ordered_dict(payload: list[tuple[Any, Any]], version: int) -> Any:
    """The OrderedDict of a payload."""
    return collections.OrderedDict(payload)


def encode_counter(value: collections.Counter[Any]) -> dict[Any, Any]:
    """The counts."""
    return dict(value)


def decode_counter(payload: dict[Any, Any], version: int) -> Any:
    """The Counter of a payload."""
    return collections.Counter(payload)


@hookimpl
def pcs_register_encoders(registry: Any) -> None:
    """Register dataclasses, attrs classes, pydantic models, OrderedDict and Counter."""
    add = registry.register
    add(collections.OrderedDict, name="collections.OrderedDict", version=VERSION,
        encode=encode_ordered_dict, decode=decode_ordered_dict)
    add(collections.Counter, name="collections.Counter", version=VERSION,
        encode=encode_counter, decode=decode_counter)
    add(_is_dataclass, name="dataclass", version=VERSION,
        encode=encode_dataclass, decode=decode_dataclass)
    add(_is_attrs, name="attrs", version=VERSION, encode=encode_attrs, decode=decode_attrs)
    add(_is_pydantic, name="pydantic", version=VERSION,
        encode=encode_pydantic, decode=decode_pydantic)
