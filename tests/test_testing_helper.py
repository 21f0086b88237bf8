"""pcs.testing.capture_runs(): an in-memory record for users' own tests."""

from __future__ import annotations

import pytest

import pcs
from pcs.testing import capture_runs


@pcs.tracked
def fit(lr: float, epochs: int = 3) -> float:
    return lr * epochs


def test_capture_names_nesting_arguments_and_results() -> None:
    with capture_runs() as runs:
        with pcs.run("outer") as outer:
            fit(0.1)
        with pytest.raises(ZeroDivisionError), pcs.run("bad"):
            _ = 1 / 0
    assert [r.name for r in runs] == ["outer", "fit(lr=0.1)", "bad"]
    fit_run = runs.by_name("fit")[0]
    assert fit_run.parent_id == outer.identifier
    assert runs.children_of(outer) == [fit_run]
    assert fit_run.arguments == {"lr": 0.1, "epochs": 3}
    assert fit_run.return_value == pytest.approx(0.3)
    assert fit_run.status == "FINISHED"
    assert fit_run.is_component_run
    bad = runs.by_name("bad")[0]
    assert bad.status == "FAILED"
    assert isinstance(bad.error, ZeroDivisionError)


def test_capture_stops_at_block_end() -> None:
    with capture_runs() as runs:
        fit(1.0)
    fit(2.0)
    assert len(runs) == 1
