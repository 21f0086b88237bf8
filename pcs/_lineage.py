"""Output → input lineage: which tracked call produced a value another tracked call receives.

When a tracked call returns, :func:`produced` remembers the returned object
— and the elements of a returned list, tuple, dict or dataclass — as the
output of the call's run. When a later tracked call receives one of those
very objects as an argument (or inside a list, tuple or dict argument),
:func:`inputs_of` names the producing run, and the consumer's run records
the edge (tags ``pcs.inputs_from`` and ``pcs.inputs``, see
:mod:`pcs.conventions`).

The match is by **identity**, never by equality: two equal lists made by
different calls are different values. So values that have no identity of
their own — None, bools, numbers, strings, bytes — are never followed
(``0`` returned by one call and ``0`` passed to another are not an edge).
Objects that support weak references (class instances, models, NumPy
arrays...) are followed as long as they live, without being kept alive;
lists, dicts and tuples, which do not, are kept for the :data:`STRONG_LIMIT`
most recent ones only, so lineage never holds more than that many of them.

The table is shared by every thread and asyncio task of the process, so an
edge between calls made on different threads is found like any other.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Final, NamedTuple

from pcs.conventions import INPUTS_FROM_TAG, INPUTS_TAG

__all__ = [
    "NO_IDENTITY",
    "STRONG_LIMIT",
    "Edge",
    "adopt",
    "clear",
    "elements",
    "following",
    "inputs_of",
    "produced",
    "provenance",
    "tags_for",
]

#: lists, dicts and tuples kept (strongly) for lineage: the most recent ones only
STRONG_LIMIT: Final = 256
#: elements looked at inside one returned or received container
ELEMENT_LIMIT: Final = 64
#: weak entries kept at most (a bound for programs returning millions of live objects)
WEAK_LIMIT: Final = 100_000

#: types without an identity of their own: never followed
NO_IDENTITY: Final = frozenset({type(None), bool, int, float, complex, str, bytes})
_VALUES = NO_IDENTITY
_CONTAINERS: Final = (list, tuple, dict)



class Edge(NamedTuple):
    """One output → input link, seen from one end (what ``ComponentRun.inputs()`` and
    ``.consumers()`` list)."""

    #: the argument of the consumer the value went into (``model``, ``data[0]``...)
    path: str
    #: the run at the other end: the producer for ``inputs()``, the consumer for
    #: ``consumers()`` (a :class:`pcs.Run`, a :class:`pcs.ComponentRun` for a tracked call)
    run: Any


_lock = threading.Lock()


def _renew_lock_in_child() -> None:
    """A forked child gets a fresh lock (the parent's may be held by a thread that is gone)."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_renew_lock_in_child)
#: id(object) -> (a way to get the object back, the producing run's id)
_weak: dict[int, tuple[Callable[[], Any], str]] = {}
_strong: OrderedDict[int, tuple[Any, str]] = OrderedDict()


def clear() -> None:
    """Forget every produced value (tests; a forked child keeps its parent's table)."""
    with _lock:
        _weak.clear()
        _strong.clear()


def produced(value: Any, run_id: str) -> None:
    """Remember ``value`` (and its elements) as the output of run ``run_id``.

    Cheap for what is never followed: one set lookup for a returned scalar.
    """
    if type(value) in _VALUES:
        return
    _remember(value, run_id)
    for _kind, _key, element in _elements(value):
        _remember(element, run_id)


def _remember(value: Any, run_id: str) -> None:
    if type(value) in _VALUES:
        return
    key = id(value)
    try:
        ref = weakref.ref(value, lambda _, key=key: _forget(key))  # type: ignore[misc]
    except TypeError:  # lists, dicts, tuples...: kept alive, the most recent ones only
        with _lock:
            _strong[key] = (value, run_id)
            _strong.move_to_end(key)
            while len(_strong) > STRONG_LIMIT:
                _strong.popitem(last=False)
        return
    with _lock:
        if len(_weak) >= WEAK_LIMIT:
            _weak.clear()
        _weak[key] = (ref, run_id)


def _forget(key: int) -> None:
    with _lock:
        _weak.pop(key, None)


def _producer(value: Any) -> str | None:
    """The run that produced this very object, if lineage knows it."""
    key = id(value)
    entry = _weak.get(key)
    if entry is not None and entry[0]() is value:
        return entry[1]
    kept = _strong.get(key)
    if kept is not None and kept[0] is value:
        return kept[1]
    return None


#: how an element's key reads in its path: list index, dict key, dataclass field
_INDEX, _KEY, _FIELD = 0, 1, 2


def elements(value: Any) -> Iterator[Any]:
    """The first-level elements lineage looks at in ``value`` (those with an identity)."""
    for _kind, _key, element in _elements(value):
        yield element


def _elements(value: Any) -> Iterator[tuple[int, Any, Any]]:
    """``(kind, key, element)`` for the first-level elements of a list, tuple, dict or
    dataclass, elements without an identity left out (:func:`_path` names the place)."""
    kind = type(value)
    if kind is list or kind is tuple:
        for index, element in enumerate(value[:ELEMENT_LIMIT]):
            if type(element) not in _VALUES:
                yield _INDEX, index, element
    elif kind is dict:
        for count, (key, element) in enumerate(value.items()):
            if count >= ELEMENT_LIMIT:
                break
            if type(element) not in _VALUES:
                yield _KEY, key, element
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value)[:ELEMENT_LIMIT]:
            element = getattr(value, field.name, None)
            if type(element) not in _VALUES:
                yield _FIELD, field.name, element


