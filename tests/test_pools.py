"""Process pools: tracked callables pickle by reference and workers' runs nest under the
run that was active where the task was submitted — with fork, spawn and forkserver."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pool_support
import pytest
from conftest import stored_runs
from mlflow.tracking import MlflowClient

import pcs
from pcs import _pools

METHODS = [m for m in ("fork", "spawn", "forkserver")
           if m in multiprocessing.get_all_start_methods()]


def _runs_named(client: MlflowClient, name: str, count: int,
                timeout: float = 60.0) -> list[Any]:
    """The stored runs called ``name`` (a tracked call's run name may add its arguments:
    ``square(x=3)``), polled until ``count`` are there (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in stored_runs(client).values()
                 if r.data.tags.get("mlflow.runName", "").split("(", 1)[0] == name]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def _pool_map(ctx: Any, uri: str, fn: Callable[..., Any], items: list[Any]) -> list[Any]:
    pool = ctx.Pool(2, initializer=pool_support.use_store, initargs=(uri,))
    try:
        return list(pool.map(fn, items))
    finally:
        pool.close()
        pool.join()


def _executor_map(ctx: Any, uri: str, fn: Callable[..., Any], items: list[Any]) -> list[Any]:
    with ProcessPoolExecutor(2, mp_context=ctx, initializer=pool_support.use_store,
                             initargs=(uri,)) as executor:
        return list(executor.map(fn, items))


@pytest.mark.parametrize("start_method", METHODS)
@pytest.mark.parametrize("mapper", [_pool_map, _executor_map], ids=["Pool", "Executor"])
def test_map_nests_worker_runs_under_submitting_run(
    client: MlflowClient, tracking_uri: str, start_method: str, mapper: Any
) -> None:
    ctx = multiprocessing.get_context(start_method)
    with pcs.run("parent") as parent:
        assert mapper(ctx, tracking_uri, pool_support.square, [1, 2, 3, 4]) == [1, 4, 9, 16]
    assert pcs.flush(60)
    runs = _runs_named(client, "square", 4)
    assert len(runs) == 4
    assert {r.data.params["arg.x"] for r in runs} == {"1", "2", "3", "4"}
    for r in runs:
        assert r.data.tags["mlflow.parentRunId"] == parent.identifier
        assert r.info.status == "FINISHED"
        assert r.info.experiment_id == parent.experiment_id


@pytest.mark.skipif("fork" not in METHODS, reason="needs fork")
def test_every_pool_submission_method_carries_the_parent(
    client: MlflowClient, tracking_uri: str
) -> None:
    ctx = multiprocessing.get_context("fork")
    with pcs.run("parent") as parent:
        pool = ctx.Pool(2, initializer=pool_support.use_store, initargs=(tracking_uri,))
        try:
            assert pool.apply(pool_support.square, (2,)) == 4
            assert pool.apply_async(pool_support.square, (3,)).get(60) == 9
            assert pool.map_async(pool_support.square, [4]).get(60) == [16]
            assert pool.starmap(pool_support.add, [(1, 2)]) == [3]
            assert pool.starmap_async(pool_support.add, [(2, 2)]).get(60) == [4]
            assert list(pool.imap(pool_support.square, [5, 6], chunksize=2)) == [25, 36]
            assert sorted(pool.imap_unordered(pool_support.square, [7])) == [49]
        finally:
            pool.close()
            pool.join()
        with ProcessPoolExecutor(1, mp_context=ctx, initializer=pool_support.use_store,
                                 initargs=(tracking_uri,)) as executor:
            assert executor.submit(pool_support.square, 8).result(60) == 64
    runs = _runs_named(client, "square", 7) + _runs_named(client, "add", 2)
    assert len(runs) == 9
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.identifier}


