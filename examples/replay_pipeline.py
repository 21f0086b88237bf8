"""The tracked code of ``examples/replay.py``.

Replay imports the recorded callable again by ``module:qualname``, so the code
lives in an importable module (here: next to the example script).
"""

from __future__ import annotations

import pcs


@pcs.tracked
class Scaler:
    """A tracked class: its ``__init__`` arguments make ``transform`` calls replayable."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    @pcs.tracked
    def transform(self, values: list[int]) -> list[float]:
        return [self.factor * v for v in values]


@pcs.tracked
def summarize(values: list[float]) -> dict[str, float]:
    """Gets a large argument: pcs stores it as an artifact, by sha256 digest."""
    return {"n": float(len(values)), "mean": sum(values) / len(values)}


@pcs.tracked
def evaluate(factor: float, size: int) -> dict[str, float]:
    """The entry point: its run nests the runs of the calls it makes."""
    return summarize(Scaler(factor).transform(list(range(size))))
