"""A store that cannot be written never changes what tracked code returns or raises."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import pcs
from pcs import _store
from pcs._store import sqlite_sink
from pcs._store.uri import sqlite_path


@pytest.fixture
def broken_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{_blocked(tmp_path)}/mlflow.db")
    _store.reset_backends()


def test_tracked_call_result_unchanged(
    broken_store: None, caplog: pytest.LogCaptureFixture
) -> None:
    import pcs._tracker

    pcs._tracker._warned.clear()

    @pcs.tracked
    def add(a: int, b: int) -> int:
        return a + b

    with caplog.at_level(logging.WARNING, logger="pcs"):
        assert add(1, 2) == 3
        assert add(2, 2) == 4
        assert not pcs.flush(timeout=3)
    warnings = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(warnings) == 1  # logged once
    assert "MLFLOW_TRACKING_URI" in warnings[0].getMessage()
    assert "will be delivered" in warnings[0].getMessage()


def test_tracked_exception_unchanged(broken_store: None) -> None:
    err = ValueError("mine")

    @pcs.tracked
    def fail() -> None:
        raise err

    with pytest.raises(ValueError) as raised:
        fail()
    assert raised.value is err


def test_tracked_generator_and_async_unchanged(broken_store: None) -> None:
    import asyncio

    @pcs.tracked
    def gen():  # type: ignore[no-untyped-def]
        yield from (1, 2)

    @pcs.tracked
    async def coro() -> str:
        return "ok"

    assert list(gen()) == [1, 2]
    assert asyncio.run(coro()) == "ok"


def test_explicit_run_block_never_waits_for_the_store(broken_store: None) -> None:
    """The block runs; its records wait in the journal; a read names the problem."""
    with pcs.run("x") as run:
        run.log_metric("m", 1.0)
    with pytest.raises(pcs.StoreError, match="MLFLOW_TRACKING_URI"):
        run.data  # noqa: B018


def _blocked(tmp_path: Path) -> Path:
    """A directory path that cannot be created: its parent is a regular file."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    return blocker / "store"


def test_journal_disk_full_keeps_tracking(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tracking_uri: str
) -> None:
    """No space for the journal: one warning, and every record still reaches MLflow."""
    import errno

    from mlflow.tracking import MlflowClient

    from pcs._journal import writer

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer.os, "posix_fallocate", full)  # read by writer._reserve

    @pcs.tracked
    def add(a: int, b: int) -> int:
        return a + b

    with caplog.at_level(logging.WARNING, logger="pcs"):
        assert [add(i, 1) for i in range(20)] == [i + 1 for i in range(20)]
        assert pcs.flush(60)
    warnings = [r.getMessage() for r in caplog.records if "journal" in r.getMessage()]
    assert len(warnings) == 1
    assert "No space left on device" in warnings[0]
    assert "PCS_JOURNAL_DIR" in warnings[0]
    runs = MlflowClient(tracking_uri=tracking_uri).search_runs(["0"], max_results=100)
    assert sorted(int(r.data.params["arg.a"]) for r in runs) == list(range(20))
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_artifact_files_failing_commit_nothing_then_deliver(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tracking_uri: str
) -> None:
    """A run becomes visible only with its artifact files: while they cannot be
    written, the batch is rolled back and retried; then it lands exactly once."""
    import errno
    import threading

    from mlflow.tracking import MlflowClient

    failing = threading.Event()
    failing.set()
    refused = threading.Event()
    real_write = sqlite_sink._write_file

    def write(path: str, data: bytes) -> None:
        if failing.is_set():
            refused.set()
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(sqlite_sink, "_write_file", write)

    @pcs.tracked
    def double(x: int) -> int:
        return 2 * x

    stock = MlflowClient(tracking_uri=tracking_uri)
    with caplog.at_level(logging.WARNING, logger="pcs"):
        assert [double(i) for i in range(10)] == [2 * i for i in range(10)]
        assert not pcs.flush(timeout=1.0)  # cannot finish while files fail
        # The writer has met the failure (on a loaded machine, opening the store may take
        # longer than the flush above waited).
        assert refused.wait(60)
        assert not pcs.flush(timeout=0.5)
        assert stock.search_runs(["0"]) == []  # nothing committed without its files
        failing.clear()
        assert pcs.flush(60)
    runs = stock.search_runs(["0"], max_results=100)
    assert sorted(int(r.data.params["arg.x"]) for r in runs) == list(range(10))
    for run in runs:
        names = {a.path for a in stock.list_artifacts(run.info.run_id)}
        names.discard("pcs.environment")  # the environment plugin's, on the first run
        assert names == {"pcs.run_command_registry.yaml", "pcs.return_value.json"}
    assert any("No space left on device" in r.getMessage() for r in caplog.records)


def test_store_read_only_at_start_is_retried_with_a_new_connection(
    monkeypatch: pytest.MonkeyPatch, tracking_uri: str
) -> None:
    """SQLite keeps a database read-only through the connection that opened it so (root
    ignores file modes, so the first connection is opened read-only on purpose): the
    writer reopens the store while it retries, and everything arrives."""
    import sqlite3

    from mlflow.tracking import MlflowClient

    real_connect = sqlite_sink._connect
    opened: list[str] = []

    def connect(uri: str) -> sqlite3.Connection:
        if len(opened) < 2:  # the schema check's connection, then the writer's
            opened.append("ro")
            path = sqlite_path(uri)
            return sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False)
        opened.append("rw")
        return real_connect(uri)

    monkeypatch.setattr(sqlite_sink, "_connect", connect)

    @pcs.tracked
    def add(a: int, b: int) -> int:
        return a + b

    assert [add(i, 1) for i in range(5)] == [1, 2, 3, 4, 5]
    assert pcs.flush(120)
    assert opened[:2] == ["ro", "ro"]
    assert "rw" in opened
    runs = MlflowClient(tracking_uri=tracking_uri).search_runs(["0"])
    assert sorted(int(r.data.params["arg.a"]) for r in runs) == [0, 1, 2, 3, 4]
