"""Finding runs: ``pcs.runs(...)``, a run's parent and children, run ids by prefix.

Every query is one or a few paged ``MlflowClient.search_runs`` calls through
the store's facade, with the filters in MLflow's filter string — never a scan
of the store in Python. Runs come back as the right class: a tracked call's
run as a :class:`~pcs.ComponentRun` (so ``.rerun()`` works), any other pcs run
as a :class:`~pcs.Run`.

Example::

    import pcs

    failed = pcs.runs(experiment="my-study", status="FAILED", since="2h")
    for run in failed:
        print(run.identifier, run.parent)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar, cast

from pcs import _render, conventions
from pcs._store import Backend, get_backend
from pcs.component_run import ComponentRun
from pcs.exceptions import RunNotFoundError, UsageError
from pcs.experiments import experiment_id_of
from pcs.run import NAVIGATION, Run, known_parent_id, run_from_handle

if TYPE_CHECKING:
    from mlflow.entities import Run as MlflowRun

__all__ = ["AmbiguousRunIdError", "RunFilter", "RunPrefixNotFoundError", "child_records",
           "find_run", "forest", "parse_time", "runs"]

R = TypeVar("R", bound=Run)

STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
NEWEST_FIRST = ["attributes.start_time DESC"]
OLDEST_FIRST = ["attributes.start_time ASC", "attributes.end_time ASC"]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_RUN_ID = re.compile(r"^[0-9A-Za-z-]+$")


class AmbiguousRunIdError(UsageError):
    """A run id prefix (or suffix) that more than one run id starts (or ends) with."""

    def __init__(self, prefix: str, candidates: list[str], tracking_uri: str) -> None:
        self.prefix = prefix
        self.candidates = candidates
        self.tracking_uri = tracking_uri
        shown = ", ".join(candidates[:5]) + (", ..." if len(candidates) > 5 else "")
        super().__init__(
            f"The run id part {prefix!r} is ambiguous in {tracking_uri!r}: it starts or ends "
            f"{shown}. Give more characters of the id."
        )


class RunPrefixNotFoundError(RunNotFoundError):
    """No run id starts or ends with the given characters."""

    def __init__(self, prefix: str, tracking_uri: str) -> None:
        super().__init__(prefix, tracking_uri)
        Exception.__init__(
            self, f"No run id starts or ends with {prefix!r} in the tracking store "
            f"{tracking_uri!r}. "
            "Check the id (`pcs runs` lists them), or point MLFLOW_TRACKING_URI at the store "
            "that holds it."
        )


# -- filters ----------------------------------------------------------------------------
def parse_time(value: str | datetime | timedelta, now: datetime | None = None) -> int:
    """A point in time as milliseconds since the epoch.

    A ``datetime`` (naive: local time), a ``timedelta`` (that long ago), or a
    string: a duration ago (``30s``, ``15m``, ``2h``, ``3d``, ``1w``) or an ISO
    8601 date or time (``2024-05-01``, ``2024-05-01T12:30``).
    """
    now = now or datetime.now(UTC)
    if isinstance(value, timedelta):
        moment = now - value
    elif isinstance(value, datetime):
        moment = value if value.tzinfo else value.astimezone()
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            moment = now - timedelta(seconds=float(match[1]) * _UNITS[match[2]])
        else:
            try:
                moment = datetime.fromisoformat(value.strip())
            except ValueError:
                raise UsageError(
                    f"{value!r} is not a time: use a duration ago (30s, 15m, 2h, 3d, 1w) or an "
                    "ISO 8601 date or time (2024-05-01, 2024-05-01T12:30)."
                ) from None
            moment = moment if moment.tzinfo else moment.astimezone()
    else:
        raise UsageError(f"{value!r} is not a time: pass a str, datetime or timedelta.")
    return int(moment.timestamp() * 1000)


def _quoted(value: str, what: str) -> str:
    if "'" in value or "`" in value:
        raise UsageError(f"{what} {value!r}: quotes cannot be searched for in MLflow filters.")
    return f"'{value}'"


@dataclass(frozen=True)
class RunFilter:
    """What to search for, as an MLflow filter string (pcs runs only)."""

    status: str | None = None
    name: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    #: True: only runs with no parent; False: only nested runs; None: both
    top_level: bool | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status.upper() not in STATUSES:
            raise UsageError(f"status={self.status!r}: use one of {', '.join(STATUSES)}.")

    def filter_string(self) -> str:
        clauses = [f"tags.`{conventions.RUN_TAG}` = 'True'"]
        if self.status is not None:
            clauses.append(f"attributes.status = '{self.status.upper()}'")
        if self.name is not None:
            pattern = _quoted(self.name.replace("*", "%"), "name")
            operator = "LIKE" if "%" in pattern else "="
            clauses.append(f"attributes.run_name {operator} {pattern}")
        if self.since_ms is not None:
            clauses.append(f"attributes.start_time >= {self.since_ms}")
        if self.until_ms is not None:
            clauses.append(f"attributes.start_time <= {self.until_ms}")
        for key, value in self.tags.items():
            if "`" in key:
                raise UsageError(f"tag {key!r}: backquotes cannot be searched for.")
            clauses.append(f"tags.`{key}` = {_quoted(str(value), f'tag {key!r}')}")
        if self.top_level is not None:
            test = "IS NULL" if self.top_level else "IS NOT NULL"
            clauses.append(f"tags.`{conventions.PARENT_RUN_ID_TAG}` {test}")
        return " AND ".join(clauses)


def experiment_ids(backend: Backend, experiment: str | Iterable[str] | None) -> list[str] | None:
    """The experiments searched: those named (by name, or id), else ``PCS_EXPERIMENT``'s,
    else None (every experiment). An unknown name raises
    :class:`~pcs.experiments.ExperimentNotFoundError`."""
    from pcs import settings

    if experiment is None:
        default = settings.EXPERIMENT.get()
        if default is None:
            return None
        found = backend.experiment_id_by_name(default.strip())
        return [found] if found is not None else []
    names = [experiment] if isinstance(experiment, str) else list(experiment)
    return [experiment_id_of(backend, str(name)) for name in names]


# -- runs as objects ---------------------------------------------------------------------
def run_class(record: MlflowRun) -> type[Run]:
    """ComponentRun for a tracked call's run, Run for any other."""
    tags = record.data.tags
    return ComponentRun if tags.get(conventions.COMPONENT_RUN_TAG) == "True" else Run


