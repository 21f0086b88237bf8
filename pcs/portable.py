"""Portable runs: export runs with what replaying them needs; import them into another store.

:func:`export_runs` puts runs — with their children, their RunCommand,
Component and ArgumentSet specs and their artifacts — into a
:class:`~pcs.Registry`; :meth:`Registry.to_yaml` writes it as one YAML file
plus a folder of artifacts named by sha256 digest.

:func:`import_runs` recreates those runs in the current tracking store:

* every spec hash, every content-addressed identifier and every artifact
  digest is verified **before anything is written**; a changed byte is a
  :class:`~pcs.SpecIntegrityError` naming the spec (or artifact);
* each run gets a new MLflow id and the tag ``pcs.imported_from`` = its
  original id; ``mlflow.parentRunId`` (and ``pcs.rerun_of``) are remapped to
  the imported runs;
* importing the same runs again adds nothing (runs already imported, and
  runs that already exist in this store, are reused); an import that was
  interrupted is cleaned up and redone.

Imported runs are never evidence that their code is trusted: a replay of an
imported run must be allowed explicitly (see :mod:`pcs.replay`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from pcs import _canon
from pcs._backend import (
    Backend,
    get_backend,
)
from pcs._yaml import dump_yaml, load_yaml
from pcs.argument_set import ArgumentSet
from pcs.component import Component
from pcs.component_run import ComponentRun
from pcs.conventions import (
    IMPORTED_FROM_TAG,
    IMPORTED_PARENT_TAG,
    IMPORTED_STATUS_TAG,
    IMPORTING_FROM_TAG,
    MAX_PARAM_KEY_LENGTH,
    MAX_PARAM_VALUE_LENGTH,
    MAX_TAG_VALUE_LENGTH,
    PARENT_RUN_ID_TAG,
    RERUN_OF_TAG,
)
from pcs.exceptions import (
    PcsError,
    RunNotFoundError,
    SpecError,
    SpecIntegrityError,
    StoreError,
    UsageError,
)
from pcs.registry import KINDS, InMemoryRegistry, Registry
from pcs.run import _TERMINAL, Run, _run_from_handle
from pcs.run_command import RunCommand

__all__ = [
    "IMPORTED_FROM_TAG",
    "IMPORTED_PARENT_TAG",
    "IMPORTED_STATUS_TAG",
    "export_runs",
    "import_runs",
]

_log = logging.getLogger("pcs")


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,255}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_KEY = re.compile(r"[/\w.\- :]+")  # what MLflow accepts as a param, tag or metric name


# =========================================================================== export


def component_run_to_registry(
    run: ComponentRun,
    registry: Registry | None = None,
    force: bool = False,
    include_artifacts: bool = False,
    recurse: bool = True,
) -> Registry:
    """:meth:`pcs.ComponentRun.to_registry`: the run spec; with ``recurse``, what replay needs."""
    run._backend.flush()
    registry = Run.to_registry(run, registry, force=force, include_artifacts=include_artifacts)
    if not recurse:
        return registry
    command = run.run_command
    command.to_registry(registry, recurse=True, force=force)
    for label, ref in _artifact_refs(command.argument_set):
        if registry.has_artifact(ref.digest):
            continue
        path = f"{ComponentRun.ARGUMENT_ARTIFACT_DIR}/{ref.digest}.json"
        blob = run._backend.read_artifact(run.identifier, path)
        digest = registry.add_artifact(blob)
        if digest != ref.digest:
            raise SpecIntegrityError(
                f"Run {run.identifier}: the stored value of argument {label} ({path}) is "
                f"corrupt: it hashes to {digest}. Restore the artifact before exporting.",
                ref.digest,
                expected=ref.digest,
                actual=digest,
            )
    return registry


def _artifact_refs(argument_set: ArgumentSet) -> list[tuple[str, _canon.ArtifactRef]]:
    found = []
    for component, calls in argument_set.encoded().items():
        for entry, args in calls.items():
            for name, tree in args.items():
                found.extend(_canon.find_artifact_refs(tree, root=f"{component}.{entry}({name})"))
    return found


def export_runs(
    runs: Run | str | Iterable[Run | str],
    registry: Registry | None = None,
    *,
    children: bool = True,
    include_artifacts: bool = True,
    force: bool = False,
) -> Registry:
    """Put runs (and, with ``children``, every run nested under them) into a registry.

    Runs are :class:`pcs.Run` objects or run ids of the current store.
    ComponentRuns bring their RunCommand, Component and ArgumentSet specs and
    their large argument values; ``include_artifacts`` (default True) also
    copies every artifact file of every run. Write the result with
    ``registry.to_yaml(path)`` and load it elsewhere with :func:`import_runs`.
    """
    registry = registry if registry is not None else InMemoryRegistry()
    items: list[Run | str] = [runs] if isinstance(runs, Run | str) else list(runs)
    queue: list[tuple[Backend, str]] = []
    for item in items:
        if isinstance(item, Run):
            queue.append((item._backend, item.identifier))
        elif isinstance(item, str) and item:
            queue.append((get_backend(), item))
        else:
            raise UsageError(f"export_runs() takes pcs.Run objects or run ids, not {item!r}.")
    for backend, _ in queue:
        backend.flush()
    seen: set[tuple[str, str]] = set()
    while queue:
        backend, run_id = queue.pop(0)
        if (backend.tracking_uri, run_id) in seen:
            continue
        seen.add((backend.tracking_uri, run_id))
        record = backend.get_run(run_id)
        if record.data.tags.get(ComponentRun.IS_COMPONENT_RUN_TAG) == "True":
            component_run = cast(
                ComponentRun, _run_from_handle(ComponentRun, run_id, backend.tracking_uri)
            )
            component_run_to_registry(
                component_run, registry, force=force, include_artifacts=include_artifacts
            )
        else:
            run = _run_from_handle(Run, run_id, backend.tracking_uri)
            Run.to_registry(run, registry, force=force, include_artifacts=include_artifacts)
        if children:
            queue.extend(
                (backend, child.info.run_id)
                for child in backend.find_runs_by_tag(PARENT_RUN_ID_TAG, run_id)
            )
    return registry


# =========================================================================== from_registry


def component_run_from_registry(
    cls: type[ComponentRun], registry: Registry, run_id: str
) -> ComponentRun:
    """:meth:`pcs.ComponentRun.from_registry`: the run of ``registry`` as it exists here.

    That is the run itself when the current store holds it, else the run
    imported from it (tag ``pcs.imported_from``). The registry's RunCommand
    (verified) is attached, so nothing needs to be read back to replay it.
    """
    fields = registry.get_run_spec(run_id)[run_id]
    tags = fields.get("tags") if isinstance(fields.get("tags"), Mapping) else {}
    if tags.get(ComponentRun.IS_COMPONENT_RUN_TAG) != "True":
        raise SpecError(
            f"Run spec {run_id} in {registry!r} is not a ComponentRun (no "
            f"{ComponentRun.IS_COMPONENT_RUN_TAG} tag); use pcs.Run.from_registry for plain runs.",
            run_id,
        )
    backend = get_backend()
    backend.flush()
    target = _existing_run(backend, run_id, tags, clean=False)
    if target is None:
        raise RunNotFoundError(run_id, backend.tracking_uri)
    run = cast(ComponentRun, _run_from_handle(cls, target, backend.tracking_uri))
    command_id = tags.get(ComponentRun.RUN_COMMAND_ID_TAG)
    if isinstance(command_id, str) and registry.has_spec("run_commands", command_id):
        run._run_command = RunCommand.from_registry(registry, command_id)
    return run


# =========================================================================== import


@dataclass
class _Planned:
    """One run of the registry, verified and ready to be created."""

    run_id: str
    fields: dict[str, Any]
    parent: str | None
    command: RunCommand | None = None
    #: (path, digest) of every artifact file the imported run gets
    files: list[tuple[str, str]] = field(default_factory=list)
    #: the registry artifact to write when the run spec listed none
    registry_yaml: bytes | None = None


def import_runs(
    registry: Registry | str | os.PathLike[str],
    *,
    experiment_id: str | None = None,
) -> dict[str, str]:
    """Recreate the runs of a registry (or of a YAML file) in the current tracking store.

    Returns ``{original run id: run id in this store}`` for every run of the
    registry. Everything is verified first (spec hashes, identifiers,
    artifact digests, artifact paths, parent links), so a tampered registry
    imports nothing. Runs go to ``experiment_id`` (default: the default
    experiment ``"0"``). Importing twice adds nothing.
    """
    if not isinstance(registry, Registry):
        if not isinstance(registry, str | os.PathLike):
            raise UsageError(
                f"import_runs() takes a pcs.Registry or the path of a registry YAML file, not "
                f"{type(registry).__name__}."
            )
        registry = Registry.from_yaml(registry)
    backend = get_backend()
    experiment = str(experiment_id) if experiment_id is not None else Run.DEFAULT_EXPERIMENT_ID
    if not backend.experiment_exists(experiment):
        raise UsageError(
            f"import_runs(experiment_id={experiment!r}): the tracking store "
            f"{backend.tracking_uri!r} has no active experiment with that id. Create it first."
        )
    plan = _verify(registry)
    backend.flush()
    mapping: dict[str, str] = {}
    created = 0
    for planned in plan:
        tags = planned.fields["tags"]
        existing = _existing_run(backend, planned.run_id, tags, clean=True)
        if existing is not None:
            mapping[planned.run_id] = existing
            continue
        try:
            mapping[planned.run_id] = _create(backend, registry, planned, mapping, experiment)
        except PcsError:
            raise
        except Exception as exc:
            raise StoreError(
                f"Importing run {planned.run_id} into {backend.tracking_uri!r} failed: "
                f"{type(exc).__name__}: {exc}. The runs imported before it are kept; call "
                "import_runs() again to finish (the partial run is removed and redone).",
                backend.tracking_uri,
            ) from exc
        created += 1
    _log.info("pcs: imported %d run(s) into %s (%d already present)", created,
              backend.tracking_uri, len(plan) - created)
    return mapping


def _existing_run(
    backend: Backend, run_id: str, tags: Mapping[str, Any], *, clean: bool
) -> str | None:
    """The id of this run in ``backend``'s store, if it is there already (or was imported)."""
    if backend.run_exists(run_id):
        return run_id
    done: str | None = None
    for record in backend.find_runs_by_tag(IMPORTED_FROM_TAG, run_id):
        done = record.info.run_id
        break
    if done is None:
        origin = tags.get(IMPORTED_FROM_TAG)
        if isinstance(origin, str) and _RUN_ID.fullmatch(origin) and backend.run_exists(origin):
            done = origin  # the run came from this store in the first place
    if clean:
        for record in backend.find_runs_by_tag(IMPORTING_FROM_TAG, run_id):
            if IMPORTED_FROM_TAG not in record.data.tags:
                _log.info("pcs: removing run %s, left over by an interrupted import of %s",
                          record.info.run_id, run_id)
                backend.delete_run(record.info.run_id)
    return done


