"""Turn records into what MLflow stores: rows of tags, params, metrics, artifacts.

The delivery thread (and recovery) calls :meth:`Materializer.materialize` on
a batch of records (:mod:`pcs._records` defines them). Everything pcs derives
from a tracked call — the ``pcs.*`` tags, the run command registry artifact,
the return value artifact — is computed here, off the caller's thread; the
specs in that artifact are made by the functions that also make them for the
objects (:func:`pcs.component.spec_fields`,
:func:`pcs.argument_set.spec_fields`, :func:`pcs.run_command.spec_fields`).
The result is store-neutral; the sinks in :mod:`pcs._store` write it.
"""

from __future__ import annotations

import base64
import functools
import getpass
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pcs import _canon
from pcs._block_yaml import mapping_lines
from pcs._capture import param_key, recorded_params
from pcs._param_text import recorded_text
from pcs._records import (
    DefineComponent,
    EndRun,
    LogArtifact,
    LogError,
    LogMetrics,
    LogParams,
    Record,
    SetTags,
    StartCall,
    StartRun,
    decode,
)
from pcs.argument_set import spec_fields as argument_set_spec
from pcs.component import spec_fields as component_spec
from pcs.conventions import (
    COMPONENT_RUN_TAG,
    ENTRY_POINT_TAG,
    ERROR_TYPE_TAG,
    INIT_PARAM_PREFIX,
    MAX_TAG_VALUE_LENGTH,
    NOT_REPRODUCIBLE_REASON_TAG,
    PARENT_RUN_ID_TAG,
    REGISTRY_ARTIFACT,
    REPRODUCIBLE_TAG,
    RETURN_VALUE_ARTIFACT,
    RUN_COMMAND_ID_TAG,
    RUN_NAME_TAG,
    RUN_TAG,
    TRACEBACK_ARTIFACT,
    USER_TAG,
)
from pcs.exceptions import UnknownRecordError
from pcs.run_command import spec_fields as run_command_spec

__all__ = ["Batch", "Materializer", "NewRun"]



@dataclass
class NewRun:
    """A run to create, with its final state if it also ended within the batch."""

    experiment_id: str
    name: str | None
    start_ms: int
    status: str = "RUNNING"
    end_ms: int | None = None


@dataclass
class Batch:
    """Store-neutral content of a batch of records."""

    runs: dict[str, NewRun] = field(default_factory=dict)
    tags: dict[tuple[str, str], str] = field(default_factory=dict)
    params: dict[tuple[str, str], str] = field(default_factory=dict)
    metrics: list[tuple[str, str, float, int, int]] = field(default_factory=list)
    ends: dict[str, tuple[str, int]] = field(default_factory=dict)
    artifacts: list[tuple[str, str, bytes]] = field(default_factory=list)
    #: runs the caller already created through the client (client fallback only)
    precreated: set[str] = field(default_factory=set)