def wrap(backend: Backend, record: MlflowRun, run_id: str | None = None) -> Run:
    """A handle of the right class on the run MLflow returned (``run_id``: the id to keep)."""
    return run_from_handle(run_class(record), run_id or record.info.run_id,
                           backend.tracking_uri, record.info.experiment_id)


def runs(
    experiment: str | Iterable[str] | None = None,
    *,
    status: str | None = None,
    name: str | None = None,
    since: str | datetime | timedelta | None = None,
    until: str | datetime | timedelta | None = None,
    tags: Mapping[str, str] | None = None,
    top_level: bool | None = None,
    limit: int | None = None,
    tracking_uri: str | None = None,
) -> list[Run]:
    """pcs runs of the tracking store, newest first, as ``Run`` / ``ComponentRun`` objects.

    ``experiment``: a name (or id), or several; default ``PCS_EXPERIMENT``'s, else
    every experiment. ``status``: RUNNING, FINISHED, FAILED, KILLED.
    ``name``: the run name, ``*`` matching anything (``"train*"``). ``since`` /
    ``until``: start time bounds (see :func:`parse_time`: ``"2h"``, an ISO date, a
    datetime). ``tags``: tags that must have exactly these values.
    ``top_level``: True only runs nested under none, False only nested ones.
    ``limit``: at most this many (newest first).
    """
    if limit is not None and limit < 0:
        raise UsageError(f"limit={limit!r} must be 0 or more (None: no limit).")
    backend = get_backend(tracking_uri)
    wanted = RunFilter(
        status, name,
        parse_time(since) if since is not None else None,
        parse_time(until) if until is not None else None,
        dict(tags or {}), top_level,
    )
    ids = experiment_ids(backend, experiment)
    if ids == [] or limit == 0:
        return []
    found = backend.iter_search(ids, wanted.filter_string(), NEWEST_FIRST, limit)
    return [wrap(backend, record) for record in found]


def find_run(prefix: str, tracking_uri: str | None = None) -> MlflowRun:
    """The run whose id is ``prefix``, starts with it or ends with it (the short ids that
    ``pcs runs`` shows are the ends). Two paged queries, at most 6 rows each.

    :class:`~pcs.RunNotFoundError` when none does, :class:`AmbiguousRunIdError`
    when several do.
    """
    backend = get_backend(tracking_uri)
    prefix = prefix.strip()
    if not prefix or not _RUN_ID.match(prefix):
        raise RunPrefixNotFoundError(prefix, backend.tracking_uri)
    if len(prefix) >= 32:
        return backend.get_run(prefix)
    found: dict[str, MlflowRun] = {}
    for pattern in (f"{prefix}%", f"%{prefix}"):
        page, _ = backend.search_page(
            backend.experiment_ids(), f"attributes.run_id LIKE '{pattern}'", NEWEST_FIRST, 6
        )
        found.update((r.info.run_id, r) for r in page)
    if not found:
        raise RunPrefixNotFoundError(prefix, backend.tracking_uri)
    if len(found) > 1:
        raise AmbiguousRunIdError(prefix, list(found), backend.tracking_uri)
    return next(iter(found.values()))


