"""``fork()`` at any moment leaves the child working.

pcs takes its own locks around ``fork()`` (the writer's delivery, the queue,
MLflow's import) and rebuilds its writer, clients and MLflow's engines in the
child, so a child never inherits a lock another thread held or a database
connection in the middle of a request. Each scenario runs in its own program
(pytest is not forked), repeated 20 times; a hung child is killed after 60 s
and counts as a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

_WAIT = textwrap.dedent(
    """
    def wait(pid):
        deadline = time.time() + 120
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            if time.time() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                return "hung"
            time.sleep(0.01)
    """
)


def _program(code: str, tmp_path: Path, uri: str, *args: str) -> tuple[str, str]:
    """Run ``code`` as a program: (the last line it printed, what it wrote to stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PCS_")}
    env["MLFLOW_TRACKING_URI"] = uri
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1], done.stderr


def _run(code: str, tmp_path: Path, uri: str, *args: str) -> str:
    return _program(code, tmp_path, uri, *args)[0]


def _count(uri: str) -> dict[str, int]:
    """Runs per name and status FINISHED, counted in MLflow's own tables (loading
    thousands of runs through MlflowClient.search_runs takes a minute)."""
    import sqlite3

    assert MlflowClient(tracking_uri=uri).search_runs(["0"], max_results=1)  # stock MLflow
    with sqlite3.connect(uri.removeprefix("sqlite:///")) as db:
        rows = db.execute(
            "SELECT name, COUNT(*) FROM runs WHERE status = 'FINISHED' GROUP BY name"
        ).fetchall()
    counts: dict[str, int] = {}
    for name, count in rows:  # run names carry telling arguments: busy(i=3)
        counts[name.split("(")[0]] = counts.get(name.split("(")[0], 0) + count
    return counts


def test_fork_while_the_writer_delivers(tmp_path: Path, tracking_uri: str) -> None:
    code = "import os, random, time\nimport pcs\n" + _WAIT + textwrap.dedent(
        """
        @pcs.tracked
        def busy(i):
            return i

        @pcs.tracked
        def in_child(i):
            return i

        statuses = []
        for rep in range(20):
            for i in range(300):
                busy(i)  # the writer has plenty to deliver
            time.sleep(random.random() * 0.02)
            pid = os.fork()
            if pid == 0:
                try:
                    ok = [in_child(i) for i in range(3)] == [0, 1, 2] and pcs.flush(30)
                except BaseException:
                    ok = False
                os._exit(0 if ok else 3)
            statuses.append(wait(pid))
        assert pcs.flush(120)
        print(statuses)
        """
    )
    assert _run(code, tmp_path, tracking_uri) == str([0] * 20)
    assert _count(tracking_uri) == {"busy": 6000, "in_child": 60}


def test_fork_during_the_first_tracked_call(tmp_path: Path, tracking_uri: str) -> None:
    """Another thread makes the process's first call (importing MLflow, opening the store)
    while the main thread forks: 20 programs, each forking at a random moment."""
    code = "import os, random, sys, threading, time\nimport pcs\n" + _WAIT + textwrap.dedent(
        """
        @pcs.tracked
        def first(i):
            return i

        thread = threading.Thread(target=first, args=(1,))
        thread.start()
        time.sleep(random.random() * float(sys.argv[1]))
        pid = os.fork()
        if pid == 0:
            try:
                started = time.monotonic()
                result = first(2)
                flushed = pcs.flush(60)
                ok = result == 2 and flushed
                if not ok:
                    print(f"child: returned {result!r}, flush(60) -> {flushed} after "
                          f"{time.monotonic() - started:.1f} s", file=sys.stderr)
            except BaseException:
                import traceback
                traceback.print_exc()
                ok = False
            sys.stderr.flush()
            os._exit(0 if ok else 3)
        status = wait(pid)
        thread.join()
        assert pcs.flush(60)
        print(status)
        """
    )
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as programs:  # three programs at a time
        outcomes = list(programs.map(lambda _: _program(code, tmp_path, tracking_uri, "1.5"),
                                     range(20)))
    failed = [(status, stderr[-3000:]) for status, stderr in outcomes if status != "0"]
    assert not failed, failed
    assert _count(tracking_uri) == {"first": 40}


def test_fork_pool_while_the_writer_delivers(tmp_path: Path, tracking_uri: str) -> None:
    code = textwrap.dedent(
        """
        import multiprocessing
        import pcs

        @pcs.tracked
        def square(x):
            return x * x

        ctx = multiprocessing.get_context("fork")
        for rep in range(4):
            for i in range(500):
                square(i)  # keep the writer delivering while the pool forks
            pool = ctx.Pool(2)
            result = pool.map_async(square, range(20)).get(timeout=60)
            pool.close()
            pool.join()
            assert result == [x * x for x in range(20)]
        assert pcs.flush(120)
        print("ok")
        """
    )
    assert _run(code, tmp_path, tracking_uri) == "ok"
    assert _count(tracking_uri) == {"square": 4 * 520}
