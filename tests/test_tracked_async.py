"""@pcs.tracked on async functions: nesting across tasks, gather and cancellation."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from conftest import parent_of
from mlflow.tracking import MlflowClient

import pcs
from pcs.component_run import ComponentRun


@pcs.tracked
async def fetch(i: int, delay: float) -> int:
    await asyncio.sleep(delay)
    return await inner(i)


@pcs.tracked
async def inner(i: int) -> int:
    await asyncio.sleep(0)
    return i * 2


def test_is_still_a_coroutine_function() -> None:
    assert inspect.iscoroutinefunction(fetch)
    assert asyncio.iscoroutinefunction(fetch)


def test_gather_with_reversed_sleeps(client: MlflowClient) -> None:
    async def main() -> tuple[str, list[int]]:
        async with pcs.run("batch") as batch:
            results = await asyncio.gather(*(fetch(i, 0.02 * (4 - i)) for i in range(4)))
        return batch.identifier, results

    batch_id, results = asyncio.run(main())
    assert results == [0, 2, 4, 6]
    fetches = client.search_runs(["0"], "tags.`pcs.entry_point` = 'fetch'")
    inners = client.search_runs(["0"], "tags.`pcs.entry_point` = 'inner'")
    assert len(fetches) == 4
    assert len(inners) == 4
    assert all(parent_of(client, f.info.run_id) == batch_id for f in fetches)
    by_arg = {f.data.params["arg.i"]: f.info.run_id for f in fetches}
    for run in inners:
        assert parent_of(client, run.info.run_id) == by_arg[run.data.params["arg.i"]]


def test_return_value_and_last_run() -> None:
    assert asyncio.run(fetch(5, 0)) == 10


def test_last_run_inside_coroutine() -> None:
    async def main() -> None:
        await fetch(3, 0)
        run = pcs.last_run()
        assert isinstance(run, ComponentRun)
        assert run.return_value == 6

    asyncio.run(main())


def test_cancelled_is_killed_and_error_is_failed(client: MlflowClient) -> None:
    @pcs.tracked
    async def hang() -> None:
        await asyncio.sleep(10)

    @pcs.tracked
    async def bad() -> None:
        raise LookupError("x")

    async def main() -> None:
        task = asyncio.create_task(hang())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(LookupError):
            await bad()

    asyncio.run(main())
    statuses = {
        r.data.tags["pcs.entry_point"]: r.info.status for r in client.search_runs(["0"])
    }
    assert statuses == {"hang": "KILLED", "bad": "FAILED"}
