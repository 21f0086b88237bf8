"""The tracked steps of ``examples/workflow.py`` (a module of its own, so that
``pcs rerun`` can import them again by ``module:qualname``)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import pcs


@dataclass(frozen=True)
class LinearModel:
    """What ``train`` returns and ``evaluate`` receives: a small object, recorded by content."""

    slope: float
    intercept: float

    def predict(self, x: float) -> float:
        return self.slope * x + self.intercept


@pcs.tracked
def load_data(n: int, seed: int) -> list[list[float]]:
    """Noisy points around y = 2x + 1, the same for the same seed."""
    rnd = random.Random(seed)
    return [[x, 2.0 * x + 1.0 + rnd.gauss(0.0, 0.1)] for x in (i / n for i in range(n))]


@pcs.tracked
def train(data: list[list[float]], lr: float, epochs: int = 100) -> LinearModel:
    """Batch gradient descent on the mean squared error."""
    slope = intercept = 0.0
    for _ in range(epochs):
        grad_slope = grad_intercept = 0.0
        for x, y in data:
            error = slope * x + intercept - y
            grad_slope += error * x
            grad_intercept += error
        slope -= lr * 2.0 * grad_slope / len(data)
        intercept -= lr * 2.0 * grad_intercept / len(data)
    return LinearModel(round(slope, 6), round(intercept, 6))


@pcs.tracked
class Evaluator:
    """A tracked class: its __init__ arguments are params (init.*) of evaluate's runs."""

    def __init__(self, metric: str = "mse", threshold: float = 0.05) -> None:
        self.metric = metric
        self.threshold = threshold

    @pcs.tracked
    def evaluate(self, model: LinearModel, data: list[list[float]]) -> dict[str, object]:
        mse = sum((model.predict(x) - y) ** 2 for x, y in data) / len(data)
        return {self.metric: round(mse, 6), "passed": mse <= self.threshold}


@pcs.tracked
async def publish(lr: float, score: float) -> str:
    """The async stage: each report is written by its own task."""
    await asyncio.sleep(0.01)
    return f"lr={lr}: mse {score}"
