"""Turn journal records into what MLflow stores: rows of tags, params, metrics, artifacts.

The delivery thread (and recovery) calls :func:`materialize` on a batch of
records (see :mod:`pcs._writer` for their layout). Everything pcs derives
from a tracked call — the ``pcs.*`` tags, the run command registry artifact,
the return value artifact — is computed here, off the caller's thread.
The result is store-neutral; the sinks in :mod:`pcs._backend` write it.
"""

from __future__ import annotations

import base64
import functools
import getpass
import json
import re
from dataclasses import dataclass, field
from typing import Any

from pcs import _canon
from pcs.argument_set import ArgumentSet
from pcs.conventions import (
    ARGUMENT_PARAM_PREFIX,
    COMPONENT_RUN_TAG,
    ENTRY_POINT_TAG,
    ERROR_TYPE_TAG,
    MAX_PARAM_KEY_LENGTH,
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

__all__ = ["Batch", "Materializer", "NewRun", "param_key"]

_PARAM_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")


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
    """Stateful across batches: remembers components ("K" records) by key."""

    def __init__(self) -> None:
        self._components: dict[str, tuple[str, str, str]] = {}

    def materialize(self, records: list[list[Any]]) -> Batch:
        batch = Batch()
        for record in records:
            handler = getattr(self, f"_on_{record[0]}", None)
            if handler is not None:
                handler(batch, *record[1:])
        return batch

    # -- records -------------------------------------------------------------
    def _on_K(self, batch: Batch, key: str, fields: dict[str, Any]) -> None:
        identifier = _canon.digest(fields)  # Component.identifier: fields carry no spec_hash
        spec_fields = {**fields, "spec_hash": _canon.spec_hash(identifier, fields)}
        # Serialized once: every call's registry artifact embeds the same text.
        components_json = _json({identifier: spec_fields})
        self._components[key] = (identifier, str(fields["qualname"]), components_json)

    def _on_R(self, batch: Batch, run_id: str, experiment_id: str, name: str | None,
              start_ms: int, tags: dict[str, str], params: dict[str, str],
              precreated: bool = False) -> None:
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

    def _on_T(self, batch: Batch, run_id: str, experiment_id: str, start_ms: int, key: str,
              entry_point: str, name: str, parent_id: str | None, calls: dict[str, Any],
              reasons: list[str], params: dict[str, str], extra_tags: dict[str, str] | None,
              precreated: bool = False) -> None:
        component_id, component_name, components_json = self._components[key]
        # The hot path leaves plain scalars unencoded (see _canon.is_deferrable): the
        # call's own ones become trees and params "arg.<name>" here.
        own = calls.get(entry_point)
        if own is not None and any(type(v) is not list for v in own.values()):
            params = dict(params)
            for arg, value in own.items():
                if type(value) is not list:
                    params[param_key(arg)] = str(value)
        calls = {entry: _canon.trees(arguments) for entry, arguments in calls.items()}
        arguments = {component_name: calls}
        argument_set_id = ArgumentSet.from_encoded(arguments).identifier
        argument_set_fields = {"type": "ArgumentSet", "format": _canon.FORMAT,
                               "arguments": arguments}
        argument_set_fields["spec_hash"] = _canon.spec_hash(
            argument_set_id, argument_set_fields, trusted=True)
        command_fields = {
            "type": "RunCommand",
            "component_id": component_id,
            "entry_point": entry_point,
            "argument_set_id": argument_set_id,
        }
        command_id = _canon._tree_digest(command_fields)
        command_fields["spec_hash"] = _canon.spec_hash(command_id, command_fields, trusted=True)
        tags = {
            RUN_TAG: "True",
            COMPONENT_RUN_TAG: "True",
            RUN_COMMAND_ID_TAG: command_id,
            ENTRY_POINT_TAG: entry_point,
            RUN_NAME_TAG: name,
            REPRODUCIBLE_TAG: "False" if reasons else "True",
        }
        if reasons:
            tags[NOT_REPRODUCIBLE_REASON_TAG] = "; ".join(reasons)
        if parent_id:
            tags[PARENT_RUN_ID_TAG] = parent_id
        if extra_tags:
            tags.update(extra_tags)
        self._on_R(batch, run_id, experiment_id, name, start_ms, tags, params, precreated)
        # The registry document, {"argument_sets", "components", "pcs_registry",
        # "run_commands", "runs"}, as JSON — which is YAML too (flow style) — built
        # from parts: the C JSON encoder is ~50x faster than PyYAML's representer.
        text = (
            f'{{"argument_sets":{_json({argument_set_id: argument_set_fields})},'
            f'"components":{components_json},"pcs_registry":1,'
            f'"run_commands":{_json({command_id: command_fields})},"runs":{{}}}}'
        )
        batch.artifacts.append((run_id, REGISTRY_ARTIFACT, text.encode()))

    def _on_G(self, batch: Batch, run_id: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            batch.tags[(run_id, _text(key))] = _tag_value(value)

    def _on_P(self, batch: Batch, run_id: str, params: dict[str, str]) -> None:
        for key, value in params.items():
            batch.params[(run_id, _text(key))] = _text(str(value))

    def _on_M(self, batch: Batch, run_id: str, metrics: list[list[Any]]) -> None:
        for key, value, timestamp, step in metrics:
            batch.metrics.append((run_id, _text(str(key)), float(value), int(timestamp),
                                  int(step)))

    def _on_A(self, batch: Batch, run_id: str, path: str, data: str) -> None:
        batch.artifacts.append((run_id, safe_artifact_path(path), base64.b64decode(data)))

    @staticmethod
    def _add_return_value(batch: Batch, run_id: str, fmt: str, payload: Any) -> None:
        if fmt == "pickle":
            data = base64.b64decode(payload)
        else:
            tree = payload if type(payload) is list else _canon.encode(payload)  # deferred
            data = return_value_bytes(tree, fmt)
        batch.artifacts.append((run_id, f"{RETURN_VALUE_ARTIFACT}.{fmt}", data))

    def _on_X(self, batch: Batch, run_id: str, error_type: str, text: str) -> None:
        batch.tags[(run_id, ERROR_TYPE_TAG)] = _tag_value(error_type)
        batch.artifacts.append((run_id, TRACEBACK_ARTIFACT, text.encode()))

    def _on_E(self, batch: Batch, run_id: str, status: str, end_ms: int,
              returned: list[Any] | None = None) -> None:
        if returned is not None:
            self._add_return_value(batch, run_id, returned[0], returned[1])
        new = batch.runs.get(run_id)
        if new is not None:
            new.status, new.end_ms = status, int(end_ms)
        else:
            batch.ends[run_id] = (status, int(end_ms))


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


_json = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
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


@functools.lru_cache(maxsize=4096)
def param_key(name: str) -> str:
    """``arg.<name>`` made acceptable to MLflow: unusual characters escaped, length capped."""
    safe = _PARAM_KEY_UNSAFE.sub(lambda m: f"_x{ord(m.group()):x}_", name)
    safe = safe.replace("..", "._x2e_")
    key = f"{ARGUMENT_PARAM_PREFIX}{safe}"
    if len(key) > MAX_PARAM_KEY_LENGTH:
        key = f"{key[:MAX_PARAM_KEY_LENGTH - 18]}~{_canon.digest(name)[:16]}"
    return key
