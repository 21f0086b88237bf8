"""Output → input lineage between tracked calls: who produced what another call received.

When a value a tracked call returned — the same object, or an element of a
returned list, tuple, dict or dataclass — is passed into another tracked call
(directly or inside a list, tuple or dict argument), the receiving run is
tagged ``pcs.inputs_from`` (the producing runs' ids) and ``pcs.inputs``
(argument path → run id). It works across nesting levels, threads and
asyncio tasks; values are matched by identity, so numbers and strings, which
have none, are never followed (see :mod:`pcs._lineage` for the rules and
bounds). Recording it costs a tracked call nothing on its fast path (plain
scalar arguments): see :doc:`/performance`.

.. code-block:: python

    import pcs

    @pcs.tracked
    def train(lr: float) -> dict:
        return {"weights": [lr, lr]}

    @pcs.tracked
    def evaluate(model: dict) -> float:
        return sum(model["weights"])

    model = train(0.5)
    trained = pcs.last_run()
    evaluate(model)
    evaluation = pcs.last_run()
    assert [(e.path, e.run) for e in evaluation.inputs()] == [("model", trained)]
    assert [e.run for e in trained.consumers()] == [evaluation]

This module reads lineage back from the store: :func:`inputs`,
:func:`consumers` (also ``ComponentRun.inputs()`` / ``.consumers()``), the
graph around a run (:func:`graph`) or inside a run's tree (:func:`tree_graph`),
drawn as text, Graphviz DOT or SVG (:func:`render`; SVG needs Graphviz's
``dot`` program). :func:`may_have_produced` tells, in memory, whether lineage
may follow what a tracked call returned (the cheap test the ``lineage_svg``
plugin makes before reading anything back).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pcs import component_run, conventions, query
from pcs._lineage import NO_IDENTITY, Edge
from pcs._store import get_backend
from pcs.exceptions import PcsError, UsageError

if TYPE_CHECKING:
    from mlflow.entities import Run as MlflowRun
    from mlflow.entities import RunInfo

    from pcs._store import Backend
    from pcs.component_run import ComponentRun
    from pcs.run import Run

__all__ = ["FORMATS", "TREE_EDGE_LIMIT", "Edge", "Graph", "GraphvizMissingError", "consumers",
           "graph", "inputs", "may_have_produced", "render", "tree_graph"]

#: what :func:`render` draws
FORMATS = ("text", "dot", "svg")
#: seconds Graphviz may take to draw one graph
DOT_TIMEOUT = 30.0
#: edges :func:`tree_graph` collects at most (a picture of more would not be read)
TREE_EDGE_LIMIT = 200
#: what :func:`may_have_produced` gets when this process kept no return value
_NOT_KEPT = object()


class GraphvizMissingError(PcsError):
    """SVG was asked for, but Graphviz's ``dot`` program is not installed."""


def _tags(run: Run) -> dict[str, str]:
    return dict(run.data.tags)


def inputs(run: Run) -> list[Edge]:
    """The values ``run`` received that other tracked calls returned: ``(path, producer)``,
    sorted by path (empty for a run that received none)."""
    text = _tags(run).get(conventions.INPUTS_TAG)
    if not text:
        return []
    try:
        mapping = json.loads(text)
    except ValueError:
        return []
    if not isinstance(mapping, dict):
        return []
    backend = get_backend(run.tracking_uri)
    found = []
    for path, run_id in sorted(mapping.items()):
        if isinstance(path, str) and isinstance(run_id, str):
            found.append(Edge(path, query.wrap(backend, backend.get_run(run_id))))
    return found


def consumers(run: Run) -> list[Edge]:
    """The tracked calls that received a value ``run`` returned: ``(path, consumer)``, in
    the order they started (one paged query over the store's experiments)."""
    backend = get_backend(run.tracking_uri)
    run_id = run.identifier
    wanted = f"tags.`{conventions.INPUTS_FROM_TAG}` LIKE '%{run_id}%'"
    found: list[Edge] = []
    for record in backend.iter_search(None, wanted, query.OLDEST_FIRST):
        try:
            mapping = json.loads(record.data.tags.get(conventions.INPUTS_TAG, "{}"))
        except ValueError:
            mapping = {}
        paths = sorted(path for path, producer in mapping.items() if producer == run_id)
        consumer = query.wrap(backend, record)
        found.extend(Edge(path, consumer) for path in paths or ["?"])
    return found


@dataclass
class Graph:
    """The lineage around one run: the runs up to ``depth`` links away, and the links."""

    #: the run the graph was drawn around
    root: str
    #: run id -> its run
    runs: dict[str, Run] = field(default_factory=dict)
    #: (producer id, consumer id, argument path)
    edges: set[tuple[str, str, str]] = field(default_factory=set)
    #: run id -> how it is labelled, when already known (else read from the run)
    labels: dict[str, str] = field(default_factory=dict)


