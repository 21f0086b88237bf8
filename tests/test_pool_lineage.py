"""Lineage through process pools: a value a tracked call returned keeps naming its producer
after a pickle into a worker, and a worker's result after the pickle back."""

from __future__ import annotations

import json
import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.pool import ThreadPool
from typing import Any

import pool_support
import pytest
from mlflow.tracking import MlflowClient

import pcs
from pcs import _lineage, _pools
from pcs.conventions import INPUTS_FROM_TAG, INPUTS_TAG

METHODS = [m for m in ("fork", "spawn") if m in multiprocessing.get_all_start_methods()]


def _runs(client: MlflowClient, name: str) -> list[Any]:
    assert pcs.flush(60)
    found = client.search_runs(["0"], max_results=1000)
    return [r for r in found if r.info.run_name.split("(", 1)[0] == name]


def _inputs(run: Any) -> dict[str, str]:
    return json.loads(run.data.tags.get(INPUTS_TAG, "{}"))


def _executor(ctx: Any, uri: str) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(1, mp_context=ctx, initializer=pool_support.use_store,
                               initargs=(uri,))


def _pool(ctx: Any, uri: str) -> Any:
    return ctx.Pool(2, initializer=pool_support.use_store, initargs=(uri,))


@pytest.mark.parametrize("start_method", METHODS)
def test_an_argument_keeps_its_producer_in_an_executor_worker(
    client: MlflowClient, tracking_uri: str, start_method: str
) -> None:
    ctx = multiprocessing.get_context(start_method)
    with pcs.run("pipeline"):
        data = pool_support.make_data(4)
        producer = pcs.last_run().identifier
        with _executor(ctx, tracking_uri) as executor:
            assert executor.submit(pool_support.total, data).result() == 6.0
            assert executor.submit(pool_support.weighted, data, weight=2.0).result() == 12.0
    (total,) = _runs(client, "total")
    assert total.data.tags[INPUTS_FROM_TAG] == producer
    assert _inputs(total) == {"data": producer}
    (weighted,) = _runs(client, "weighted")
    assert _inputs(weighted) == {"data": producer}


def test_a_worker_result_keeps_its_producer_in_the_submitting_process(
    client: MlflowClient, tracking_uri: str
) -> None:
    ctx = multiprocessing.get_context(METHODS[-1])
    with pcs.run("pipeline"):
        with _executor(ctx, tracking_uri) as executor:
            data = executor.submit(pool_support.make_data, 3).result()
        assert type(data) is list
        assert data == [0.0, 1.0, 2.0]
        assert pool_support.total(data) == 3.0
    (made,) = _runs(client, "make_data")
    (total,) = _runs(client, "total")
    assert _inputs(total) == {"data": made.info.run_id}


@pytest.mark.parametrize("start_method", METHODS)
def test_pool_apply_map_starmap_and_imap_carry_lineage(
    client: MlflowClient, tracking_uri: str, start_method: str
) -> None:
    ctx = multiprocessing.get_context(start_method)
    with pcs.run("pipeline"):
        first = pool_support.make_data(2)
        first_id = pcs.last_run().identifier
        second = pool_support.make_data(3)
        second_id = pcs.last_run().identifier
        pool = _pool(ctx, tracking_uri)
        try:
            assert pool.apply(pool_support.total, (first,)) == 1.0
            assert pool.map(pool_support.total, [first, second]) == [1.0, 3.0]
            assert pool.starmap(pool_support.weighted, [(second, 2.0)]) == [6.0]
            assert list(pool.imap(pool_support.total, [second])) == [3.0]
            # a produced value through an untracked task comes back remembered
            echoed = pool.apply(pool_support.untracked_identity, (second,))
        finally:
            pool.close()
            pool.join()
        assert echoed == second
        assert echoed is not second
        pool_support.total(echoed)
    totals = _runs(client, "total")
    seen = sorted(_inputs(r)["data"] for r in totals)
    # apply(first), map(first, second), imap(second), and the echoed second in this process
    assert seen == sorted([first_id, first_id, second_id, second_id, second_id])
    (weighted,) = _runs(client, "weighted")
    assert _inputs(weighted) == {"data": second_id}


def test_elements_of_a_container_keep_their_producers(
    client: MlflowClient, tracking_uri: str
) -> None:
    ctx = multiprocessing.get_context(METHODS[0])
    with pcs.run("pipeline"):
        data = pool_support.make_data(2)
        producer = pcs.last_run().identifier
        with _executor(ctx, tracking_uri) as executor:
            assert executor.submit(pool_support.total_of_parts, {"a": data}).result() == 1.0
    (parts,) = _runs(client, "total_of_parts")
    assert _inputs(parts) == {"parts['a']": producer}


def test_a_thread_pool_passes_values_untouched(tracking_uri: str) -> None:
    with pcs.run("pipeline"):
        data = pool_support.make_data(2)
        with ThreadPool(1) as pool:
            assert pool.apply(pool_support.untracked_identity, (data,)) is data
            assert pool.map(pool_support.untracked_identity, [data])[0] is data


def test_carried_unpickles_as_the_bare_value_remembered_as_produced() -> None:
    _lineage.clear()
    value = [1.0, 2.0]
    _lineage.produced(value, "producer-run")
    carried = _pools._carried(value)
    assert isinstance(carried, _pools.Carried)
    copy = pickle.loads(pickle.dumps(carried))
    assert copy == value
    assert type(copy) is list
    assert _lineage.inputs_of({"x": copy}) == {"x": "producer-run"}
    # what no tracked call produced is passed as it is
    plain = [3.0]
    assert _pools._carried(plain) is plain
    _lineage.clear()
