"""The MLflow-client delivery path (used for http:// servers, PostgreSQL, MySQL ...).

Forced here on the test's real SQLite store, so the same behaviour is checked
through the stock client that the fast path bypasses.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import parent_of
from mlflow.tracking import MlflowClient

import pcs
from pcs import _store
from pcs._store import facade
from pcs.component_run import ComponentRun


@pytest.fixture(autouse=True)
def client_mode(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def detect(backend: _store.Backend) -> str:
        backend.client  # noqa: B018
        return "client"

    monkeypatch.setattr(facade, "_detect_mode", detect)
    monkeypatch.setattr(facade, "assigns_ids", lambda uri: False)  # local ids, as for http
    _store.reset_backends()
    yield
    assert _store.get_backend().mode == "client"


@pcs.tracked
def add(a: int, b: int = 2) -> int:
    return a + b


def test_nesting_tracked_calls_and_return_values(client: MlflowClient) -> None:
    with pcs.run("outer", params={"p": 1}) as outer:
        assert add(1) == 3
        call = pcs.last_run()
        outer.log_metric("m", 0.5)
    assert isinstance(call, ComponentRun)
    stored = client.get_run(call.identifier)
    assert stored.info.status == "FINISHED"
    assert stored.data.params == {"arg.a": "1", "arg.b": "2"}
    assert stored.data.tags["pcs.run_command_id"] == call.run_command.identifier
    assert parent_of(client, call.identifier) == outer.identifier
    assert ComponentRun.from_existing_run_id(call.identifier).return_value == 3
    root = client.get_run(outer.identifier)
    assert root.data.params == {"p": "1"}
    assert root.data.metrics == {"m": 0.5}
    assert root.info.status == "FINISHED"


def test_failure_status_and_traceback(client: MlflowClient) -> None:
    @pcs.tracked
    def bad() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        bad()
    run = pcs.last_run()
    assert run is not None
    stored = client.get_run(run.identifier)
    assert stored.info.status == "FAILED"
    assert stored.data.tags["pcs.error.type"] == "builtins.KeyError"
    assert "pcs.traceback.txt" in [f.path for f in client.list_artifacts(run.identifier)]


def test_no_store_call_on_the_calling_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting a run or a tracked call asks nothing of the store: the writer creates it."""
    calls: list[str] = []
    real = MlflowClient.create_run

    def create_run(self: MlflowClient, *args: object, **kwargs: object) -> object:
        calls.append(threading.current_thread().name)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "create_run", create_run)
    with pcs.run("outer"):
        assert add(1) == 3
    assert pcs.flush(60)
    assert len(calls) == 2
    assert set(calls) == {"pcs-writer"}


def test_store_down_then_back_delivers_exactly_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, client: MlflowClient,
    tracking_uri: str,
) -> None:
    """An unreachable store: calls run on, one warning, ids wait; back up: all land once."""
    import requests

    down = threading.Event()
    down.set()

    def unreachable(name: str) -> object:
        real = getattr(MlflowClient, name)

        def call(self: MlflowClient, *args: object, **kwargs: object) -> object:
            if down.is_set():
                raise requests.exceptions.ConnectionError(f"{tracking_uri} refused ({name})")
            return real(self, *args, **kwargs)

        return call

    for name in ("create_run", "log_batch", "set_terminated", "log_artifact", "search_runs"):
        monkeypatch.setattr(MlflowClient, name, unreachable(name))
    monkeypatch.setenv("PCS_RUN_ID_TIMEOUT", "0.5")
    stock = MlflowClient(tracking_uri=tracking_uri)
    with caplog.at_level(logging.WARNING, logger="pcs"):
        with pcs.run("outage") as outer:
            assert [add(i) for i in range(20)] == [i + 2 for i in range(20)]
            with pytest.raises(pcs.StoreError, match=r"record\(s\) recorded earlier are not deliv"):
                outer.identifier  # noqa: B018 - the store cannot have created it
        assert not pcs.flush(timeout=0.5)
        down.clear()
        assert pcs.flush(60)
    warnings = [r for r in caplog.records if "cannot write to the tracking store" in r.getMessage()]
    assert len(warnings) == 1
    runs = stock.search_runs(["0"], max_results=100)
    calls = [r for r in runs if r.data.tags.get("pcs.entry_point") == "add"]
    assert sorted(int(r.data.params["arg.a"]) for r in calls) == list(range(20))
    assert len(runs) == 21  # exactly once each
    root = outer.identifier
    assert stock.get_run(root).info.status == "FINISHED"
    assert {parent_of(client, r.info.run_id) for r in calls} == {root}
    assert {r.info.status for r in calls} == {"FINISHED"}
    for run in calls:
        assert run.data.tags["pcs.local_run_id"].startswith("pcs-local-")
        assert ComponentRun.from_existing_run_id(run.info.run_id).return_value == (
            int(run.data.params["arg.a"]) + 2
        )


