"""Nesting across processes: PCS_PARENT_RUN_ID, child_env, pickled handles and fork."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import parent_of, stored_runs
from mlflow.tracking import MlflowClient

import pcs

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


def _spawned(parent: pcs.Run) -> str:
    with pcs.run("spawned", parent=parent) as r:
        return r.identifier


def test_pickled_handle_as_parent_in_spawned_process(client: MlflowClient) -> None:
    with pcs.run("parent") as parent:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            child_id = pool.apply(_spawned, (parent,))
    assert parent_of(client, child_id) == parent.identifier


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