def _path(base: str, kind: int, key: Any) -> str:
    """The path of an element: ``base[0]``, ``base['key']``, ``base.field``."""
    if kind == _INDEX:
        return f"{base}[{key}]"
    if kind == _KEY:
        return f"{base}[{key!r}]"
    return f"{base}.{key}"


def following() -> bool:
    """True once some tracked call's value is remembered (until then nothing can be an input)."""
    return bool(_weak or _strong)


def provenance(value: Any) -> tuple[tuple[str, str], ...]:
    """``((path, producing run id), ...)`` for ``value`` itself (path ``""``) and its elements.

    Empty for a value no tracked call produced. With :func:`adopt`, this carries
    lineage across a process boundary, where identity is lost: the sending side
    takes the provenance of what it pickles, the receiving side adopts it for
    the unpickled copy (see :mod:`pcs._pools`).
    """
    if (not _weak and not _strong) or type(value) in _VALUES:
        return ()
    found: list[tuple[str, str]] = []
    producer = _producer(value)
    if producer is not None:
        found.append(("", producer))
    for kind, key, element in _elements(value):
        producer = _producer(element)
        if producer is not None:
            found.append((_path("", kind, key), producer))
    return tuple(found)


def adopt(value: Any, found: tuple[tuple[str, str], ...]) -> None:
    """Remember ``value`` (a copy of a produced value, e.g. unpickled in another process)
    and its elements as produced by the runs :func:`provenance` named for the original."""
    if not found:
        return
    by_path = dict(found)
    own = by_path.pop("", None)
    if own is not None:
        _remember(value, own)
    if by_path:
        for kind, key, element in _elements(value):
            producer = by_path.get(_path("", kind, key))
            if producer is not None:
                _remember(element, producer)


def inputs_of(arguments: dict[str, Any], run_id: str | None = None) -> dict[str, str]:
    """``{argument path: producing run id}`` for the arguments some tracked call returned.

    ``path`` is the argument's name, or the place of an element inside it
    (``data[0]``, ``config['model']``). ``run_id`` (the consumer's own run, if
    known) is never its own producer.
    """
    if not _weak and not _strong:
        return {}
    found: dict[str, str] = {}
    for name, value in arguments.items():
        if type(value) in _VALUES:
            continue
        producer = _producer(value)
        if producer is not None and producer != run_id:
            found[name] = producer
            continue
        for kind, key, element in _elements(value):
            producer = _producer(element)
            if producer is not None and producer != run_id:
                found[_path(name, kind, key)] = producer
    return found


def tags_for(inputs: dict[str, str], limit: int) -> dict[str, str]:
    """The consumer's tags for its ``inputs`` (each value at most ``limit`` characters).

    ``pcs.inputs_from``: the producing run ids, sorted, comma-separated;
    ``pcs.inputs``: JSON ``{argument path: run id}``. Beyond ``limit``, whole
    entries are left out (never half an id).
    """
    if not inputs:
        return {}
    producers: list[str] = []
    size = 0
    for run_id in sorted(set(inputs.values())):
        size += len(run_id) + (1 if producers else 0)
        if size > limit:
            break
        producers.append(run_id)
    entries = sorted(inputs.items())
    text = _json(entries)
    while len(text) > limit and entries:
        entries = entries[: len(entries) // 2]
        text = _json(entries)
    return {INPUTS_FROM_TAG: ",".join(producers), INPUTS_TAG: text}


def _json(entries: list[tuple[str, str]]) -> str:
    return json.dumps(dict(entries), sort_keys=True, separators=(",", ":"))
