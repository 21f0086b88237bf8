"""Tracked callables for the process-pool tests: importable by spawn/forkserver workers."""

from __future__ import annotations

import os

import pcs


def use_store(tracking_uri: str) -> None:
    """Pool initializer: write to the test's store (a forkserver keeps its first env)."""
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri


@pcs.tracked
def square(x: int) -> int:
    return x * x


@pcs.tracked
def add(x: int, y: int) -> int:
    return x + y


@pcs.tracked
class Scaler:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    @pcs.tracked
    def scale(self, x: int) -> int:
        return x * self.factor

    @pcs.tracked
    @classmethod
    def make(cls, factor: int) -> Scaler:
        return cls(factor)

    @pcs.tracked
    @staticmethod
    def double(x: int) -> int:
        return 2 * x


def spawned_child(parent: pcs.Run) -> str:
    """Start a run under ``parent`` (a handle pickled from the parent process)."""
    with pcs.run("spawned", parent=parent) as r:
        return r.identifier


@pcs.tracked
def make_data(n: int) -> list[float]:
    """A value with an identity of its own: lineage follows it through the pool."""
    return [float(i) for i in range(n)]


@pcs.tracked
def total(data: list[float]) -> float:
    return sum(data)


@pcs.tracked
def weighted(data: list[float], weight: float) -> float:
    return weight * sum(data)


def untracked_identity(value: object) -> object:
    """A plain task: a value passes through the worker and comes back."""
    return value


@pcs.tracked
def total_of_parts(parts: dict[str, list[float]]) -> float:
    return sum(sum(part) for part in parts.values())
