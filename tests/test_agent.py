"""The delivery agent (PCS_DELIVERY=agent): one process per store delivers every program's
journal; flush waits for its acknowledgement; exit does not; exactly once across SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import pcs
from pcs import _store
from pcs._store import agent_link
from pcs._writer import Writer

pytestmark = pytest.mark.slow

PRELUDE = textwrap.dedent(
    """
    import os, signal, sys, time
    import pcs

    @pcs.tracked
    def step(i):
        return i * 2
    """
)


@pytest.fixture
def agent_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """PCS_DELIVERY=agent for this test and its children; the journal directory."""
    monkeypatch.setenv("PCS_DELIVERY", "agent")
    monkeypatch.setenv("PCS_AGENT_IDLE_SECONDS", "2")
    _store.reset_backends()
    return tmp_path / ".pcs" / "journal"


def _db(uri: str) -> Path:
    return Path(uri.removeprefix("sqlite:///"))


def _count(uri: str, where: str = "1=1") -> int:
    with sqlite3.connect(_db(uri)) as db:
        return int(db.execute(f"SELECT count(*) FROM runs WHERE {where}").fetchone()[0])


def _child(code: str, cwd: Path, **popen: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code)], cwd=cwd,
        env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        **popen,  # type: ignore[call-overload]
    )


def _wait_for(condition: Callable[[], bool], timeout: float = 90.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _agent_pid(journal_dir: Path, uri: str) -> int | None:
    lock, _ = agent_link.agent_files(journal_dir, uri)
    if not agent_link.agent_alive(lock):
        return None
    text = lock.read_text().strip()
    return int(text) if text.isdigit() else None


def test_thread_delivery_is_the_default(tracking_uri: str) -> None:
    writer = _store.get_backend(tracking_uri).writer
    assert type(writer) is Writer


def test_agent_applies_to_sqlite_stores_only(agent_env: Path, tracking_uri: str) -> None:
    assert isinstance(_store.get_backend(tracking_uri).writer, agent_link.AgentWriter)
    other = _store.get_backend("http://127.0.0.1:9")  # a server: MLflow makes the run ids
    assert type(other.writer) is Writer


def test_agent_delivers_and_flush_waits_for_its_acknowledgement(
    agent_env: Path, tracking_uri: str, tmp_path: Path
) -> None:
    @pcs.tracked
    def square(x: int) -> int:
        return x * x

    with pcs.run("sweep") as run:
        for i in range(300):
            assert square(i) == i * i
        run.log_metric("loss", 0.5)
    assert pcs.flush(timeout=90)
    # Nothing was delivered by this process: the agent did it, and it is another process.
    agent = _agent_pid(agent_env, tracking_uri)
    assert agent is not None
    assert agent != os.getpid()
    assert _count(tracking_uri, "status = 'FINISHED'") == 301
    with sqlite3.connect(_db(tracking_uri)) as db:
        metrics = db.execute("SELECT key, value FROM metrics").fetchall()
    assert metrics == [("loss", 0.5)]
    writer = _store.get_backend(tracking_uri).writer
    assert writer.pending == 0
    assert writer._sink is None
    # Idle, the agent exits by itself (PCS_AGENT_IDLE_SECONDS=2).
    assert _wait_for(lambda: _agent_pid(agent_env, tracking_uri) is None, 60)


def test_exit_does_not_wait_and_the_agent_finishes(
    agent_env: Path, tracking_uri: str, tmp_path: Path
) -> None:
    child = _child(
        """
        for i in range(2000):
            step(i)
        print("returned", flush=True)
        """,
        tmp_path,
    )
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert out.strip() == "returned"
    assert _wait_for(lambda: _count(tracking_uri, "status = 'FINISHED'") == 2000)
    # Delivered journals are removed: only the agent's lock and log remain.
    assert _wait_for(lambda: not list(agent_env.glob("*.jsonl")), 30)
    with sqlite3.connect(_db(tracking_uri)) as db:
        values = sorted(int(v) for (v,) in db.execute(
            "SELECT value FROM params WHERE key = 'arg.i'"))
    assert values == list(range(2000))  # exactly once


def test_sigkill_of_the_agent_mid_batch_delivers_exactly_once(
    agent_env: Path, tracking_uri: str, tmp_path: Path
) -> None:
    total = 20_000
    child = _child(
        f"""
        for i in range({total}):
            step(i)
        print("calls done", flush=True)
        assert pcs.flush(timeout=180)
        print("flushed", flush=True)
        """,
        tmp_path,
    )
    killed: list[int] = []

    def partly_delivered() -> bool:
        pid = _agent_pid(agent_env, tracking_uri)
        return pid is not None and 0 < _count(tracking_uri) < total

    # Kill the agent twice while it is part way through the journal.
    for _ in range(2):
        assert _wait_for(partly_delivered, 120), "the agent never got part way"
        pid = _agent_pid(agent_env, tracking_uri)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
        assert _wait_for(lambda gone=pid: _agent_pid(agent_env, tracking_uri)  # type: ignore[misc]
                         not in (None, gone), 60) \
            or _count(tracking_uri) == total
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    assert out.split() == ["calls", "done", "flushed"]
    assert _count(tracking_uri) == total
    with sqlite3.connect(_db(tracking_uri)) as db:
        values = [int(v) for (v,) in db.execute("SELECT value FROM params WHERE key='arg.i'")]
        statuses = db.execute("SELECT DISTINCT status FROM runs").fetchall()
    assert sorted(values) == list(range(total))  # none lost, none doubled
    assert statuses == [("FINISHED",)]
    assert len(set(killed)) == 2


def test_processes_share_one_agent(agent_env: Path, tracking_uri: str, tmp_path: Path) -> None:
    lock, _ = agent_link.agent_files(agent_env, tracking_uri)
    children = [
        _child(
            f"""
            for i in range(400):
                step({n} * 1000 + i)
            assert pcs.flush(timeout=120)
            print(open({str(lock)!r}).read().strip(), flush=True)
            """,
            tmp_path,
        )
        for n in range(4)
    ]
    agents = set()
    for child in children:
        out, err = child.communicate(timeout=180)
        assert child.returncode == 0, err
        agents.add(out.strip())
    assert len(agents) == 1  # every process was delivered by the same agent
    assert _count(tracking_uri) == 1600


def test_a_killed_program_s_open_runs_are_reaped_by_the_agent(
    agent_env: Path, tracking_uri: str, tmp_path: Path
) -> None:
    child = _child(
        """
        with pcs.run("doomed") as r:
            for i in range(50):
                step(i)
            assert pcs.flush(timeout=120)
            print(r.identifier, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """,
        tmp_path,
    )
    out, err = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, err
    root = out.strip()
    assert _wait_for(lambda: _count(tracking_uri, f"run_uuid = '{root}' AND status = 'KILLED'")
                     == 1, 60)
    assert _count(tracking_uri, "status = 'FINISHED'") == 50
    assert _wait_for(lambda: not list(agent_env.glob("*.jsonl")), 30)


def test_backpressure_beyond_the_journal_budget(
    agent_env: Path, tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PCS_JOURNAL_BUDGET_MB", "0.002")  # about 2 KB undelivered
    started = agent_link.ensure_agent
    monkeypatch.setattr(agent_link, "ensure_agent", lambda *args: False)  # no agent yet

    @pcs.tracked
    def step(i: int) -> int:
        return i

    finished = threading.Event()

    def flood() -> None:
        for i in range(200):
            step(i)
        finished.set()

    worker = threading.Thread(target=flood, daemon=True)
    worker.start()
    assert not finished.wait(2.0)  # the callers wait: the journal is over its budget
    writer = _store.get_backend(tracking_uri).writer
    assert 0 < writer.pending < 200
    monkeypatch.setattr(agent_link, "ensure_agent", started)
    assert finished.wait(120)  # the agent catches up, the callers go on
    assert pcs.flush(timeout=120)
    assert _count(tracking_uri) == 200


def test_a_journal_that_grows_past_its_first_mapping_is_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pcs._journal import Journal, writer
    from pcs._store.agent import _Tail

    monkeypatch.setattr(writer, "CHUNK", 4096)  # the first mapping: 4 KiB
    journal = Journal(tmp_path / "journal", "sqlite:////nowhere/mlflow.db")
    journal.append([["M", "run", [["loss", 0.5, 1, 0]]]], True)
    tail = _Tail(journal.path, os.open(journal.path, os.O_RDONLY))
    out: list[list[object]] = []
    assert tail.read(100, out) == 1  # mapped now, at 4 KiB
    # One line starting inside the first mapping and ending beyond it: the file grows.
    journal.append([["M", "run", [["loss", 0.25, 2, 1]]], ["P", "run", {"x": "y" * 6000}]],
                   True)
    assert journal.written > 4096
    assert tail.read(100, out) == 3
    assert [record[0] for record in out] == ["M", "M", "P"]
    tail.close()
    journal.close(delete=True)


def test_the_agents_lock_is_held_from_the_moment_it_is_started(
    agent_env: Path, tracking_uri: str
) -> None:
    """The process starting an agent takes its lock and hands it over: the others see an
    agent at once, not only once it has imported pcs, so no second one starts meanwhile
    (on a busy machine, many did, competing for the CPU the first one needed)."""
    agent_env.mkdir(parents=True)
    lock, log = agent_link.agent_files(agent_env, tracking_uri)
    assert agent_link.ensure_agent(agent_env, tracking_uri) is True
    assert agent_link.agent_alive(lock)
    assert agent_link.ensure_agent(agent_env, tracking_uri) is False
    pid = _wait_for(lambda: _agent_pid(agent_env, tracking_uri) is not None)
    assert pid, log.read_text() if log.exists() else "no agent log"
    # It idles out (PCS_AGENT_IDLE_SECONDS=2) and frees the lock; then one starts again.
    assert _wait_for(lambda: not agent_link.agent_alive(lock))
    assert "Traceback" not in log.read_text()
    assert agent_link.ensure_agent(agent_env, tracking_uri) is True
    assert agent_link.ensure_agent(agent_env, tracking_uri) is False