def child_records(backend: Backend, run_id: str) -> list[MlflowRun]:
    """MLflow's records of the runs nested directly under ``run_id``, oldest first."""
    wanted = f"tags.`{conventions.PARENT_RUN_ID_TAG}` = {_quoted(run_id, 'run id')}"
    return list(backend.iter_search(None, wanted, OLDEST_FIRST))


# -- trees ---------------------------------------------------------------------------------
def forest(
    backend: Backend,
    ids: list[str] | None,
    wanted: RunFilter,
    limit: int | None,
) -> tuple[list[_render.Node], bool]:
    """The newest ``limit`` top-level runs matching ``wanted`` with every run nested under
    them, and whether more top-level runs matched.

    Two paged queries: the top-level runs, then the nested runs that started
    since the oldest of them (a nested run never starts before its root).
    """
    top = RunFilter(wanted.status, wanted.name, wanted.since_ms, wanted.until_ms,
                    wanted.tags, top_level=True)
    fetch = None if limit is None else limit + 1
    roots = list(backend.iter_search(ids, top.filter_string(), NEWEST_FIRST, fetch))
    more = limit is not None and len(roots) > limit
    roots = roots[:limit] if limit is not None else roots
    if not roots:
        return [], more
    oldest = min(r.info.start_time for r in roots)
    nested = RunFilter(since_ms=oldest, top_level=False)
    found = backend.iter_search(ids, nested.filter_string(), OLDEST_FIRST)
    return attach([_render.Node(r) for r in roots], found, orphans=limit is None), more


def attach(
    roots: list[_render.Node], nested: Iterable[MlflowRun], *, orphans: bool = False
) -> list[_render.Node]:
    """Hang ``nested`` runs (oldest first) under their parents among ``roots``' trees.

    ``orphans``: nested runs whose parent is not there (not a pcs run, deleted, in
    another experiment) become roots themselves, so every run is shown.
    """
    by_parent: dict[str, list[_render.Node]] = {}
    seen: set[str] = set()
    for record in nested:
        seen.add(record.info.run_id)
        parent = record.data.tags.get(conventions.PARENT_RUN_ID_TAG)
        if parent:
            by_parent.setdefault(parent, []).append(_render.Node(record))
    _hang(roots, by_parent)
    if orphans and by_parent:
        extra = [node for parent, nodes in by_parent.items() if parent not in seen
                 for node in nodes]
        _hang(extra, by_parent)
        roots = sorted(roots + extra, key=lambda n: -(n.record.info.start_time or 0))
    return roots


def _hang(starts: list[_render.Node], by_parent: dict[str, list[_render.Node]]) -> None:
    pending = list(starts)
    while pending:
        node = pending.pop()
        node.children = by_parent.pop(node.record.info.run_id, [])
        pending.extend(node.children)


# -- what Run reaches through pcs.run.NAVIGATION ------------------------------------------
class _Navigation:
    def existing(self, cls: type[R], run_id: str) -> R:
        backend = get_backend()
        record = backend.get_run(run_id)
        chosen = run_class(record) if cls is Run else cls
        return cast(R, run_from_handle(chosen, str(run_id), backend.tracking_uri,
                                       record.info.experiment_id))

    def all_runs(self) -> list[Run]:
        backend = get_backend()
        found = backend.iter_search(None, RunFilter().filter_string(), NEWEST_FIRST)
        return [wrap(backend, record) for record in found]

    def parent(self, run: Run) -> Run | None:
        backend = get_backend(run.tracking_uri)
        parent_id = known_parent_id(run)
        if parent_id is None:
            parent_id = run.data.tags.get(conventions.PARENT_RUN_ID_TAG)
        if not parent_id:
            return None
        return wrap(backend, backend.get_run(parent_id))

    def children(self, run: Run) -> list[Run]:
        backend = get_backend(run.tracking_uri)
        return [wrap(backend, record) for record in child_records(backend, run.identifier)]

    def status_text(self, run: Run, detailed: bool) -> str:
        from pcs._yaml import dump_yaml

        record = get_backend(run.tracking_uri).get_run(run.identifier)
        lines = _render.status_lines(record)
        if detailed:
            lines.append(dump_yaml(run.to_spec()).rstrip())
        return "\n".join(lines)

    def all_status_text(self) -> str:
        backend = get_backend()
        roots, _ = forest(backend, None, RunFilter(), None)
        count = sum(1 for root in roots for _ in root.walk())
        lines = [f"{count} pcs run(s) in {backend.tracking_uri}"]
        return "\n".join(lines + _render.tree_lines(roots, full_ids=True))


NAVIGATION.provide(_Navigation())