class Materializer:
    """Stateful across batches: remembers components (:class:`DefineComponent`) by key."""

    def __init__(self) -> None:
        self._components: dict[str, tuple[str, str, str]] = {}
        #: the dispatch table: record kind -> handler (one per kind of pcs._records.KINDS)
        self.handlers: dict[type[Record], Callable[[Batch, Any], None]] = {
            StartRun: self._start_run,
            DefineComponent: self._define_component,
            StartCall: self._start_call,
            SetTags: self._set_tags,
            LogParams: self._log_params,
            LogMetrics: self._log_metrics,
            LogArtifact: self._log_artifact,
            LogError: self._log_error,
            EndRun: self._end_run,
        }

    def materialize(self, records: Iterable[Sequence[Any]]) -> Batch:
        """The rows of ``records``: wire forms (queued, or read back from a journal).

        Raises :class:`~pcs.exceptions.UnknownRecordError` for a record of a
        kind (or form) this pcs does not know — written by a newer pcs — rather
        than drop it; nothing of the batch is delivered then.
        """
        batch = Batch()
        handlers = self.handlers
        for raw in records:
            record = decode(raw)
            handler = handlers.get(type(record))
            if handler is None:  # a kind without a handler: a test keeps the table complete
                raise UnknownRecordError(record[0], "this pcs defines it but cannot deliver it")
            handler(batch, record)
        return batch

    # -- records -------------------------------------------------------------
    def _define_component(self, batch: Batch, record: DefineComponent) -> None:
        fields = record.fields
        identifier, spec = component_spec(fields)
        # Written once: every call's registry artifact embeds the same text.
        components_text = "".join(mapping_lines({identifier: spec}, 1))
        self._components[record.key] = (identifier, str(fields["qualname"]), components_text)

    def _start_run(self, batch: Batch, record: StartRun) -> None:
        self._new_run(batch, record.run_id, record.experiment_id, record.name, record.start_ms,
                      record.tags, record.params, record.precreated)

    def _new_run(self, batch: Batch, run_id: str, experiment_id: str, name: str | None,
                 start_ms: int, tags: dict[str, str], params: dict[str, str],
                 precreated: bool) -> None:
        if type(run_id) is not str or not _SAFE_RUN_ID.match(run_id):
            # A journal is data: a run id becomes a directory name, never a path.
            raise ValueError(f"refusing a new run with the unsafe id {run_id!r}")
        batch.runs[run_id] = NewRun(str(experiment_id), None if name is None else _text(name),
                                    int(start_ms))
        if precreated:
            batch.precreated.add(run_id)
        if USER_TAG not in tags:
            batch.tags[(run_id, USER_TAG)] = _user()
        for key, value in tags.items():
            batch.tags[(run_id, _text(key))] = _tag_value(value)
        for key, value in params.items():
            batch.params[(run_id, _text(key))] = _text(str(value))

    def _start_call(self, batch: Batch, record: StartCall) -> None:
        run_id, entry_point, name = record.run_id, record.entry_point, record.name
        component_id, component_name, components_text = self._components[record.key]
        # The hot path leaves plain scalars unencoded (see _canon.is_deferrable): the
        # call's own ones become trees and params "arg.<name>" here.
        calls, params = record.calls, record.params
        own = calls.get(entry_point)
        if own is not None and any(type(v) is not list for v in own.values()):
            params = dict(params)
            for arg, value in own.items():
                if type(value) is not list:
                    params[param_key(arg)] = recorded_text(value) or ""
        init = calls.get("__init__") if entry_point != "__init__" else None
        if init:  # a method of a tracked class's instance: its __init__ arguments too
            params = {**recorded_params(init, INIT_PARAM_PREFIX), **params}
        arguments = {component_name: {entry: _canon.trees(args) for entry, args in calls.items()}}
        argument_set_id, argument_set_fields = argument_set_spec(arguments)
        command_id, command_fields = run_command_spec(component_id, entry_point, argument_set_id)
        tags = {
            RUN_TAG: "True",
            COMPONENT_RUN_TAG: "True",
            RUN_COMMAND_ID_TAG: command_id,
            ENTRY_POINT_TAG: entry_point,
            RUN_NAME_TAG: name,
            REPRODUCIBLE_TAG: "False" if record.reasons else "True",
        }
        if record.reasons:
            tags[NOT_REPRODUCIBLE_REASON_TAG] = "; ".join(record.reasons)
        if record.parent_id:
            tags[PARENT_RUN_ID_TAG] = record.parent_id
        if record.extra_tags:
            tags.update(record.extra_tags)
        self._new_run(batch, run_id, record.experiment_id, name, record.start_ms, tags, params,
                      record.precreated)
        # The registry document, {"pcs_registry", "run_commands", "components",
        # "argument_sets", "runs"}, as block YAML built from parts (see pcs._block_yaml).
        text = "".join((
            "pcs_registry: 1\nrun_commands:\n",
            *mapping_lines({command_id: command_fields}, 1),
            "components:\n",
            components_text,
            "argument_sets:\n",
            *mapping_lines({argument_set_id: argument_set_fields}, 1),
            "runs: {}\n",
        ))
        batch.artifacts.append((run_id, REGISTRY_ARTIFACT, text.encode()))

    def _set_tags(self, batch: Batch, record: SetTags) -> None:
        run_id = record.run_id
        for key, value in record.tags.items():
            batch.tags[(run_id, _text(key))] = _tag_value(value)

    def _log_params(self, batch: Batch, record: LogParams) -> None:
        run_id = record.run_id
        for key, value in record.params.items():
            batch.params[(run_id, _text(key))] = _text(str(value))

    def _log_metrics(self, batch: Batch, record: LogMetrics) -> None:
        run_id = record.run_id
        for key, value, timestamp, step in record.rows:
            batch.metrics.append((run_id, _text(str(key)), float(value), int(timestamp),
                                  int(step)))

    def _log_artifact(self, batch: Batch, record: LogArtifact) -> None:
        batch.artifacts.append((record.run_id, safe_artifact_path(record.path),
                                base64.b64decode(record.data)))

    def _log_error(self, batch: Batch, record: LogError) -> None:
        batch.tags[(record.run_id, ERROR_TYPE_TAG)] = _tag_value(record.error_type)
        batch.artifacts.append((record.run_id, TRACEBACK_ARTIFACT, record.text.encode()))

    def _end_run(self, batch: Batch, record: EndRun) -> None:
        run_id = record.run_id
        returned = record.returned
        if returned is not None:
            _add_return_value(batch, run_id, returned[0], returned[1])
        new = batch.runs.get(run_id)
        if new is not None:
            new.status, new.end_ms = record.status, int(record.end_ms)
        else:
            batch.ends[run_id] = (record.status, int(record.end_ms))


