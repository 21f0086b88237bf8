"""Recovery you can trust: a journal is data, never instructions.

Real journals, written by real processes that were SIGKILLed, recovered by
other processes: records go only to the store the recovering process is
configured for (or one named with ``--store``), never to a URI read from the
file; a relative SQLite URI never means another directory's database; on the
client path, recovery is exactly once across batches and never changes a
finished run's status.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import pcs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

_KILLED_PROGRAM = textwrap.dedent(
    """
    import os, signal, sys
    import pcs

    @pcs.tracked
    def step(i):
        return i

    with pcs.run("doomed"):
        for i in range(int(sys.argv[1])):
            step(i)
        print("done", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PCS_"))}
    env["PCS_AUTO_RECOVER"] = "0"
    env.update(extra)
    return env


def _killed(cwd: Path, calls: int, **env: str) -> None:
    done = subprocess.run([sys.executable, "-c", _KILLED_PROGRAM, str(calls)], cwd=cwd,
                          env=_env(**env), capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout.strip() == "done"


def _recover_cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pcs.cli", "recover", *args], cwd=cwd,
                          env=_env(**env), capture_output=True, text=True, timeout=300,
                          check=False)


def _steps(uri: str) -> list[int]:
    runs = MlflowClient(tracking_uri=uri).search_runs(["0"], max_results=10_000)
    return sorted(int(r.data.params["arg.i"]) for r in runs
                  if r.data.tags.get("pcs.entry_point") == "step")


class _Listener:
    """A TCP listener on 127.0.0.1 that records whether anybody connected."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []

    def start(self) -> None:
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stop_flag = threading.Event()

        def serve() -> None:
            while not self.stop_flag.is_set():
                try:
                    conn, _ = self.sock.accept()
                except OSError:
                    continue
                conn.settimeout(1.0)
                try:
                    self.received.append(conn.recv(65536) or b"<connected>")
                except OSError:
                    self.received.append(b"<connected>")
                conn.close()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_flag.set()
        self.thread.join(5)
        self.sock.close()


def test_foreign_uri_in_a_journal_gets_nothing_not_even_the_token(
    tmp_path: Path, tracking_uri: str
) -> None:
    listener = _Listener()  # bound, not listening yet: the program's connections fail
    foreign = f"http://127.0.0.1:{listener.port}"
    _killed(tmp_path, 20, MLFLOW_TRACKING_URI=foreign, PCS_STALL_SECONDS="1")
    listener.start()
    try:
        done = _recover_cli(tmp_path, MLFLOW_TRACKING_URI=tracking_uri,
                            MLFLOW_TRACKING_TOKEN="s3cr3t-token-value")
        time.sleep(0.5)
    finally:
        listener.stop()
    assert done.returncode == 0, done.stderr
    assert "left alone" in done.stderr
    assert "--store" in done.stderr
    assert listener.received == []  # nothing was sent there, no credentials either
    assert _steps(tracking_uri) == []  # nor into this store
    assert list((tmp_path / ".pcs" / "journal").glob("*.jsonl"))  # kept for its owner


def test_relative_sqlite_uri_never_means_another_directory(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    journals = str(tmp_path / "journals")
    _killed(first, 10, MLFLOW_TRACKING_URI="sqlite:///mlflow.db", PCS_JOURNAL_DIR=journals)
    elsewhere = _recover_cli(second, MLFLOW_TRACKING_URI="sqlite:///mlflow.db",
                             PCS_JOURNAL_DIR=journals)
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert "left alone" in elsewhere.stderr
    assert not (second / "mlflow.db").exists() or _steps(f"sqlite:///{second}/mlflow.db") == []
    here = _recover_cli(first, MLFLOW_TRACKING_URI="sqlite:///mlflow.db",
                        PCS_JOURNAL_DIR=journals)
    assert here.returncode == 0, here.stderr
    assert _steps(f"sqlite:///{first}/mlflow.db") == list(range(10))


def test_store_named_on_the_command_line(tmp_path: Path, tracking_uri: str) -> None:
    other = tmp_path / "other"
    other.mkdir()
    store = f"sqlite:///{other}/mlflow.db"
    MlflowClient(tracking_uri=store).search_experiments()  # an existing store
    _killed(tmp_path, 10, MLFLOW_TRACKING_URI=store)
    done = _recover_cli(tmp_path, "--store", store, MLFLOW_TRACKING_URI=tracking_uri)
    assert done.returncode == 0, done.stderr
    assert _steps(store) == list(range(10))
    assert _steps(tracking_uri) == []


def test_concurrent_recoveries_deliver_exactly_once(tmp_path: Path, tracking_uri: str) -> None:
    for _ in range(3):
        _killed(tmp_path, 30, MLFLOW_TRACKING_URI=tracking_uri)
    procs = [subprocess.Popen([sys.executable, "-m", "pcs.cli", "recover"], cwd=tmp_path,
                              env=_env(MLFLOW_TRACKING_URI=tracking_uri),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    for proc in procs:
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert _steps(tracking_uri) == sorted(list(range(30)) * 3)


def test_client_path_recovery_across_batches_is_exactly_once(
    tmp_path: Path, tracking_uri: str
) -> None:
    """SIGKILL in the middle of a burst larger than one batch, through the MLflow client
    (as for an http:// server): every call once, FINISHED runs stay FINISHED."""
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
            return i

        with pcs.run("burst"):
            for i in range(600):
                step(i)
            pcs.flush(timeout=0.5)  # some batches delivered, the rest not yet
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                          env=_env(MLFLOW_TRACKING_URI=tracking_uri), capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    recovered = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(
            """
            from pcs._store import facade, recovery
            recovery.BATCH = 100  # many batches: each must be exactly once
            def detect(backend):
                backend.client
                return "client"
            facade._detect_mode = detect
            facade.assigns_ids = lambda uri: False
            print(recovery.recover())
            """
        )],
        cwd=tmp_path, env=_env(MLFLOW_TRACKING_URI=tracking_uri), capture_output=True,
        text=True, timeout=600, check=False,
    )
    assert recovered.returncode == 0, recovered.stderr
    runs = MlflowClient(tracking_uri=tracking_uri).search_runs(["0"], max_results=10_000)
    steps = [r for r in runs if r.data.tags.get("pcs.entry_point") == "step"]
    assert sorted(int(r.data.params["arg.i"]) for r in steps) == list(range(600))
    assert {r.info.status for r in steps} == {"FINISHED"}
    assert [r.info.status for r in runs if r.info.run_name == "burst"] == ["KILLED"]


