"""Checking a registry before :func:`pcs.import_runs` writes anything, and the plan it returns.

Every spec hash, every content-addressed identifier (Component, ArgumentSet,
RunCommand), every artifact against its digest and size, every artifact path
(relative, no ``..``), every parent link (no cycles), and each ComponentRun's
RunCommand against its ``pcs.run_command_id`` tag. A changed byte is a
:class:`~pcs.SpecIntegrityError` naming the spec or artifact; what passes
becomes one :class:`Planned` run each, parents before children.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pcs import _canon
from pcs._yaml import dump_yaml, load_yaml
from pcs.argument_set import ArgumentSet
from pcs.component import Component
from pcs.conventions import (
    ARGUMENT_ARTIFACT_DIR,
    COMPONENT_RUN_TAG,
    MAX_PARAM_KEY_LENGTH,
    MAX_PARAM_VALUE_LENGTH,
    MAX_TAG_VALUE_LENGTH,
    PARENT_RUN_ID_TAG,
    REGISTRY_ARTIFACT,
    RUN_COMMAND_ID_TAG,
)
from pcs.exceptions import SpecError, SpecIntegrityError
from pcs.registry import KINDS, Registry
from pcs.run_command import RunCommand

__all__ = ["RUN_ID", "Planned", "artifact_refs", "verify"]

_log = logging.getLogger("pcs")

#: what a run id of a registry may look like
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,255}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_KEY = re.compile(r"[/\w.\- :]+")  # what MLflow accepts as a param, tag or metric name


def artifact_refs(argument_set: ArgumentSet) -> list[tuple[str, _canon.ArtifactRef]]:
    """(label, reference) of every argument value stored as an artifact by digest."""
    found = []
    for component, calls in argument_set.encoded().items():
        for entry, args in calls.items():
            for name, tree in args.items():
                found.extend(_canon.find_artifact_refs(tree, root=f"{component}.{entry}({name})"))
    return found


@dataclass
class Planned:
    """One run of the registry, verified and ready to be created."""

    run_id: str
    fields: dict[str, Any]
    parent: str | None
    command: RunCommand | None = None
    #: (path, digest) of every artifact file the imported run gets
    files: list[tuple[str, str]] = field(default_factory=list)
    #: the registry artifact to write when the run spec listed none
    registry_yaml: bytes | None = None


def _fail(message: str, spec_id: str | None = None) -> SpecError:
    return SpecError(f"Cannot import: {message}", spec_id)


def verify(registry: Registry) -> list[Planned]:
    """Check everything in ``registry``; return its runs, parents before children."""
    for kind in KINDS:
        for identifier, fields in registry.get_specs(kind).items():
            recorded = fields.get("spec_hash")
            computed = _canon.spec_hash(identifier, fields)
            if recorded != computed:
                raise SpecIntegrityError(
                    f"Cannot import: the {kind[:-1].replace('_', ' ')} spec {identifier} in "
                    f"{registry!r} does not match its spec_hash (recorded {recorded!r}, computed "
                    f"{computed}). It was changed after it was exported; export it again.",
                    identifier,
                    expected=str(recorded),
                    actual=computed,
                )
    for identifier in registry.spec_ids("components"):
        Component.from_spec(registry.get_component_spec(identifier))
    for identifier in registry.spec_ids("argument_sets"):
        ArgumentSet.from_spec(registry.get_argument_set_spec(identifier))
    for identifier in registry.spec_ids("run_commands"):
        RunCommand.from_registry(registry, identifier)

    planned: dict[str, Planned] = {}
    for run_id, fields in registry.get_run_specs().items():
        planned[run_id] = _plan_run(registry, run_id, fields)
    order: list[Planned] = []
    state: dict[str, int] = {}  # 1: visiting, 2: done

    def visit(run_id: str, chain: list[str]) -> None:
        if state.get(run_id) == 2:
            return
        if state.get(run_id) == 1:
            raise _fail(f"the parent links of runs {chain} form a cycle.", run_id)
        state[run_id] = 1
        parent = planned[run_id].parent
        if parent is not None and parent in planned:
            visit(parent, [*chain, parent])
        state[run_id] = 2
        order.append(planned[run_id])

    for run_id in sorted(planned):
        visit(run_id, [run_id])
    return order


def _check_str_map(value: Any, what: str, run_id: str, max_value: int) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _fail(f"run spec {run_id}: {what} must map str to str.", run_id)
    for key, text in value.items():
        _check_key(key, what, run_id)
        if len(text) > max_value:
            raise _fail(
                f"run spec {run_id}: the value of {what[:-1]} {key!r} is longer than MLflow's "
                f"limit of {max_value} characters.",
                run_id,
            )
    return dict(value)


def _check_key(key: str, what: str, run_id: str) -> None:
    if not _KEY.fullmatch(key) or len(key) > MAX_PARAM_KEY_LENGTH or "../" in key:
        raise _fail(f"run spec {run_id}: {key!r} is not a valid MLflow {what[:-1]} name.", run_id)


def _safe_artifact_path(path: Any, run_id: str) -> str:
    if (
        not isinstance(path, str)
        or not path
        or len(path) > 1024
        or path.startswith("/")
        or "\\" in path
        or "\0" in path
        or re.match(r"^[A-Za-z]:", path)
        or any(part in ("", ".", "..") for part in path.split("/"))
    ):
        raise _fail(
            f"run spec {run_id} lists the artifact path {path!r}; artifact paths must be "
            "relative, with no '..', '.', empty or drive parts.",
            run_id,
        )
    return path


def _plan_run(registry: Registry, run_id: str, fields: dict[str, Any]) -> Planned:
    if not RUN_ID.fullmatch(run_id):
        raise _fail(f"{run_id!r} is not a run id (letters, digits, '_', '-', '.').", run_id)
    if fields.get("type") != "Run":
        raise _fail(f"run spec {run_id} has type {fields.get('type')!r}, not 'Run'.", run_id)
    tags = _check_str_map(fields.get("tags"), "tags", run_id, MAX_TAG_VALUE_LENGTH)
    params = _check_str_map(fields.get("params"), "params", run_id, MAX_PARAM_VALUE_LENGTH)
    metrics = fields.get("metrics") or {}
    if not isinstance(metrics, Mapping) or not all(
        isinstance(k, str) and type(v) in (int, float) for k, v in metrics.items()
    ):
        raise _fail(f"run spec {run_id}: metrics must map str to numbers.", run_id)
    for key in metrics:
        _check_key(key, "metrics", run_id)
    for key in ("start_time", "end_time"):
        if fields.get(key) is not None and type(fields.get(key)) is not int:
            raise _fail(f"run spec {run_id}: {key} must be an int (ms) or null.", run_id)
    status = fields.get("status")
    if not isinstance(status, str):
        raise _fail(f"run spec {run_id}: status must be a string.", run_id)
    name = fields.get("run_name")
    if name is not None and not isinstance(name, str):
        raise _fail(f"run spec {run_id}: run_name must be a string or null.", run_id)
    parent = tags.get(PARENT_RUN_ID_TAG) or None
    if parent is not None and not RUN_ID.fullmatch(parent):
        raise _fail(f"run spec {run_id}: parent id {parent!r} is not a run id.", run_id)
    planned = Planned(
        run_id,
        {**fields, "tags": tags, "params": params, "metrics": dict(metrics)},
        parent,
    )
    listed: dict[str, str] = {}
    artifacts = fields.get("artifacts")
    if artifacts is not None:
        if not isinstance(artifacts, list):
            raise _fail(f"run spec {run_id}: artifacts must be a list.", run_id)
        for entry in artifacts:
            if not isinstance(entry, Mapping) or set(entry) != {"path", "digest", "size"}:
                raise _fail(
                    f"run spec {run_id}: each artifact needs exactly path, digest and size.",
                    run_id,
                )
            path = _safe_artifact_path(entry["path"], run_id)
            digest = entry["digest"]
            if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
                raise _fail(f"run spec {run_id}: artifact {path!r} has no sha256 digest.", run_id)
            blob = registry.get_artifact(digest)  # verified against the digest
            if len(blob) != entry["size"]:
                raise SpecIntegrityError(
                    f"Cannot import: artifact {path!r} of run {run_id} is {len(blob)} bytes, "
                    f"its spec says {entry['size']}.",
                    run_id,
                )
            listed[path] = digest
            planned.files.append((path, digest))
    if tags.get(COMPONENT_RUN_TAG) == "True":
        _plan_component_run(registry, planned, tags, listed)
    return planned


def _plan_component_run(
    registry: Registry, planned: Planned, tags: dict[str, str], listed: dict[str, str]
) -> None:
    run_id = planned.run_id
    command_id = tags.get(RUN_COMMAND_ID_TAG)
    if not command_id:
        raise _fail(f"ComponentRun spec {run_id} has no {RUN_COMMAND_ID_TAG} tag.", run_id)
    digest = listed.get(REGISTRY_ARTIFACT)
    if digest is not None:
        where = f"run {run_id}:{REGISTRY_ARTIFACT}"
        inner = Registry.from_dict(load_yaml(registry.get_artifact(digest), source=where),
                                   source=where)
        command = RunCommand.from_registry(inner, command_id)
    elif registry.has_spec("run_commands", command_id):
        command = RunCommand.from_registry(registry, command_id)
        planned.registry_yaml = dump_yaml(command.to_registry().to_dict()).encode()
    else:
        raise _fail(
            f"ComponentRun spec {run_id} comes without its RunCommand {command_id}; export it "
            "with to_registry(recurse=True) or include_artifacts=True.",
            run_id,
        )
    planned.command = command
    for label, ref in artifact_refs(command.argument_set):
        path = f"{ARGUMENT_ARTIFACT_DIR}/{ref.digest}.json"
        if path in listed:
            if listed[path] != ref.digest:
                raise SpecIntegrityError(
                    f"Cannot import: run {run_id} lists {path} with digest {listed[path]}.",
                    run_id,
                    expected=ref.digest,
                    actual=listed[path],
                )
        elif registry.has_artifact(ref.digest):
            registry.get_artifact(ref.digest)  # verified
            planned.files.append((path, ref.digest))
        else:
            _log.warning(
                "pcs: importing run %s without the stored value of argument %s (artifact "
                "sha256:%s is not in the registry); it cannot be replayed there.",
                run_id, label, ref.digest,
            )
