"""Nothing lost: exit without flush, SIGKILL + recovery, SIGTERM, concurrency, store outages."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import stored_runs
from mlflow.tracking import MlflowClient

import pcs
from pcs import _store

pytestmark = pytest.mark.slow

PRELUDE = textwrap.dedent(
    """
    import os, signal, sys
    import pcs

    @pcs.tracked
    def step(i):
        return i * 2

    @pcs.tracked
    def outer(i):
        return step(i) + step(i + 1)
    """
)


def _run_child(code: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
        cwd=cwd,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(params=["thread", "agent"])
def delivery(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The child processes deliver with a writer thread of their own, or through the
    delivery agent (``PCS_DELIVERY=agent``). An agent's program does not wait for delivery
    at exit unless ``PCS_EXIT_WAIT=1``, which these tests set: they read the store as
    soon as the child has exited."""
    monkeypatch.setenv("PCS_DELIVERY", request.param)
    if request.param == "agent":
        monkeypatch.setenv("PCS_EXIT_WAIT", "1")
        monkeypatch.setenv("PCS_EXIT_FLUSH_TIMEOUT", "180")  # a loaded CI machine
        monkeypatch.setenv("PCS_AGENT_IDLE_SECONDS", "3")
    return str(request.param)


def _by_entry(client: MlflowClient, entry: str) -> list[object]:
    return [
        r for r in stored_runs(client).values()
        if r.data.tags.get("pcs.entry_point") == entry  # type: ignore[attr-defined]
    ]


