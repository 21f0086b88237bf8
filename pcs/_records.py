"""The records pcs journals and delivers: one small typed class per kind, defined here only.

A record is what a caller hands the writer (:mod:`pcs._writer`) and the
journal (:mod:`pcs._journal`) keeps: a run starts, a tag is set, a call ends.
Each kind is a :class:`~typing.NamedTuple` whose first field is the kind's
letter, and its *wire form* is the JSON array of its fields,
``[kind, field, ...]``.

Producers build the wire form with the kind's typed constructor ``wire``
(``EndRun.wire(run_id, status, end_ms)``): a plain list, which the journal
serializes natively. It costs a tracked call ~0.1 µs more than list literals
did; NamedTuple instances on the hot path would cost ~0.8 µs more (their
construction, and orjson's slow fallback for tuple subclasses), so the typed
class is what readers get, not what callers queue. Readers turn a wire form
(queued, or read back from a journal) into the typed record with
:func:`decode`, and dispatch on its class (:class:`pcs._materialize.Materializer`).

Wire form :data:`WIRE_VERSION` (1), inside journal format ``pcs-journal/2``
(the journal header names both)::

    ["R", run_id, experiment_id, name, start_ms, tags, params, precreated]   StartRun
    ["K", key, component_fields]                                              DefineComponent
    ["T", run_id, experiment_id, start_ms, key, entry_point, name, parent_id,
          calls, reasons, params, extra_tags, precreated]                     StartCall
    ["G", run_id, tags]                                                       SetTags
    ["P", run_id, params]                                                     LogParams
    ["M", run_id, [[key, value, timestamp, step], ...]]                       LogMetrics
    ["A", run_id, path, base64]                                               LogArtifact
    ["X", run_id, error_type, traceback_text]                                 LogError
    ["E", run_id, status, end_ms(, [format, payload])]                        EndRun

A trailing field with a default may be left out (``EndRun`` without a return
value is written so; journals of earlier versions also end ``R`` and ``T``
without ``precreated``); :func:`decode` fills it in. A kind this module does
not define, or a known kind with more fields than it has, was written by a
newer pcs: :func:`decode` raises :class:`~pcs.exceptions.UnknownRecordError`
rather than guess, and whoever reads the journal keeps it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Literal, NamedTuple, TypeAlias

from pcs.exceptions import UnknownRecordError

__all__ = [
    "KINDS",
    "WIRE_VERSION",
    "DefineComponent",
    "EndRun",
    "LogArtifact",
    "LogError",
    "LogMetrics",
    "LogParams",
    "Record",
    "SetTags",
    "StartCall",
    "StartRun",
    "Wire",
    "decode",
    "merged_into_start",
]

#: The version of the records' wire form (the field lists above). A change that an
#: older pcs would misread — a field removed, reordered or given a new meaning —
#: needs a new version; a new kind, or a new trailing field with a default, does not
#: (an older pcs refuses such a record one by one, with UnknownRecordError).
WIRE_VERSION: Final = 1

Wire: TypeAlias = list[Any]
"""A record's wire form: the JSON array ``[kind, field, ...]`` (see the kinds' ``wire``)."""


class StartRun(NamedTuple):
    """``R``: a plain run starts (``pcs.run(...)``, ``pcs.Run()``)."""

    kind: Literal["R"]
    run_id: str
    experiment_id: str
    name: str | None
    start_ms: int
    #: every tag of the new run, ``pcs.is_run`` and ``mlflow.parentRunId`` included
    tags: dict[str, str]
    params: dict[str, str]
    #: the caller already created the run through the client (client fallback)
    precreated: bool = False

    @staticmethod
    def wire(run_id: str, experiment_id: str, name: str | None, start_ms: int,
             tags: dict[str, str], params: dict[str, str], precreated: bool = False) -> Wire:
        return ["R", run_id, experiment_id, name, start_ms, tags, params, precreated]


class DefineComponent(NamedTuple):
    """``K``: a Component, written once before the first call that uses it.

    ``key`` is the component's identifier as its calls refer to it; ``fields``
    are its fields, from which :func:`pcs.component.spec_fields` makes its spec.
    """

    kind: Literal["K"]
    key: str
    fields: dict[str, Any]

    @staticmethod
    def wire(key: str, fields: dict[str, Any]) -> Wire:
        return ["K", key, fields]


class StartCall(NamedTuple):
    """``T``: a tracked call starts (built on the caller's thread: the hot path)."""

    kind: Literal["T"]
    run_id: str
    experiment_id: str
    start_ms: int
    #: the ``key`` of the call's :class:`DefineComponent`
    key: str
    entry_point: str
    #: the run name (``mlflow.runName``)
    name: str
    parent_id: str | None
    #: ``{entry_point: {arg: tree or deferred scalar}}`` (see ``pcs._canon.is_deferrable``)
    calls: dict[str, dict[str, Any]]
    #: why the call is not reproducible (empty: it is)
    reasons: list[str]
    params: dict[str, str]
    extra_tags: dict[str, str] | None
    precreated: bool = False

    @staticmethod
    def wire(run_id: str, experiment_id: str, start_ms: int, key: str, entry_point: str,
             name: str, parent_id: str | None, calls: dict[str, dict[str, Any]],
             reasons: list[str], params: dict[str, str], extra_tags: dict[str, str] | None,
             precreated: bool = False) -> Wire:
        return ["T", run_id, experiment_id, start_ms, key, entry_point, name, parent_id, calls,
                reasons, params, extra_tags, precreated]


class SetTags(NamedTuple):
    """``G``: tags of a run."""

    kind: Literal["G"]
    run_id: str
    tags: dict[str, str]

    @staticmethod
    def wire(run_id: str, tags: dict[str, str]) -> Wire:
        return ["G", run_id, tags]


class LogParams(NamedTuple):
    """``P``: params of a run."""

    kind: Literal["P"]
    run_id: str
    params: dict[str, str]

    @staticmethod
    def wire(run_id: str, params: dict[str, str]) -> Wire:
        return ["P", run_id, params]


class LogMetrics(NamedTuple):
    """``M``: metric values of a run."""

    kind: Literal["M"]
    run_id: str
    #: ``[[key, value, timestamp_ms, step], ...]``
    rows: list[list[Any]]

    @staticmethod
    def wire(run_id: str, rows: list[list[Any]]) -> Wire:
        return ["M", run_id, rows]


class LogArtifact(NamedTuple):
    """``A``: an artifact file of a run."""

    kind: Literal["A"]
    run_id: str
    #: relative to the run's artifacts (checked when delivered: never leaves them)
    path: str
    #: the file's bytes, base64
    data: str

    @staticmethod
    def wire(run_id: str, path: str, data: str) -> Wire:
        return ["A", run_id, path, data]


class LogError(NamedTuple):
    """``X``: the error a run failed with."""

    kind: Literal["X"]
    run_id: str
    #: the exception type's ``module.qualname``
    error_type: str
    #: the traceback
    text: str

    @staticmethod
    def wire(run_id: str, error_type: str, text: str) -> Wire:
        return ["X", run_id, error_type, text]


class EndRun(NamedTuple):
    """``E``: a run ends (built on the caller's thread: the hot path).

    A tracked call's return value travels with it: ``returned`` is ``[format,
    payload]``, the payload a tree, a deferred scalar or base64 of a pickle.
    """

    kind: Literal["E"]
    run_id: str
    status: str
    end_ms: int
    returned: list[Any] | None = None

    @staticmethod
    def wire(run_id: str, status: str, end_ms: int, returned: list[Any] | None = None) -> Wire:
        if returned is None:
            return ["E", run_id, status, end_ms]
        return ["E", run_id, status, end_ms, returned]


Record: TypeAlias = (StartRun | DefineComponent | StartCall | SetTags | LogParams | LogMetrics
                     | LogArtifact | LogError | EndRun)
"""A typed record of any kind (what :func:`decode` gives)."""

#: Every record kind: letter -> class (the one table; decode and the materializer use it).
KINDS: Final[dict[str, type[Record]]] = {
    "R": StartRun,
    "K": DefineComponent,
    "T": StartCall,
    "G": SetTags,
    "P": LogParams,
    "M": LogMetrics,
    "A": LogArtifact,
    "X": LogError,
    "E": EndRun,
}

#: kind -> (class, fewest items, most items, the defaults of the optional trailing fields)
_FORMS: Final = {
    kind: (cls, len(cls._fields) - len(cls._field_defaults), len(cls._fields),
           tuple(cls._field_defaults.values()))
    for kind, cls in KINDS.items()
}
_TYPED: Final = frozenset(KINDS.values())
_new = tuple.__new__  # a record from its items, without the class's (Python) __new__


def decode(raw: Sequence[Any]) -> Record:
    """The typed record of ``raw``, a wire form (queued, or read back from a journal).

    A typed record is returned as it is. Raises
    :class:`~pcs.exceptions.UnknownRecordError` for a kind this pcs does not
    know, or a known kind with more (or fewer) fields than its wire form has.
    """
    if type(raw) in _TYPED:
        return raw  # type: ignore[return-value]
    if type(raw) is not list or not raw:
        shape = "an empty array" if raw == [] else f"a JSON {type(raw).__name__}"
        raise UnknownRecordError(None, f"a record is an array [kind, ...], not {shape}")
    kind = raw[0]
    form = _FORMS.get(kind) if type(kind) is str else None
    if form is None:
        raise UnknownRecordError(
            kind, f"this pcs (record wire form {WIRE_VERSION}) knows the kinds "
                  f"{', '.join(KINDS)}")
    cls, fewest, most, defaults = form
    count = len(raw)
    if count == most:
        return _new(cls, raw)
    if fewest <= count < most:
        return _new(cls, (*raw, *defaults[count - fewest:]))
    raise UnknownRecordError(
        kind, f"it has {count - 1} field(s) where {cls.__name__} (record wire form "
              f"{WIRE_VERSION}) has {fewest - 1}" + (f" to {most - 1}" if most > fewest else ""))


_EXTRA_TAGS: Final = StartCall._fields.index("extra_tags")


def merged_into_start(start: Wire, record: Wire) -> bool:
    """Merge ``record``, if it sets tags, into ``start``, the wire form of a StartCall not
    published yet (True); False (nothing done) for other kinds.

    The run gets the same tags as from the two records in order: a start's
    ``extra_tags`` are applied after pcs's own tags, and later keys win.
    """
    if record[0] != "G" or start[0] != "T":
        return False
    extra = start[_EXTRA_TAGS]
    start[_EXTRA_TAGS] = {**extra, **record[2]} if extra else record[2]
    return True
