"""Nesting across processes: PCS_PARENT_RUN_ID, child_env, pickled handles and fork."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
import uuid
from typing import Any

import pool_support
import pytest
from conftest import parent_of, stored_runs
from mlflow.tracking import MlflowClient

import pcs
from pcs.run import PARENT_WAIT_ENV, run_from_handle

CHILD = textwrap.dedent(
    """
    import pcs

    @pcs.tracked
    def child_work(x):
        return x + 1

    with pcs.run("child-root") as r:
        child_work(1)
    child_work(2)
    print(r.identifier)
    """
)


def test_subprocess_with_child_env(client: MlflowClient) -> None:
    with pcs.run("parent") as parent:
        out = subprocess.run(
            [sys.executable, "-c", CHILD], env=pcs.child_env(), capture_output=True,
            text=True, check=True,
        )
    child_root = out.stdout.strip().splitlines()[-1]
    assert parent_of(client, child_root) == parent.identifier
    runs = stored_runs(client)
    works = {
        r.data.params["arg.x"]: r for r in runs.values()
        if r.data.tags.get("pcs.entry_point") == "child_work"
    }
    assert works["1"].data.tags["mlflow.parentRunId"] == child_root
    assert works["2"].data.tags["mlflow.parentRunId"] == parent.identifier
    assert client.get_run(parent.identifier).info.status == "FINISHED"


def test_env_var_alone_seeds_root(client: MlflowClient, tracking_uri: str) -> None:
    with pcs.run("parent") as parent:
        pass
    env = dict(os.environ, PCS_PARENT_RUN_ID=parent.identifier, MLFLOW_TRACKING_URI=tracking_uri)
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
    )
    child_root = out.stdout.strip().splitlines()[-1]
    assert parent_of(client, child_root) == parent.identifier


def _apply_in_spawned_worker(fn: Any, *args: Any) -> Any:
    # close + join (not terminate, as ``with Pool`` does): the worker exits normally and
    # delivers its records before it goes.
    pool = multiprocessing.get_context("spawn").Pool(
        1, initializer=pool_support.use_store, initargs=(os.environ["MLFLOW_TRACKING_URI"],)
    )
    try:
        return pool.apply(fn, args)
    finally:
        pool.close()
        pool.join()


def test_pickled_handle_as_parent_in_spawned_process(client: MlflowClient) -> None:
    with pcs.run("parent") as parent:
        child_id = _apply_in_spawned_worker(pool_support.spawned_child, parent)
    assert parent_of(client, child_id) == parent.identifier
    assert client.get_run(child_id).info.experiment_id == parent.experiment_id


def test_pickled_handle_of_a_run_not_in_the_store_yet(
    client: MlflowClient, tracking_uri: str
) -> None:
    # The race that made the test above flaky, made certain: the parent run has not
    # reached the store when the child uses its handle. The handle carries the
    # run's id, store and experiment, so the child needs no store read.
    not_yet = run_from_handle(pcs.Run, uuid.uuid4().hex, tracking_uri, "0")
    child_id = _apply_in_spawned_worker(pool_support.spawned_child, not_yet)
    assert parent_of(client, child_id) == not_yet.identifier


def test_handle_without_experiment_waits_bounded_for_its_run(
    monkeypatch: pytest.MonkeyPatch, tracking_uri: str
) -> None:
    monkeypatch.setenv(PARENT_WAIT_ENV, "0.5")
    started = time.monotonic()
    with pytest.raises(pcs.RunNotFoundError) as info, pcs.run("child", parent=uuid.uuid4().hex):
        pass
    assert time.monotonic() - started >= 0.5
    assert PARENT_WAIT_ENV in "".join(info.value.__notes__)


def test_handle_without_experiment_finds_its_run(client: MlflowClient) -> None:
    with pcs.run("parent") as parent:
        pass
    with pcs.run("child", parent=parent.identifier) as child:
        pass
    assert parent_of(client, child.identifier) == parent.identifier


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_never_ends_parent_runs(client: MlflowClient) -> None:
    @pcs.tracked
    def in_child(x: int) -> int:
        return x

    with pcs.run("parent") as parent:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            code = 0
            try:
                os.close(read)
                in_child(7)
                child_run = pcs.last_run()
                parent.end("FAILED")  # must be ignored: not this process's run
                os.write(write, (child_run.identifier if child_run else "").encode())
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(write)
        with os.fdopen(read) as fh:
            child_run_id = fh.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # os._exit skips every exit hook: the child's records wait in its journal
        # until a pcs process recovers it.
        report = pcs.recover()
        assert len(report.journals) == 1
        assert client.get_run(parent.identifier).info.status == "RUNNING"
    assert client.get_run(parent.identifier).info.status == "FINISHED"
    assert parent_of(client, child_run_id) == parent.identifier
    assert client.get_run(child_run_id).info.status == "FINISHED"
