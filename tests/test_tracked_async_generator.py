"""@pcs.tracked on async generators."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from conftest import parent_of
from mlflow.tracking import MlflowClient

import pcs


@pcs.tracked
async def stream(n: int):  # type: ignore[no-untyped-def]
    for i in range(n):
        await asyncio.sleep(0)
        yield await double(i)


@pcs.tracked
async def double(i: int) -> int:
    return 2 * i


def test_still_an_async_generator_function() -> None:
    assert inspect.isasyncgenfunction(stream)


def test_exhausted_nests_children(client: MlflowClient) -> None:
    async def main() -> list[int]:
        return [x async for x in stream(3)]

    assert asyncio.run(main()) == [0, 2, 4]
    (gen_run,) = client.search_runs(["0"], "tags.`pcs.entry_point` = 'stream'")
    assert gen_run.info.status == "FINISHED"
    kids = client.search_runs(["0"], "tags.`pcs.entry_point` = 'double'")
    assert len(kids) == 3
    assert all(parent_of(client, k.info.run_id) == gen_run.info.run_id for k in kids)


def test_closed_early_and_raising(client: MlflowClient) -> None:
    @pcs.tracked
    async def broken():  # type: ignore[no-untyped-def]
        yield 1
        raise OSError("gone")

    async def main() -> None:
        agen = stream(5)
        assert await agen.__anext__() == 0
        await agen.aclose()
        with pytest.raises(OSError, match="gone"):
            async for _ in broken():
                pass

    asyncio.run(main())
    statuses = {
        r.data.tags["pcs.entry_point"]: r.info.status
        for r in client.search_runs(["0"], "tags.`pcs.entry_point` != 'double'")
    }
    assert statuses == {"stream": "FINISHED", "broken": "FAILED"}
