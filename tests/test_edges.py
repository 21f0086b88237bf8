"""The promises at the edges: a server down at start, many processes on a new store,
reads during an outage, ``pcs status`` that never hangs nor creates a store.

Everything runs against real stores (SQLite files, a real ``mlflow server`` on
127.0.0.1) and real processes; each program prints what its calls cost, and
the tests only check that nothing blocked for seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from server_support import Server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PCS_"))}
    env.update(extra)
    return env


_OUTAGE_PROGRAM = textwrap.dedent(
    """
    import json, sys, time
    import pcs

    @pcs.tracked
    def step(i):
        return i * 2

    costs = []
    began = time.perf_counter()
    with pcs.run("outage-root") as root:
        for i in range(30):
            t = time.perf_counter()
            assert step(i) == 2 * i
            costs.append(time.perf_counter() - t)
    calls_done = time.perf_counter() - began
    t = time.perf_counter()
    try:
        root.info
        read = "no error"
    except pcs.StoreError as exc:
        read = str(exc)
    read_seconds = time.perf_counter() - t
    print(json.dumps({"max_call": max(costs), "mean_call": sum(costs) / len(costs),
                      "calls_done": calls_done, "read": read,
                      "read_seconds": read_seconds}), flush=True)
    """
)


def test_server_down_at_start_then_recovered_exactly_once(tmp_path: Path) -> None:
    root = tmp_path / "server"
    root.mkdir()
    server = Server(root)  # not started: nothing listens on its port
    env = _env(MLFLOW_TRACKING_URI=server.url, PCS_EXIT_FLUSH_TIMEOUT="3",
               PCS_STALL_SECONDS="2")
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", _OUTAGE_PROGRAM], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    program_seconds = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"server down at start: program {program_seconds:.1f} s, {figures}")
    assert figures["max_call"] < 1.0  # no call waited for the network
    assert "unreachable" in figures["read"]  # a read says so ...
    assert server.url in figures["read"]
    assert figures["read_seconds"] < 15  # ... within seconds
    assert program_seconds < 60  # the exit budget holds (MLflow alone retries ~4 min)
    warnings = [line for line in done.stderr.splitlines() if "cannot write" in line]
    assert len(warnings) == 1, done.stderr
    assert server.url in warnings[0]
    journals = list((tmp_path / ".pcs" / "journal").glob("*.jsonl"))
    assert journals  # the records wait in the journal

    server.start()
    try:
        for _ in range(2):  # a second recovery finds nothing left to do
            recovered = subprocess.run(
                [sys.executable, "-m", "pcs.cli", "recover"], cwd=tmp_path,
                env=_env(MLFLOW_TRACKING_URI=server.url), capture_output=True, text=True,
                timeout=300, check=False,
            )
            assert recovered.returncode == 0, recovered.stderr + recovered.stdout
        client = MlflowClient(tracking_uri=server.url)
        runs = client.search_runs(["0"], max_results=1000)
        roots = [r for r in runs if r.info.run_name == "outage-root"]
        steps = [r for r in runs if r.data.tags.get("pcs.entry_point") == "step"]
        assert len(roots) == 1
        assert sorted(int(r.data.params["arg.i"]) for r in steps) == list(range(30))
        assert {r.data.tags["mlflow.parentRunId"] for r in steps} == {roots[0].info.run_id}
        assert {r.info.status for r in [*roots, *steps]} == {"FINISHED"}
    finally:
        server.stop()


def test_unknown_experiment_on_a_real_server(tmp_path: Path) -> None:
    """A store that answers and lacks the experiment: one clear error at delivery."""
    root = tmp_path / "server"
    root.mkdir()
    server = Server(root)
    server.start()
    try:
        code = textwrap.dedent(
            """
            import pcs
            with pcs.run("lost", experiment_id="424242"):
                pass
            with pcs.run("kept"):
                pass
            print(pcs.flush(timeout=60))
            """
        )
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                              env=_env(MLFLOW_TRACKING_URI=server.url),
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "True"
        errors = [line for line in done.stderr.splitlines() if "424242" in line]
        assert len(errors) == 1, done.stderr
        assert "no experiment" in errors[0]
        runs = MlflowClient(tracking_uri=server.url).search_runs(["0"])
        assert [r.info.run_name for r in runs] == ["kept"]
        kept = list((tmp_path / ".pcs" / "journal").glob("*.jsonl"))
        assert any(b"424242" in path.read_bytes() for path in kept)
    finally:
        server.stop()


_MANY_PROGRAM = textwrap.dedent(
    """
    import sys, time
    import pcs

    @pcs.tracked
    def work(i, who):
        return i

    while time.time() < float(sys.argv[1]):  # start together
        time.sleep(0.001)
    for i in range(20):
        work(i, int(sys.argv[2]))
    assert pcs.flush(timeout=120)
    """
)


@pytest.mark.parametrize("attempt", range(2))
def test_eight_processes_on_a_brand_new_sqlite_store(tmp_path: Path, attempt: int) -> None:
    db = tmp_path / "new" / "mlflow.db"
    db.parent.mkdir()
    uri = f"sqlite:///{db}"
    start = time.time() + 3.0
    procs = [
        subprocess.Popen([sys.executable, "-c", _MANY_PROGRAM, str(start), str(n)],
                         cwd=tmp_path, env=_env(MLFLOW_TRACKING_URI=uri),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(8)
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    runs = MlflowClient(tracking_uri=uri).search_runs(["0"], max_results=1000)
    assert len(runs) == 160
    assert sorted((int(r.data.params["arg.who"]), int(r.data.params["arg.i"])) for r in runs) \
        == [(n, i) for n in range(8) for i in range(20)]


def test_status_against_an_unreachable_server_says_so_within_seconds(tmp_path: Path) -> None:
    server = Server(tmp_path)  # never started
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pcs.cli", "status"], cwd=tmp_path,
                          env=_env(MLFLOW_TRACKING_URI=server.url), capture_output=True,
                          text=True, timeout=120, check=False)
    seconds = time.monotonic() - began
    assert done.returncode == 1
    assert "unreachable" in done.stderr
    assert server.url in done.stderr
    assert seconds < 20, seconds


def test_status_in_an_empty_directory_creates_no_store(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run([sys.executable, "-m", "pcs.cli", "status"], cwd=empty,
                          env=_env(), capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 1
    assert "no MLflow store" in done.stderr
    assert list(empty.iterdir()) == []