def test_unpicklable_pickle_return_value_is_finished(client: MlflowClient) -> None:
    @pcs.tracked(return_format="pickle")
    def make_lock() -> object:
        return threading.Lock()

    make_lock()
    run = pcs.last_run()
    assert run is not None
    stored = client.get_run(run.identifier)
    assert stored.info.status == "FINISHED"
    assert "pickle" in stored.data.tags["pcs.return_value.error"]


_EXITS = textwrap.dedent(
    """
    import atexit, os, sys

    # Registered before pcs's own exit handlers, so it runs after them: the exit is a
    # normal one for pcs (atexit delivers and closes the journal), and the child then
    # skips the interpreter's teardown of MLflow's large heap (over a second each).
    atexit.register(os._exit, 0)
    import pcs

    @pcs.tracked
    def step(i):
        return i

    step(-1)
    pcs.flush(60)
    for n in range(200):
        pid = os.fork()
        if pid == 0:
            for i in range(20):
                step(i)
            sys.exit(0)  # a normal exit: atexit delivers and closes the journal
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    print("ok")
    """
)


def test_200_normal_exits_without_a_file_descriptor_warning(
    tmp_path: Path, tracking_uri: str
) -> None:
    done = subprocess.run([sys.executable, "-c", _EXITS], cwd=tmp_path,
                          env=_env(MLFLOW_TRACKING_URI=tracking_uri), capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"
    assert "Bad file descriptor" not in done.stderr
    assert "EBADF" not in done.stderr
    assert len(_steps(tracking_uri)) == 200 * 20 + 1


@pytest.mark.parametrize("path", ["../../../escape.txt", "/tmp/escape.txt", "a/../../escape.txt",
                                  "a\\..\\..\\escape.txt", "C:/escape.txt", "./x/../../e.txt"])
def test_artifact_paths_from_records_stay_in_the_run(
    path: str, tmp_path: Path, tracking_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Journal records and live records go through one materializer: a path that would
    leave the run's artifact folder is refused (logged), never written."""
    import base64

    from pcs import _store

    run = pcs.Run()
    run.end()
    assert pcs.flush(30)
    backend = _store.get_backend()
    with caplog.at_level("ERROR", logger="pcs"):
        backend.submit(["A", run._run_id, path, base64.b64encode(b"planted").decode()])
        backend.submit(["R", "../../evil", "0", "x", 0, {}, {}, False])
        assert pcs.flush(30)
    assert "unsafe artifact path" in caplog.text
    assert "unsafe id" in caplog.text
    planted = [p for p in Path("/tmp").glob("escape.txt")] + list(tmp_path.rglob("*escape*")) \
        + list(tmp_path.rglob("e.txt")) + list(tmp_path.parent.rglob("evil"))
    assert planted == []


def test_exit_with_the_store_down_keeps_the_budget(tmp_path: Path) -> None:
    """One budget (PCS_EXIT_FLUSH_TIMEOUT) bounds the whole shutdown; what is left stays
    in the journal, said once with how to deliver it."""
    from server_support import Server

    down = Server(tmp_path)  # never started: connections are refused
    code = textwrap.dedent(
        """
        import time
        import pcs

        @pcs.tracked
        def step(i):
            return i

        with pcs.run("at-exit"):
            for i in range(50):
                step(i)
        print(time.time(), flush=True)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                          env=_env(MLFLOW_TRACKING_URI=down.url, PCS_EXIT_FLUSH_TIMEOUT="3"),
                          capture_output=True, text=True, timeout=300, check=False)
    ended = time.time()
    assert done.returncode == 0, done.stderr
    exit_seconds = ended - float(done.stdout.strip())
    print(f"exit with the store down took {exit_seconds:.1f} s (budget 3 s)")
    assert exit_seconds < 3 + 5  # the budget, plus interpreter teardown on a busy machine
    left = [line for line in done.stderr.splitlines() if "not delivered before exit" in line]
    assert len(left) == 1, done.stderr
    assert "pcs recover" in left[0]


def test_sigkill_mid_burst_against_a_real_server_is_exactly_once(tmp_path: Path) -> None:
    from server_support import Server

    root = tmp_path / "server"
    root.mkdir()
    server = Server(root)
    server.start()
    try:
        code = textwrap.dedent(
            """
            import os, signal
            import pcs

            @pcs.tracked
            def step(i):
                return i

            with pcs.run("burst"):
                for i in range(300):
                    step(i)
                pcs.flush(timeout=1.0)  # part delivered, the rest not yet
                os.kill(os.getpid(), signal.SIGKILL)
            """
        )
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                              env=_env(MLFLOW_TRACKING_URI=server.url), capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == -signal.SIGKILL, done.stderr
        for _ in range(2):  # twice: the second finds nothing to do
            recovered = _recover_cli(tmp_path, MLFLOW_TRACKING_URI=server.url)
            assert recovered.returncode == 0, recovered.stderr
        runs = MlflowClient(tracking_uri=server.url).search_runs(["0"], max_results=5000)
        steps = [r for r in runs if r.data.tags.get("pcs.entry_point") == "step"]
        assert sorted(int(r.data.params["arg.i"]) for r in steps) == list(range(300))
        assert {r.info.status for r in steps} == {"FINISHED"}
        assert [r.info.status for r in runs if r.info.run_name == "burst"] == ["KILLED"]
    finally:
        server.stop()
