"""pcs.run() blocks nest along the call tree; parents are read back with stock MLflow."""

from __future__ import annotations

import asyncio

import pytest
from conftest import parent_of
from mlflow.tracking import MlflowClient

import pcs


def test_with_blocks_nest(client: MlflowClient) -> None:
    assert pcs.active_run() is None
    with pcs.run("outer") as outer:
        assert pcs.active_run() == outer
        with pcs.run("inner") as inner:
            assert pcs.active_run() == inner
            with pcs.run("innermost") as innermost:
                pass
        with pcs.run("sibling") as sibling:
            pass
        assert pcs.active_run() == outer
    assert pcs.active_run() is None
    assert parent_of(client, outer.identifier) is None
    assert parent_of(client, inner.identifier) == outer.identifier
    assert parent_of(client, innermost.identifier) == inner.identifier
    assert parent_of(client, sibling.identifier) == outer.identifier
    stored = client.get_run(inner.identifier)
    assert stored.data.tags["mlflow.runName"] == "inner"
    assert stored.data.tags["pcs.is_run"] == "True"
    assert stored.info.status == "FINISHED"


def test_run_options(client: MlflowClient) -> None:
    exp = client.create_experiment("nesting-options")
    with pcs.run("opts", experiment_id=exp, tags={"team": "a"}, params={"lr": 0.1}) as run:
        with pcs.run("child") as child:
            pass
    stored = client.get_run(run.identifier)
    assert stored.info.experiment_id == exp
    assert stored.data.tags["team"] == "a"
    assert stored.data.params == {"lr": "0.1"}
    assert client.get_run(child.identifier).info.experiment_id == exp


def test_explicit_parent_overrides_stack(client: MlflowClient) -> None:
    with pcs.run("elsewhere") as elsewhere:
        pass
    with pcs.run("outer"), pcs.run("adopted", parent=elsewhere.identifier) as adopted:
        with pcs.run("grandchild") as grandchild:
            pass
    assert parent_of(client, adopted.identifier) == elsewhere.identifier
    assert parent_of(client, grandchild.identifier) == adopted.identifier
    with pcs.run("by-object", parent=elsewhere) as by_object:
        pass
    assert parent_of(client, by_object.identifier) == elsewhere.identifier


def test_bad_parent_is_usage_error() -> None:
    with pytest.raises(pcs.UsageError, match="parent"), pcs.run("x", parent=42):  # type: ignore[arg-type]
        pass


def test_failed_block_status_and_same_exception(client: MlflowClient) -> None:
    err = KeyError("k")
    with pytest.raises(KeyError) as raised, pcs.run("outer") as outer:
        with pcs.run("inner") as inner:
            raise err
    assert raised.value is err
    assert client.get_run(inner.identifier).info.status == "FAILED"
    assert client.get_run(outer.identifier).info.status == "FAILED"
    assert pcs.active_run() is None


def test_last_run_is_most_recently_ended() -> None:
    assert pcs.last_run() is None
    with pcs.run("a") as a:
        with pcs.run("b") as b:
            pass
        assert pcs.last_run() == b
    assert pcs.last_run() == a


def test_async_with_and_gather_siblings_never_parent_each_other(client: MlflowClient) -> None:
    async def child(name: str, delay: float) -> str:
        async with pcs.run(name) as r:
            await asyncio.sleep(delay)
            return r.identifier

    async def main() -> tuple[str, list[str]]:
        async with pcs.run("parent") as parent:
            ids = await asyncio.gather(child("c1", 0.05), child("c2", 0.01), child("c3", 0.0))
            assert pcs.active_run() == parent
        return parent.identifier, list(ids)

    parent_id, child_ids = asyncio.run(main())
    for cid in child_ids:
        assert parent_of(client, cid) == parent_id


def test_task_group_children(client: MlflowClient) -> None:
    async def child(name: str, delay: float) -> str:
        async with pcs.run(name) as r:
            await asyncio.sleep(delay)
            async with pcs.run(name + "-inner") as inner:
                await asyncio.sleep(delay)
            assert parent_of(client, inner.identifier) == r.identifier
            return r.identifier

    async def main() -> tuple[str, list[str]]:
        async with pcs.run("parent") as parent, asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(child(f"t{i}", 0.02 * (3 - i))) for i in range(3)]
        return parent.identifier, [t.result() for t in tasks]

    parent_id, ids = asyncio.run(main())
    assert all(parent_of(client, i) == parent_id for i in ids)


def test_cancelled_task_is_killed(client: MlflowClient) -> None:
    started: list[pcs.Run] = []

    async def slow() -> None:
        async with pcs.run("slow") as r:
            started.append(r)
            await asyncio.sleep(10)

    async def main() -> None:
        task = asyncio.create_task(slow())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert client.get_run(started[0].identifier).info.status == "KILLED"
