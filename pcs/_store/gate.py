"""The experiment gate both sinks put a batch through before they deliver it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["ExperimentGate", "Rejected"]

#: Records set aside by a sink, by the reason they cannot be delivered.
Rejected = dict[str, list[list[Any]]]


class ExperimentGate:
    """Sets aside the records of runs whose experiment the store lacks (or has deleted).

    Such records can never be delivered as they are, but they are not dropped:
    the sink returns them, and the writer keeps them in a journal for
    ``pcs recover`` once the experiment is restored.
    """

    def __init__(self, problem_of: Callable[[str], str | None]) -> None:
        """``problem_of(experiment_id)``: why runs cannot go into it (None: they can)."""
        self._problem_of = problem_of
        self._good: set[str] = set()
        #: run id -> why its records cannot be delivered
        self._bad_runs: dict[str, str] = {}

    def split(self, records: list[list[Any]]) -> tuple[list[list[Any]], Rejected]:
        """(the records to deliver, the records set aside by reason)."""
        good = self._good
        bad = self._bad_runs
        for record in records:
            if record[0] in ("R", "T"):
                experiment = str(record[2])
                if experiment not in good:
                    problem = self._problem_of(experiment)
                    if problem is None:
                        good.add(experiment)
                    else:
                        bad[str(record[1])] = problem
        if not bad:
            return records, {}
        keep: list[list[Any]] = []
        rejected: Rejected = {}
        for record in records:
            reason = bad.get(record[1]) if record[0] != "K" and len(record) > 1 else None
            if reason is None:
                keep.append(record)
            else:
                rejected.setdefault(reason, []).append(record)
        if len(bad) > 100_000:
            bad.clear()
        return keep, rejected
