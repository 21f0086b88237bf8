"""Nesting across threads: pcs.bind and pcs.instrument_threads()."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import parent_of, stored_runs
from mlflow.tracking import MlflowClient

import pcs


@pcs.tracked
def work(i: int) -> int:
    return leaf(i) + 1


@pcs.tracked
def leaf(i: int) -> int:
    return i


@pytest.fixture
def instrumented() -> Iterator[None]:
    pcs.instrument_threads()
    try:
        yield
    finally:
        pcs.uninstrument_threads()


def _check_tree(client: MlflowClient, root_id: str, n: int) -> None:
    runs = stored_runs(client)
    works = [r for r in runs.values() if r.data.tags.get("pcs.entry_point") == "work"]
    leaves = [r for r in runs.values() if r.data.tags.get("pcs.entry_point") == "leaf"]
    assert len(works) == n
    assert len(leaves) == n
    assert all(w.data.tags["mlflow.parentRunId"] == root_id for w in works)
    by_arg = {w.data.params["arg.i"]: w.info.run_id for w in works}
    for leaf_run in leaves:
        assert leaf_run.data.tags["mlflow.parentRunId"] == by_arg[leaf_run.data.params["arg.i"]]
    assert all(r.info.status == "FINISHED" for r in runs.values())


def test_without_propagation_threads_start_fresh(client: MlflowClient) -> None:
    seen: list[object] = []
    with pcs.run("root"):
        t = threading.Thread(target=lambda: seen.append(pcs.active_run()))
        t.start()
        t.join()
    assert seen == [None]


def test_bind_with_32_threads(client: MlflowClient) -> None:
    with pcs.run("root") as root:
        threads = [threading.Thread(target=pcs.bind(work), args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    _check_tree(client, root.identifier, 32)


def test_bind_with_executor_map(client: MlflowClient) -> None:
    with pcs.run("root") as root, ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(pcs.bind(work), range(16))) == [i + 1 for i in range(16)]
    _check_tree(client, root.identifier, 16)


def test_instrument_threads_with_32_threads(client: MlflowClient, instrumented: None) -> None:
    with pcs.run("root") as root:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    _check_tree(client, root.identifier, 32)


def test_instrument_threads_pool_reused_across_runs(
    client: MlflowClient, instrumented: None
) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        with pcs.run("first") as first:
            list(pool.map(work, range(4)))
        with pcs.run("second") as second:
            futures = [pool.submit(work, i) for i in range(4, 8)]
            assert [f.result() for f in futures] == [5, 6, 7, 8]
    runs = stored_runs(client)
    for r in runs.values():
        if r.data.tags.get("pcs.entry_point") == "work":
            expected = first if int(r.data.params["arg.i"]) < 4 else second
            assert r.data.tags["mlflow.parentRunId"] == expected.identifier


def test_uninstrument_restores(instrumented: None) -> None:
    pcs.uninstrument_threads()
    seen: list[object] = []
    with pcs.run("root"):
        t = threading.Thread(target=lambda: seen.append(pcs.active_run()))
        t.start()
        t.join()
    assert seen == [None]
    pcs.instrument_threads()
    pcs.instrument_threads()  # idempotent


def test_thread_parent_is_its_starter_not_a_sibling(client: MlflowClient) -> None:
    barrier = threading.Barrier(4)
    ids: dict[int, str] = {}

    def body(i: int) -> None:
        with pcs.run(f"t{i}") as r:
            barrier.wait()
            ids[i] = r.identifier

    with pcs.run("root") as root:
        threads = [threading.Thread(target=pcs.bind(body), args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert all(parent_of(client, rid) == root.identifier for rid in ids.values())
