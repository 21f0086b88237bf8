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

The checks made before anything is written are in :mod:`pcs._import_plan`.

Imported runs are never evidence that their code is trusted: a replay of an
imported run must be allowed explicitly (see :mod:`pcs.replay`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pcs import component_run
from pcs._import_plan import RUN_ID, Planned, artifact_refs, verify
from pcs._outcome import TERMINAL_STATUSES
from pcs._store import Backend, get_backend
from pcs.component_run import ComponentRun
from pcs.conventions import (
    ARGUMENT_ARTIFACT_DIR,
    COMPONENT_RUN_TAG,
    IMPORTED_FROM_TAG,
    IMPORTED_PARENT_TAG,
    IMPORTED_STATUS_TAG,
    IMPORTING_FROM_TAG,
    PARENT_RUN_ID_TAG,
    REGISTRY_ARTIFACT,
    RERUN_OF_TAG,
    RUN_COMMAND_ID_TAG,
    USER_TAG,
)
from pcs.exceptions import (
    PcsError,
    RunNotFoundError,
    SpecError,
    SpecIntegrityError,
    StoreError,
    UsageError,
)
from pcs.registry import InMemoryRegistry, Registry
from pcs.run import Run, handle
from pcs.run_command import RunCommand

__all__ = [
    "IMPORTED_FROM_TAG",
    "IMPORTED_PARENT_TAG",
    "IMPORTED_STATUS_TAG",
    "export_runs",
    "import_runs",
]

_log = logging.getLogger("pcs")


# =========================================================================== export


def component_run_to_registry(
    run: ComponentRun,
    registry: Registry | None = None,
    force: bool = False,
    include_artifacts: bool = False,
    recurse: bool = True,
) -> Registry:
    """:meth:`pcs.ComponentRun.to_registry`: the run spec; with ``recurse``, what replay needs."""
    backend = get_backend(run.tracking_uri)
    backend.flush()
    registry = Run.to_registry(run, registry, force=force, include_artifacts=include_artifacts)
    if not recurse:
        return registry
    command = run.run_command
    command.to_registry(registry, recurse=True, force=force)
    for label, ref in artifact_refs(command.argument_set):
        if registry.has_artifact(ref.digest):
            continue
        path = f"{ARGUMENT_ARTIFACT_DIR}/{ref.digest}.json"
        blob = backend.read_artifact(run.identifier, path)
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
            queue.append((get_backend(item.tracking_uri), item.identifier))
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
        if record.data.tags.get(COMPONENT_RUN_TAG) == "True":
            component_run_to_registry(
                ComponentRun.handle(run_id, backend.tracking_uri),
                registry,
                force=force,
                include_artifacts=include_artifacts,
            )
        else:
            run = handle(run_id, backend.tracking_uri)
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
    if tags.get(COMPONENT_RUN_TAG) != "True":
        raise SpecError(
            f"Run spec {run_id} in {registry!r} is not a ComponentRun (no "
            f"{COMPONENT_RUN_TAG} tag); use pcs.Run.from_registry for plain runs.",
            run_id,
        )
    backend = get_backend()
    backend.flush()
    target = _existing_run(backend, run_id, tags, clean=False)
    if target is None:
        raise RunNotFoundError(run_id, backend.tracking_uri)
    command_id = tags.get(RUN_COMMAND_ID_TAG)
    command = None
    if isinstance(command_id, str) and registry.has_spec("run_commands", command_id):
        command = RunCommand.from_registry(registry, command_id)
    return cls.handle(target, backend.tracking_uri, run_command=command)


# =========================================================================== import


def import_runs(
    registry: Registry | str | os.PathLike[str],
    *,
    experiment_id: str | None = None,
    progress: Callable[[str, str], None] | None = None,
) -> dict[str, str]:
    """Recreate the runs of a registry (or of a YAML file) in the current tracking store.

    Returns ``{original run id: run id in this store}`` for every run of the
    registry. Everything is verified first (spec hashes, identifiers,
    artifact digests, artifact paths, parent links), so a tampered registry
    imports nothing. Runs go to ``experiment_id`` (default: the default
    experiment ``"0"``). Importing twice adds nothing. ``progress(original id,
    new id)`` is called after each run (``pcs import`` draws its progress bar so).
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
    plan = verify(registry)
    backend.flush()
    mapping: dict[str, str] = {}
    created = 0
    for planned in plan:
        tags = planned.fields["tags"]
        existing = _existing_run(backend, planned.run_id, tags, clean=True)
        if existing is not None:
            mapping[planned.run_id] = existing
            if progress is not None:
                progress(planned.run_id, existing)
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
        if progress is not None:
            progress(planned.run_id, mapping[planned.run_id])
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
        if isinstance(origin, str) and RUN_ID.fullmatch(origin) and backend.run_exists(origin):
            done = origin  # the run came from this store in the first place
    if clean:
        for record in backend.find_runs_by_tag(IMPORTING_FROM_TAG, run_id):
            if IMPORTED_FROM_TAG not in record.data.tags:
                _log.info("pcs: removing run %s, left over by an interrupted import of %s",
                          record.info.run_id, run_id)
                backend.delete_run(record.info.run_id)
    return done


def _create(
    backend: Backend,
    registry: Registry,
    planned: Planned,
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
    if status not in TERMINAL_STATUSES:
        tags[IMPORTED_STATUS_TAG] = status
        status = "KILLED"
    first = {IMPORTING_FROM_TAG: planned.run_id}
    if USER_TAG in tags:
        first[USER_TAG] = tags[USER_TAG]
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
        backend.log_artifact_bytes(new_id, REGISTRY_ARTIFACT, planned.registry_yaml)
    backend.set_terminated(new_id, status, fields.get("end_time"))
    backend.log_batch_at(new_id, tags={IMPORTED_FROM_TAG: planned.run_id})
    backend.delete_tag(new_id, IMPORTING_FROM_TAG)
    return new_id


class _Operations:
    """This module's side of ComponentRun.from_registry and to_registry (see :mod:`pcs._upper`)."""

    component_run_from_registry = staticmethod(component_run_from_registry)
    component_run_to_registry = staticmethod(component_run_to_registry)


component_run.PORTABILITY.provide(_Operations())