def _fail(message: str, spec_id: str | None = None) -> SpecError:
    return SpecError(f"Cannot import: {message}", spec_id)


def _verify(registry: Registry) -> list[_Planned]:
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

    planned: dict[str, _Planned] = {}
    for run_id, fields in registry.get_run_specs().items():
        planned[run_id] = _plan_run(registry, run_id, fields)
    order: list[_Planned] = []
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


def _plan_run(registry: Registry, run_id: str, fields: dict[str, Any]) -> _Planned:
    if not _RUN_ID.fullmatch(run_id):
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
    if parent is not None and not _RUN_ID.fullmatch(parent):
        raise _fail(f"run spec {run_id}: parent id {parent!r} is not a run id.", run_id)
    planned = _Planned(
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
    if tags.get(ComponentRun.IS_COMPONENT_RUN_TAG) == "True":
        _plan_component_run(registry, planned, tags, listed)
    return planned


def _plan_component_run(
    registry: Registry, planned: _Planned, tags: dict[str, str], listed: dict[str, str]
) -> None:
    run_id = planned.run_id
    command_id = tags.get(ComponentRun.RUN_COMMAND_ID_TAG)
    if not command_id:
        raise _fail(f"ComponentRun spec {run_id} has no {ComponentRun.RUN_COMMAND_ID_TAG} tag.",
                    run_id)
    digest = listed.get(ComponentRun.REGISTRY_ARTIFACT)
    if digest is not None:
        where = f"run {run_id}:{ComponentRun.REGISTRY_ARTIFACT}"
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
    for label, ref in _artifact_refs(command.argument_set):
        path = f"{ComponentRun.ARGUMENT_ARTIFACT_DIR}/{ref.digest}.json"
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


def _create(
    backend: Backend,
    registry: Registry,
    planned: _Planned,
    mapping: Mapping[str, str],
    experiment_id: str,
) -> str:
    fields = planned.fields
    tags: dict[str, str] = dict(fields["tags"])
    tags.pop(IMPORTED_FROM_TAG, None)
    tags.pop(IMPORTING_FROM_TAG, None)
    parent = tags.pop(PARENT_RUN_ID_TAG, None)
    if parent:
        new_parent = mapping.get(parent) or _existing_run(backend, parent, {}, clean=False)
        if new_parent:
            tags[PARENT_RUN_ID_TAG] = new_parent
        else:
            tags[IMPORTED_PARENT_TAG] = parent
    rerun_of = tags.get(RERUN_OF_TAG)
    if rerun_of and rerun_of in mapping:
        tags[RERUN_OF_TAG] = mapping[rerun_of]
    status = str(fields["status"])
    if status not in _TERMINAL:
        tags[IMPORTED_STATUS_TAG] = status
        status = "KILLED"
    first = {IMPORTING_FROM_TAG: planned.run_id}
    if "mlflow.user" in tags:
        first["mlflow.user"] = tags["mlflow.user"]
    created = backend.create_run(
        experiment_id,
        run_name=fields.get("run_name"),
        tags=first,
        start_time=fields.get("start_time"),
    )
    new_id = str(created.info.run_id)
    timestamp = fields.get("end_time") or fields.get("start_time")
    backend.log_batch_at(
        new_id,
        params=fields["params"],
        tags=tags,
        metrics=fields["metrics"],
        timestamp=timestamp,
    )
    for path, digest in planned.files:
        backend.log_artifact_bytes(new_id, path, registry.get_artifact(digest))
    if planned.registry_yaml is not None:
        backend.log_artifact_bytes(new_id, ComponentRun.REGISTRY_ARTIFACT, planned.registry_yaml)
    backend.set_terminated(new_id, status, fields.get("end_time"))
    backend.log_batch_at(new_id, tags={IMPORTED_FROM_TAG: planned.run_id})
    backend.delete_tag(new_id, IMPORTING_FROM_TAG)
    return new_id
