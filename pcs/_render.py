"""How runs look on a terminal: the run tree of ``pcs runs`` and ``Run.print_all_status``.

Everything here works on MLflow's run records (``mlflow.entities.Run``) that
a query already fetched, never on the store: rendering 20,000 runs costs no
read. One line per run — status, duration, the name indented by the tree,
the short id::

    FINISHED    1.21s  train                  3f2a9c1d
    FINISHED    0.40s  ├─ fit                 a1b2c3d4
    FAILED      0.01s  └─ evaluate            9e8d7c6b
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pcs import conventions

if TYPE_CHECKING:
    from mlflow.entities import Run as MlflowRun

__all__ = ["Node", "duration_text", "iso_time", "node_json", "short_id", "status_lines",
           "tree_lines"]

#: characters of a run id shown in trees (``pcs show`` accepts any unique prefix)
SHORT_ID = 8
#: the widest name column before names are cut
NAME_WIDTH = 60


@dataclass
class Node:
    """One run of a tree and the runs nested directly under it, in the order they started."""

    record: MlflowRun
    children: list[Node] = field(default_factory=list)

    def walk(self) -> Iterator[Node]:
        """This node and every node under it, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()


def short_id(run_id: str) -> str:
    """The last characters of a run id, as trees show it: pcs's run ids begin with the
    time they were made (runs made together share their first characters), so the end
    is what tells them apart. Every command takes a unique prefix or suffix."""
    return run_id[-SHORT_ID:]


def iso_time(ms: int | None) -> str | None:
    """Milliseconds since the epoch as ISO 8601 in UTC (None stays None)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def duration_ms(record: MlflowRun, now_ms: int | None = None) -> int | None:
    """How long the run took (a RUNNING run: so far); None without a start time."""
    info = record.info
    if info.start_time is None:
        return None
    end = info.end_time
    if end is None:
        end = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    return max(0, int(end) - int(info.start_time))


def duration_text(ms: int | None) -> str:
    """``0.120s``, ``12.3s``, ``4m05s``, ``2h03m``; ``-`` when unknown."""
    if ms is None:
        return "-"
    seconds = ms / 1000
    if seconds < 10:
        return f"{seconds:.3f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def run_name(record: MlflowRun) -> str:
    """The run's name (its ``mlflow.runName`` tag), or ``-``."""
    return record.info.run_name or record.data.tags.get(conventions.RUN_NAME_TAG) or "-"


def _rows(roots: Sequence[Node]) -> Iterator[tuple[MlflowRun, str]]:
    """(record, name indented by the tree) of every run, depth first."""

    def visit(node: Node, prefix: str, last: bool, top: bool) -> Iterator[tuple[MlflowRun, str]]:
        branch = "" if top else ("└─ " if last else "├─ ")
        yield node.record, prefix + branch + run_name(node.record)
        inner = prefix if top else prefix + ("   " if last else "│  ")
        for i, child in enumerate(node.children):
            yield from visit(child, inner, i == len(node.children) - 1, False)

    for root in roots:
        yield from visit(root, "", True, True)


def tree_lines(roots: Sequence[Node], *, full_ids: bool = False) -> list[str]:
    """One line per run of the trees under ``roots``: status, duration, name, id."""
    rows = list(_rows(roots))
    if not rows:
        return []
    now = time.time_ns() // 1_000_000
    width = min(NAME_WIDTH, max(len(label) for _, label in rows))
    lines = []
    for record, label in rows:
        if len(label) > width:
            label = label[: width - 1] + "…"
        run_id = record.info.run_id if full_ids else short_id(record.info.run_id)
        took = duration_text(duration_ms(record, now))
        lines.append(f"{record.info.status:<8}  {took:>7}  {label:<{width}}  {run_id}")
    return lines


def status_lines(record: MlflowRun) -> list[str]:
    """A single run as ``Run.print_status`` shows it: its tree line, start time, and its
    tags outside MLflow's own ``mlflow.`` namespace."""
    lines = tree_lines([Node(record)], full_ids=True)
    lines.append(f"    started {iso_time(record.info.start_time)}, experiment "
                 f"{record.info.experiment_id}")
    for key, value in sorted(record.data.tags.items()):
        if not key.startswith("mlflow."):
            lines.append(f"    {key} = {value}")
    return lines


def node_json(node: Node) -> dict[str, Any]:
    """A tree as JSON-compatible data (for ``--json``)."""
    record = node.record
    info, tags = record.info, record.data.tags
    return {
        "id": info.run_id,
        "name": run_name(record),
        "status": info.status,
        "experiment_id": info.experiment_id,
        "start_time": iso_time(info.start_time),
        "end_time": iso_time(info.end_time),
        "duration_s": (None if (took := duration_ms(record)) is None else took / 1000),
        "component_run": tags.get(conventions.COMPONENT_RUN_TAG) == "True",
        "entry_point": tags.get(conventions.ENTRY_POINT_TAG),
        "children": [node_json(child) for child in node.children],
    }
