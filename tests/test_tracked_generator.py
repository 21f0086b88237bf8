"""@pcs.tracked on generators: the run lasts until exhausted, closed or raising."""

from __future__ import annotations

import inspect

import pytest
from conftest import parent_of
from mlflow.tracking import MlflowClient

import pcs
from pcs.component_run import ComponentRun


@pcs.tracked
def count(n: int):  # type: ignore[no-untyped-def]
    for i in range(n):
        yield step(i)
    return "done"


@pcs.tracked
def step(i: int) -> int:
    return i


def test_still_a_generator_function() -> None:
    assert inspect.isgeneratorfunction(count)


def test_exhausted_generator_finishes_and_nests(client: MlflowClient) -> None:
    gen = count(3)
    assert pcs.active_run() is None
    values = []
    for value in gen:
        values.append(value)
        assert pcs.active_run() is None  # the generator's run is active only inside it
    assert values == [0, 1, 2]
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    stored = client.get_run(run.identifier)
    assert stored.info.status == "FINISHED"
    assert stored.data.tags["pcs.entry_point"] == "count"
    steps = client.search_runs(["0"], "tags.`pcs.entry_point` = 'step'")
    assert len(steps) == 3
    assert all(parent_of(client, s.info.run_id) == run.identifier for s in steps)
    assert run.return_value == "done"


def test_closed_early_is_finished(client: MlflowClient) -> None:
    gen = count(10)
    assert next(gen) == 0
    gen.close()
    runs = client.search_runs(["0"], "tags.`pcs.entry_point` = 'count'")
    assert [r.info.status for r in runs] == ["FINISHED"]


def test_never_started_generator_makes_no_run(client: MlflowClient) -> None:
    count(2)
    assert client.search_runs(["0"]) == []


def test_raising_generator_fails(client: MlflowClient) -> None:
    @pcs.tracked
    def broken():  # type: ignore[no-untyped-def]
        yield 1
        raise RuntimeError("mid-stream")

    with pytest.raises(RuntimeError, match="mid-stream"):
        list(broken())
    run = pcs.last_run()
    assert run is not None
    assert client.get_run(run.identifier).info.status == "FAILED"


def test_send_and_throw_reach_the_generator() -> None:
    @pcs.tracked
    def echo():  # type: ignore[no-untyped-def]
        received = None
        while True:
            try:
                received = yield received
            except ValueError:
                received = "caught"

    gen = echo()
    assert next(gen) is None
    assert gen.send("hi") == "hi"
    assert gen.throw(ValueError()) == "caught"
    gen.close()
