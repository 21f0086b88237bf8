"""Helpers for testing code that uses pcs.

:func:`capture_runs` records, in memory, every run that starts and ends
inside a ``with`` block, so a test can assert on names, nesting, statuses,
arguments and return values without querying MLflow::

    from pcs.testing import capture_runs

    def test_fit():
        with capture_runs() as runs:
            fit(0.1)
        assert runs[0].name == "fit(lr=0.1)"  # see "Run names" in the tracking docs
        assert runs[0].arguments == {"lr": 0.1, "epochs": 3}
        assert runs[0].status == "FINISHED"

The runs are still written to the configured tracking store; point
``MLFLOW_TRACKING_URI`` at a temporary SQLite file in tests.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pcs import _events
from pcs._store import get_backend
from pcs.run import Run, known_name, known_parent_id

__all__ = ["CapturedRun", "capture_runs"]


@dataclass
class CapturedRun:
    """One run seen by :func:`capture_runs`."""

    run: Run
    name: str | None
    #: the parent's id as recorded (a local id on client stores; see parent_id)
    parent_key: str | None
    is_component_run: bool
    arguments: dict[str, Any] = field(default_factory=dict)
    status: str | None = None
    error: BaseException | None = None
    return_value: Any = None

    @property
    def run_id(self) -> str:
        return self.run.identifier

    @property
    def parent_id(self) -> str | None:
        """The MLflow run id of the parent run, or None for a root run."""
        if self.parent_key is None:
            return None
        return get_backend(self.run.tracking_uri).mlflow_id(self.parent_key)


class CapturedRuns(list[CapturedRun]):
    """The runs captured by :func:`capture_runs`, in the order they started."""

    def by_name(self, name: str) -> list[CapturedRun]:
        """The captured runs called ``name``; a tracked call's also by its bare qualified name
        (``by_name("fit")`` finds ``fit(lr=0.1)``, see :mod:`pcs._naming`)."""
        called = f"{name}("
        return [r for r in self if r.name == name or (r.name or "").startswith(called)]

    def children_of(self, run: CapturedRun | Run | str) -> list[CapturedRun]:
        """The captured runs whose parent is ``run``."""
        if isinstance(run, CapturedRun):
            run_id = run.run_id
        elif isinstance(run, Run):
            run_id = run.identifier
        else:
            run_id = run
        return [r for r in self if r.parent_id == run_id]


@contextmanager
def capture_runs() -> Iterator[CapturedRuns]:
    """Record every run started and ended while the block runs (all threads)."""
    from pcs.component_run import ComponentRun, known_return_value, known_run_command

    captured = CapturedRuns()
    by_run: dict[int, CapturedRun] = {}
    lock = threading.Lock()

    def observe(event: str, run: Run, status: str | None, exc: BaseException | None) -> None:
        with lock:
            if event == "start":
                record = CapturedRun(
                    run=run,
                    name=known_name(run),
                    parent_key=known_parent_id(run),
                    is_component_run=isinstance(run, ComponentRun),
                )
                command = known_run_command(run) if isinstance(run, ComponentRun) else None
                if command is not None:
                    args = command.argument_set.get_function_args(
                        command.component.name, command.entry_point
                    )
                    record.arguments = dict(args)
                by_run[id(run)] = record
                captured.append(record)
                return
            found = by_run.get(id(run))
            if found is None:
                return
            found.status = status
            found.error = exc
            if isinstance(run, ComponentRun):
                found.return_value = known_return_value(run, found.return_value)

    _events.subscribe(observe)
    try:
        yield captured
    finally:
        _events.unsubscribe(observe)