@pytest.mark.parametrize("start_method", METHODS)
def test_tracked_methods_run_in_pools(
    client: MlflowClient, tracking_uri: str, start_method: str
) -> None:
    ctx = multiprocessing.get_context(start_method)
    scaler = pool_support.Scaler(3)
    with pcs.run("parent") as parent:
        assert _pool_map(ctx, tracking_uri, scaler.scale, [1, 2]) == [3, 6]
        assert _pool_map(ctx, tracking_uri, pool_support.Scaler.double, [5]) == [10]
        made = _pool_map(ctx, tracking_uri, pool_support.Scaler.make, [4])
    assert made[0].factor == 4
    runs = (_runs_named(client, "Scaler.scale", 2) + _runs_named(client, "Scaler.double", 1)
            + _runs_named(client, "Scaler.make", 1))
    assert len(runs) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.identifier}


def test_without_an_active_run_tasks_are_submitted_unchanged(
    client: MlflowClient, tracking_uri: str
) -> None:
    assert _pools.carry(pool_support.square) is pool_support.square
    ctx = multiprocessing.get_context(METHODS[0])
    assert _pool_map(ctx, tracking_uri, pool_support.square, [3]) == [9]
    runs = _runs_named(client, "square", 1)
    assert len(runs) == 1
    assert "mlflow.parentRunId" not in runs[0].data.tags


def test_tracked_callables_pickle_by_reference() -> None:
    for obj in (pool_support.square, pool_support.Scaler, pool_support.Scaler.double,
                pool_support.Scaler.make, pool_support.Scaler.scale):
        data = pickle.dumps(obj)
        assert b"pool_support" in data
        assert pickle.loads(data) == obj
    bound = pickle.loads(pickle.dumps(pool_support.Scaler(5).scale))
    assert bound(2) == 10
    instance = pickle.loads(pickle.dumps(pool_support.Scaler(6)))
    assert instance.scale(2) == 12  # its __init__ arguments came along


def test_a_tracked_local_function_says_why_it_does_not_pickle() -> None:
    @pcs.tracked
    def local(x: int) -> int:
        return x

    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(local)


def test_in_parent_pickles_with_a_handle_that_needs_no_store_read() -> None:
    with pcs.run("parent") as parent:
        task = _pools.carry(pool_support.square)
    assert isinstance(task, _pools.InParent)
    back = pickle.loads(pickle.dumps(task))
    assert back.fn is pool_support.square
    assert back.parent == parent
    assert back.parent._experiment_id == parent.experiment_id


def test_off_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing.pool

    assert _pools.installed()
    patched = multiprocessing.pool.Pool.apply_async
    _pools.uninstall()
    try:
        assert multiprocessing.pool.Pool.apply_async is not patched
        monkeypatch.setenv(_pools.INSTRUMENT_ENV, "0")
        _pools.install()
        assert not _pools.installed()
        assert multiprocessing.pool.Pool.apply_async is not patched
    finally:
        monkeypatch.delenv(_pools.INSTRUMENT_ENV)
        _pools.install()
    assert _pools.installed()
    assert multiprocessing.pool.Pool.apply_async.__wrapped__ is not None  # type: ignore[attr-defined]


_LATE_IMPORT = """
import multiprocessing, sys
import pcs
import pool_support
from concurrent.futures import ProcessPoolExecutor  # imported before any run
with pcs.run(name="late-parent") as parent:
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"),
                             initializer=pool_support.use_store,
                             initargs=(sys.argv[1],)) as pool:
        print(sorted(pool.map(pool_support.square, [1, 2, 3])))
    print(parent.identifier)
pcs.flush()
"""


def test_a_pool_imported_before_the_first_run_still_carries_it(
    tmp_path: Path, client: MlflowClient, tracking_uri: str,
) -> None:
    """A pool module imported after ``import pcs`` and before any run is patched by the
    import hook, so its tasks nest under the run active at submission."""
    out = subprocess.run(
        [sys.executable, "-c", _LATE_IMPORT, tracking_uri], capture_output=True, text=True,
        cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
                           "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    values, parent_id = out.stdout.split("\n")[:2]
    assert values == "[1, 4, 9]"
    runs = _runs_named(client, "square", 3)
    assert {r.data.tags.get("mlflow.parentRunId") for r in runs} == {parent_id}
