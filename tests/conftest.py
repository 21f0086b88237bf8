"""Every test gets its own real MLflow SQLite store in a temporary directory.

Creating an MLflow SQLite schema runs all of MLflow's migrations (about a
second), so one template store is made per session and copied for each test;
its default experiment is pointed at the test's own artifact folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pcs import _store


@pytest.fixture(scope="session")
def template_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(autouse=True)
def tracking_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, template_store: Path
) -> Iterator[str]:
    """A fresh SQLite store for this test, set as MLFLOW_TRACKING_URI, cwd = tmp_path."""
    from replay_support import make_store

    uri = make_store(template_store, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    _store.reset_backends()
    yield uri
    _store.close_all(timeout=5)  # as at exit; a test's unreachable store costs 5 s at most
    _store.reset_backends()


class FlushingClient:
    """A stock MlflowClient that calls ``pcs.flush()`` before each call.

    pcs writes in the background; ``pcs.flush()`` is its documented way to wait
    until everything recorded so far is in the store. After that, what the
    stock client reads is exactly what pcs wrote.
    """

    def __init__(self, client: object) -> None:
        self._client = client

    def __getattr__(self, name: str) -> object:
        import pcs

        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: object, **kwargs: object) -> object:
            assert pcs.flush(timeout=60), "pcs.flush() timed out"
            return attr(*args, **kwargs)

        return call


@pytest.fixture
def client(tracking_uri: str):  # type: ignore[no-untyped-def]
    """A stock MLflow client on the test's store (flushing pcs's writer before each call)."""
    from mlflow.tracking import MlflowClient

    return FlushingClient(MlflowClient(tracking_uri=tracking_uri))


def stored_runs(client) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Every run of every experiment in the store, by run id (read with stock MLflow)."""
    ids = [e.experiment_id for e in client.search_experiments()]
    out: dict[str, object] = {}
    token = None
    while True:
        page = client.search_runs(ids, max_results=1000, page_token=token)
        out.update((r.info.run_id, r) for r in page)
        token = page.token
        if not token:
            return out


def parent_of(client, run_id: str) -> str | None:  # type: ignore[no-untyped-def]
    """The ``mlflow.parentRunId`` tag of a run, as MLflow stored it."""
    return client.get_run(run_id).data.tags.get("mlflow.parentRunId")


@pytest.fixture(autouse=True)
def fresh_run_context() -> Iterator[None]:
    """Each test starts with an empty run stack and no last run (pytest shares one context)."""
    from pcs import _stack

    _stack.reset_env_root()
    stack_token = _stack._stack.set(())
    last_token = _stack._last.set(None)
    yield
    _stack._last.reset(last_token)
    _stack._stack.reset(stack_token)