def graph(run: Run, depth: int = 3) -> Graph:
    """Producers and consumers of ``run``, and theirs, up to ``depth`` links away."""
    if depth < 0:
        raise UsageError(f"depth={depth!r} must be 0 or more.")
    found = Graph(run.identifier, {run.identifier: run})
    frontier = [run]
    for _ in range(depth):
        following = []
        for current in frontier:
            for path, producer in inputs(current):
                found.edges.add((producer.identifier, current.identifier, path))
                if producer.identifier not in found.runs:
                    found.runs[producer.identifier] = producer
                    following.append(producer)
            for path, consumer in consumers(current):
                found.edges.add((current.identifier, consumer.identifier, path))
                if consumer.identifier not in found.runs:
                    found.runs[consumer.identifier] = consumer
                    following.append(consumer)
        frontier = following
    return found


def tree_graph(run: Run, limit: int = TREE_EDGE_LIMIT) -> Graph:
    """The lineage inside ``run``'s tree: the edges whose producer and consumer are both
    ``run`` or nested under it at any depth (the graph's root is ``run``; every run in
    it is labelled from what was read, see :attr:`Graph.labels`).

    A paged query for the calls that received a value and started since ``run`` did,
    then one query per level of nesting for the runs on their way up to ``run``
    (each run read once). At most ``limit`` edges, those of the earliest consumers.
    """
    backend = get_backend(run.tracking_uri)
    root = backend.get_run(run.identifier)
    root_id = root.info.run_id
    found = Graph(root_id, {root_id: query.wrap(backend, root)},
                  labels={root_id: _record_label(root)})
    tree = _Tree(backend, root, backend.experiment_ids())
    wanted = (f"tags.`{conventions.INPUTS_FROM_TAG}` != '' AND "
              f"attributes.start_time >= {int(root.info.start_time or 0)}")
    batch: list[MlflowRun] = []
    for record in backend.iter_search(tree.experiment_ids, wanted, query.OLDEST_FIRST):
        batch.append(record)
        if len(batch) == _BATCH:
            tree.add_edges(batch, found, limit)
            batch = []
            if len(found.edges) >= limit:
                return found
    tree.add_edges(batch, found, limit)
    return found


#: runs looked up in one query
_BATCH = 100
_RUN_ID = re.compile(r"^[0-9A-Za-z-]+$")


class _Tree:
    """Which runs are ``root`` or nested under it: records read in batches, answers kept."""

    def __init__(self, backend: Backend, root: MlflowRun, experiment_ids: list[str]) -> None:
        self.backend = backend
        #: where runs are looked for: every experiment of the store (read once)
        self.experiment_ids = experiment_ids
        self.records: dict[str, MlflowRun | None] = {root.info.run_id: root}
        self.inside: dict[str, bool] = {root.info.run_id: True}

    def add_edges(self, consumers: list[MlflowRun], found: Graph, limit: int) -> None:
        """Add to ``found`` the edges into ``consumers`` whose two ends are in the tree."""
        edges: list[tuple[str, str, str]] = []
        for record in consumers:
            self.records[record.info.run_id] = record
            try:
                mapping = json.loads(record.data.tags.get(conventions.INPUTS_TAG, "{}"))
            except ValueError:
                continue
            if isinstance(mapping, dict):
                edges.extend((producer, record.info.run_id, path)
                             for path, producer in sorted(mapping.items())
                             if isinstance(path, str) and isinstance(producer, str))
        self.resolve({run_id for edge in edges for run_id in edge[:2]})
        for producer, consumer, path in edges:
            if len(found.edges) >= limit:
                return
            if self.inside.get(producer) and self.inside.get(consumer):
                found.edges.add((producer, consumer, path))
                for run_id in (producer, consumer):
                    known = self.records.get(run_id)
                    if run_id not in found.runs and known is not None:
                        found.runs[run_id] = query.wrap(self.backend, known)
                        found.labels[run_id] = _record_label(known)

    def resolve(self, run_ids: set[str]) -> None:
        """Answer :attr:`inside` for ``run_ids``: their runs and their ancestors are read
        level by level (one query for the unread runs of each level), then each answer
        follows from its parent's."""
        frontier = {run_id for run_id in run_ids if run_id not in self.inside}
        seen: set[str] = set()
        while frontier:
            self._read(frontier - self.records.keys())
            seen |= frontier
            frontier = {parent for parent in map(self._parent, frontier)
                        if parent and parent not in self.inside and parent not in seen}
        for run_id in run_ids:
            self._answer(run_id)

    def _parent(self, run_id: str) -> str | None:
        record = self.records.get(run_id)
        return None if record is None else record.data.tags.get(conventions.PARENT_RUN_ID_TAG)

    def _answer(self, run_id: str) -> bool:
        chain: list[str] = []
        current: str | None = run_id
        while current is not None and current not in self.inside and current not in chain:
            chain.append(current)
            current = self._parent(current) if current in self.records else None
        answer = current is not None and self.inside.get(current, False)
        for seen in chain:
            self.inside[seen] = answer
        return answer

    def _read(self, run_ids: set[str]) -> None:
        """Read ``run_ids`` (in batches); a run the store does not have is None."""
        wanted = sorted(run_id for run_id in run_ids if _RUN_ID.match(run_id))
        for run_id in run_ids:
            self.records[run_id] = None
        for start in range(0, len(wanted), _BATCH):
            ids = ", ".join(f"'{run_id}'" for run_id in wanted[start:start + _BATCH])
            for record in self.backend.iter_search(
                self.experiment_ids, f"attributes.run_id IN ({ids})", query.OLDEST_FIRST
            ):
                self.records[record.info.run_id] = record