def test_unacknowledged_creation_is_not_repeated(
    monkeypatch: pytest.MonkeyPatch, tracking_uri: str
) -> None:
    """The store created the run but the answer was lost: the retry finds it by tag."""
    import requests

    lost = threading.Event()
    lost.set()
    real = MlflowClient.create_run

    def create_run(self: MlflowClient, *args: object, **kwargs: object) -> object:
        created = real(self, *args, **kwargs)
        if lost.is_set():
            lost.clear()
            raise requests.exceptions.ReadTimeout("the answer was lost")
        return created

    monkeypatch.setattr(MlflowClient, "create_run", create_run)
    assert add(5) == 7
    run = pcs.last_run()
    assert run is not None
    assert pcs.flush(60)
    runs = MlflowClient(tracking_uri=tracking_uri).search_runs(["0"])
    assert [r.info.run_id for r in runs] == [run.identifier]


def test_sigkill_then_recovery_exactly_once(tmp_path: Path, tracking_uri: str) -> None:
    code = textwrap.dedent(
        """
        import os, signal
        import pcs
        from pcs._store import facade

        def detect(backend):
            backend.client
            return "client"

        facade._detect_mode = detect
        facade.assigns_ids = lambda uri: False

        @pcs.tracked
        def step(i):
            return i * 2

        with pcs.run("doomed") as r:
            for i in range(40):
                step(i)
            print(r.identifier, flush=True)
            for i in range(40, 60):
                step(i)
            print("returned 60", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=dict(os.environ),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    root, said = done.stdout.strip().splitlines()[-2:]
    assert said == "returned 60"
    report = pcs.recover()
    assert root in report.killed_runs
    stock = MlflowClient(tracking_uri=tracking_uri)
    steps = [r for r in stock.search_runs(["0"], max_results=200)
             if r.data.tags.get("pcs.entry_point") == "step"]
    assert sorted(int(r.data.params["arg.i"]) for r in steps) == list(range(60))
    assert {r.info.status for r in steps} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in steps} == {root}
    assert stock.get_run(root).info.status == "KILLED"
    assert pcs.recover().journals == []


def test_threads_nest_correctly_through_local_ids(client: MlflowClient) -> None:
    """Many threads, nested calls: every local parent id maps to the right MLflow run."""
    from concurrent.futures import ThreadPoolExecutor

    @pcs.tracked
    def inner(t: int, i: int) -> int:
        return add(t, i)

    @pcs.tracked
    def worker(t: int) -> int:
        return sum(inner(t, i) for i in range(5))

    with pcs.run("threads") as root, ThreadPoolExecutor(8) as pool:
        totals = list(pool.map(pcs.bind(worker), range(16)))
    assert totals == [sum(t + i for i in range(5)) for t in range(16)]
    assert pcs.flush(120)
    runs = {r.info.run_id: r for r in client.search_runs(["0"], max_results=1000)}
    assert len(runs) == 1 + 16 * (1 + 5 * 2)
    by_entry: dict[str, list[object]] = {}
    for run in runs.values():
        by_entry.setdefault(run.data.tags.get("pcs.entry_point", "root"), []).append(run)
    assert {r.data.tags["mlflow.parentRunId"] for r in by_entry["worker"]} == {  # type: ignore[attr-defined]
        root.identifier
    }
    for call in by_entry["inner"]:
        parent = runs[call.data.tags["mlflow.parentRunId"]]  # type: ignore[attr-defined]
        assert parent.data.tags["pcs.entry_point"] == "worker"
        assert parent.data.params["arg.t"] == call.data.params["arg.t"]  # type: ignore[attr-defined]
    for call in by_entry["add"]:
        parent = runs[call.data.tags["mlflow.parentRunId"]]  # type: ignore[attr-defined]
        assert parent.data.tags["pcs.entry_point"] == "inner"
        assert parent.data.params["arg.i"] == call.data.params["arg.b"]  # type: ignore[attr-defined]
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