def _add_return_value(batch: Batch, run_id: str, fmt: str, payload: Any) -> None:
    if fmt == "pickle":
        data = base64.b64decode(payload)
    else:
        tree = payload if type(payload) is list else _canon.encode(payload)  # deferred
        data = return_value_bytes(tree, fmt)
    batch.artifacts.append((run_id, f"{RETURN_VALUE_ARTIFACT}.{fmt}", data))


def return_value_bytes(tree: Any, fmt: str) -> bytes:
    """The bytes of a ``pcs.return_value.json|yaml`` artifact: an envelope around the tree.

    ``format`` names the encoding, ``value`` is the exact typed tree, ``plain``
    the value as plain JSON when it has such a form (for readers that do not
    know pcs), else null.
    """
    plain: Any = None
    try:
        value = _canon.decode(tree)
        if type(value) in _PLAIN_SCALARS and (type(value) is not float or value - value == 0):
            plain = value  # the common case, without a JSON round trip
        else:
            plain = json.loads(json.dumps(value, allow_nan=False))
        json.dumps(plain, ensure_ascii=False).encode()  # a lone surrogate has no plain form
    except Exception:
        plain = None
    envelope = {"format": _canon.FORMAT, "value": tree, "plain": plain}
    if fmt == "yaml":
        from pcs._yaml import dump_yaml

        return dump_yaml(envelope).encode()
    return json.dumps(envelope, ensure_ascii=False).encode()


_PLAIN_SCALARS = (str, int, float, bool, type(None))


@functools.lru_cache(maxsize=1)
def _user() -> str:
    """The login name recorded as ``mlflow.user``, like MLflow's fluent API records it."""
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


#: ids of new runs: MLflow's hex ids and pcs's local ids (never a path)
_SAFE_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}\Z")


def safe_artifact_path(path: Any) -> str:
    """``path`` if it is a plain relative artifact path; ValueError otherwise.

    A journal is data, never instructions: an artifact path read from one must
    stay inside its run's artifact folder — relative, normalized, no ``..``, no
    absolute or drive paths, no backslashes or NUL bytes.
    """
    if type(path) is not str or not path or "\x00" in path or "\\" in path:
        raise ValueError(f"refusing the unsafe artifact path {path!r}")
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts) or ":" in parts[0]:
        raise ValueError(f"refusing the unsafe artifact path {path!r}")
    return path


def _text(value: str) -> str:
    """``value``, with lone surrogates escaped (SQLite and HTTP need valid UTF-8)."""
    if value.isascii():
        return value
    try:
        value.encode()
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode()
    return value


def _tag_value(value: Any) -> str:
    text = _text(str(value))
    if len(text) > MAX_TAG_VALUE_LENGTH:
        return text[: MAX_TAG_VALUE_LENGTH - 3] + "..."
    return text