def _record_label(record: MlflowRun) -> str:
    return _info_label(record.info)


def may_have_produced(run: Run) -> bool:
    """Whether lineage may follow what ``run`` returned: ``run`` is a tracked call of this
    process that returned an object with an identity of its own (not None, a bool, a
    number, a string or bytes), or whose return value this process did not keep
    (``log_return_value=False``), so a later call may be its consumer.

    Read in memory, never from the store: the cheap test to make, when a call ends,
    before looking for edges with :func:`tree_graph`.
    """
    if not isinstance(run, component_run.ComponentRun):
        return False
    value = component_run.known_return_value(run, _NOT_KEPT)
    return value is _NOT_KEPT or type(value) not in NO_IDENTITY


def _label(run: Run) -> str:
    return _info_label(run.info)


def _info_label(info: RunInfo) -> str:
    return f"{info.run_name or '?'} [{info.status}] {info.run_id[-8:]}"


def render(found: Graph, fmt: str = "text") -> str:
    """The graph as ``text`` (producers above, consumers below), Graphviz ``dot``, or
    ``svg`` (drawn by Graphviz's ``dot``; :class:`GraphvizMissingError` without it)."""
    if fmt not in FORMATS:
        raise UsageError(f"Unknown lineage format {fmt!r}; use one of {', '.join(FORMATS)}.")
    if fmt == "text":
        return _text(found)
    dot = _dot(found)
    if fmt == "dot":
        return dot
    return _svg(dot)


def _text(found: Graph) -> str:
    root = found.runs[found.root]
    lines = [_label(root)]
    ups = [(path, found.runs[p]) for p, c, path in sorted(found.edges, key=_by_path)
           if c == found.root]
    downs = [(path, found.runs[c]) for p, c, path in sorted(found.edges, key=_by_path)
             if p == found.root]
    lines.extend(f"  <- {path} from {_label(run)}" for path, run in ups)
    lines.extend(f"  -> {path} into {_label(run)}" for path, run in downs)
    others = len(found.runs) - 1 - len({r.identifier for _, r in ups + downs})
    if others > 0:
        lines.append(f"  ({others} more run(s) further away: --format dot shows them)")
    if not ups and not downs:
        lines.append("  no lineage: it received no value a tracked call returned, and no "
                     "tracked call received a value it returned")
    return "\n".join(lines) + "\n"


def _by_path(edge: tuple[str, str, str]) -> tuple[str, str, str]:
    producer, consumer, path = edge
    return path, producer, consumer


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot(found: Graph) -> str:
    lines = ["digraph lineage {", "  rankdir=LR;", "  node [shape=box, fontname=Helvetica];"]
    for run_id, run in sorted(found.runs.items()):
        style = ", style=bold" if run_id == found.root else ""
        label = found.labels.get(run_id) or _label(run)
        lines.append(f"  {_quote(run_id)} [label={_quote(label)}{style}];")
    for producer, consumer, path in sorted(found.edges):
        lines.append(f"  {_quote(producer)} -> {_quote(consumer)} [label={_quote(path)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _svg(dot: str) -> str:
    program = shutil.which("dot")
    if program is None:
        raise GraphvizMissingError(
            "Drawing lineage as SVG needs Graphviz's 'dot' program, which is not on PATH. "
            "Install Graphviz (apt-get install graphviz, brew install graphviz), or use "
            "--format dot and draw it elsewhere."
        )
    done = subprocess.run([program, "-Tsvg"], input=dot.encode(), capture_output=True,
                          timeout=DOT_TIMEOUT, check=False)
    if done.returncode != 0:
        raise PcsError(f"Graphviz's dot failed ({done.stderr.decode(errors='replace')[:500]}).")
    return done.stdout.decode()


class _Operations:
    """This module's side of ``ComponentRun.inputs()`` / ``.consumers()`` (see pcs._upper)."""

    @staticmethod
    def inputs(run: ComponentRun) -> list[Edge]:
        return inputs(run)

    @staticmethod
    def consumers(run: ComponentRun) -> list[Edge]:
        return consumers(run)


component_run.LINEAGE.provide(_Operations())