def test_exit_without_flush_delivers_everything(
    client: MlflowClient, tmp_path: Path, delivery: str
) -> None:
    done = _run_child(
        """
        with pcs.run("batch") as r:
            for i in range(500):
                step(i)
        print(r.identifier)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    steps = _by_entry(client, "step")
    assert len(steps) == 500
    assert {s.info.status for s in steps} == {"FINISHED"}  # type: ignore[attr-defined]
    assert {s.data.params["arg.i"] for s in steps} == {str(i) for i in range(500)}  # type: ignore[attr-defined]
    root = done.stdout.strip().splitlines()[-1]
    assert client.get_run(root).info.status == "FINISHED"
    assert not list((tmp_path / ".pcs" / "journal").glob("*.jsonl"))  # delivered: removed


def test_sigkill_then_recovery_delivers_exactly_once(client: MlflowClient, tmp_path: Path) -> None:
    done = _run_child(
        """
        with pcs.run("doomed") as r:
            for i in range(300):
                step(i)
            print(r.identifier, flush=True)
            print("returned 300", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """,
        tmp_path,
    )
    assert done.returncode == -signal.SIGKILL
    root, said = done.stdout.strip().splitlines()[-2:]
    assert said == "returned 300"
    report = pcs.recover()
    assert len(report.journals) == 1
    assert root in report.killed_runs
    steps = _by_entry(client, "step")
    assert len(steps) == 300  # exactly once: none lost, none doubled
    assert sorted(int(s.data.params["arg.i"]) for s in steps) == list(range(300))  # type: ignore[attr-defined]
    assert {s.info.status for s in steps} == {"FINISHED"}  # type: ignore[attr-defined]
    stored_root = client.get_run(root)
    assert stored_root.info.status == "KILLED"
    assert "reaped" in stored_root.data.tags["pcs.reaped"]
    assert pcs.recover().journals == []  # nothing left: recovering again adds nothing
    assert len(_by_entry(client, "step")) == 300


def test_live_owner_is_never_reaped(client: MlflowClient, tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(
            """
            import time
            with pcs.run("alive") as r:
                step(1)
                pcs.flush()
                print(r.identifier, flush=True)
                time.sleep(60)
            """
        )],
        cwd=tmp_path, env=dict(os.environ), stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None
        root = child.stdout.readline().strip()
        report = pcs.recover()
        assert report.journals == []
        assert client.get_run(root).info.status == "RUNNING"
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        report = pcs.recover()
        assert len(report.journals) == 1
        assert client.get_run(root).info.status == "KILLED"
    finally:
        child.kill()
        child.wait(30)
        if child.stdout is not None:
            child.stdout.close()


def test_sigterm_marks_open_runs_killed(
    client: MlflowClient, tmp_path: Path, delivery: str
) -> None:
    done = _run_child(
        """
        with pcs.run("terminated") as r:
            step(1)
            print(r.identifier, flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            import time; time.sleep(30)
        """,
        tmp_path,
    )
    assert done.returncode == -signal.SIGTERM
    root = done.stdout.strip().splitlines()[-1]
    assert client.get_run(root).info.status == "KILLED"
    assert len(_by_entry(client, "step")) == 1


def test_sigterm_right_after_the_first_call_on_a_new_store_delivers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer thread of a program terminated right after its first call is still
    importing MLflow and creating the store: SIGTERM waits for it (bounded)."""
    uri = f"sqlite:///{tmp_path}/new.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    done = _run_child(
        """
        with pcs.run("terminated") as r:
            step(1)
            os.kill(os.getpid(), signal.SIGTERM)
            import time; time.sleep(60)
        """,
        tmp_path,
    )
    assert done.returncode == -signal.SIGTERM
    with sqlite3.connect(tmp_path / "new.db") as conn:
        rows = sorted(conn.execute("SELECT name, status FROM runs"))
    assert rows == [("step(i=1)", "FINISHED"), ("terminated", "KILLED")]


@pytest.mark.timeout(600)  # 16 interpreters importing MLflow on a small CI machine
def test_16_processes_into_one_sqlite_file(
    client: MlflowClient, tmp_path: Path, delivery: str
) -> None:
    code = PRELUDE + textwrap.dedent(
        """
        with pcs.run("proc-" + sys.argv[1]) as r:
            for i in range(50):
                outer(i)
        print(r.identifier)
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(n)], cwd=tmp_path,
                         env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for n in range(16)
    ]
    roots = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        roots.append(out.strip().splitlines()[-1])
    runs = stored_runs(client)
    outers = [r for r in runs.values() if r.data.tags.get("pcs.entry_point") == "outer"]
    steps = [r for r in runs.values() if r.data.tags.get("pcs.entry_point") == "step"]
    assert len(outers) == 16 * 50
    assert len(steps) == 16 * 100
    assert {r.data.tags["mlflow.parentRunId"] for r in outers} == set(roots)
    outer_ids = {r.info.run_id for r in outers}
    assert {r.data.tags["mlflow.parentRunId"] for r in steps} <= outer_ids
    assert all(r.info.status == "FINISHED" for r in runs.values())


def test_32_threads_nested_calls(client: MlflowClient) -> None:
    errors: list[BaseException] = []

    @pcs.tracked
    def leaf(t: int, i: int) -> int:
        return t * i

    @pcs.tracked
    def branch(t: int) -> int:
        return sum(leaf(t, i) for i in range(5))

    def work(t: int) -> None:
        try:
            with pcs.run(f"thread-{t}"):
                for _ in range(3):
                    branch(t)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    runs = stored_runs(client)
    roots = {r.info.run_id: r for r in runs.values()
             if r.data.tags.get("mlflow.runName", "").startswith("thread-")}
    branches = [r for r in runs.values() if r.data.tags.get("pcs.entry_point") == "branch"]
    leaves = [r for r in runs.values() if r.data.tags.get("pcs.entry_point") == "leaf"]
    assert (len(roots), len(branches), len(leaves)) == (32, 96, 480)
    for b in branches:
        root = roots[b.data.tags["mlflow.parentRunId"]]
        assert root.data.tags["mlflow.runName"] == f"thread-{b.data.params['arg.t']}"
    by_id = {b.info.run_id: b for b in branches}
    for leaf_run in leaves:
        parent = by_id[leaf_run.data.tags["mlflow.parentRunId"]]
        assert parent.data.params["arg.t"] == leaf_run.data.params["arg.t"]


def test_store_locked_then_back_delivers_once(
    client: MlflowClient, tracking_uri: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("PCS_SQLITE_BUSY_TIMEOUT_MS", "50")
    _store.reset_backends()

    @pcs.tracked
    def work(i: int) -> int:
        return i

    with pcs.run("warm-up"):
        pass
    assert pcs.flush(30)
    writer = _store.get_backend().writer
    writer._max_pending = 40  # exercise the spill-to-journal path too
    blocker = sqlite3.connect(tracking_uri[len("sqlite:///"):], isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # the store is now unavailable to every writer
    try:
        with caplog.at_level(logging.WARNING, logger="pcs"):
            results = [work(i) for i in range(200)]
            time.sleep(1.0)
            assert writer.pending > 0
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert results == list(range(200))
    assert pcs.flush(120)
    warnings = [r for r in caplog.records if "cannot write to the tracking store" in r.message]
    assert len(warnings) == 1
    works = _by_entry(client, "work")
    assert sorted(int(w.data.params["arg.i"]) for w in works) == list(range(200))  # type: ignore[attr-defined]


def test_no_run_left_running_at_exit(
    client: MlflowClient, tmp_path: Path, delivery: str
) -> None:
    done = _run_child(
        """
        import threading, time
        plain = pcs.Run()                      # never ended by the program

        @pcs.tracked
        def forever():
            time.sleep(60)

        t = threading.Thread(target=forever, daemon=True)
        t.start()
        time.sleep(0.5)
        print(plain.identifier, flush=True)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    plain_id = done.stdout.strip().splitlines()[-1]
    assert client.get_run(plain_id).info.status == "FINISHED"
    (hung,) = _by_entry(client, "forever")
    assert hung.info.status == "KILLED"  # type: ignore[attr-defined]


def test_a_run_a_daemon_thread_starts_during_exit_ends_killed(
    client: MlflowClient, tmp_path: Path, delivery: str
) -> None:
    """The open runs are ended at exit; a daemon thread that starts a run after that
    (here: from an exit handler that runs later) must not leave it RUNNING."""
    done = _run_child(
        """
        import atexit, threading, time

        @pcs.tracked
        def late():
            time.sleep(60)

        def start_late():  # runs after pcs ended the open runs (exit handlers run LIFO)
            threading.Thread(target=late, daemon=True).start()
            time.sleep(0.5)

        atexit.register(start_late)
        with pcs.run("first"):  # the first run: pcs registers its exit handlers now
            pass
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    (late,) = _by_entry(client, "late")
    assert late.info.status == "KILLED"  # type: ignore[attr-defined]
