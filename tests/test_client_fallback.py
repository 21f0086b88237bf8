"""The MLflow-client delivery path (used for http:// servers, PostgreSQL, MySQL ...).

Forced here on the test's real SQLite store, so the same behaviour is checked
through the stock client that the fast path bypasses.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import parent_of
from mlflow.tracking import MlflowClient

import pcs
from pcs import _backend
from pcs.component_run import ComponentRun


@pytest.fixture(autouse=True)
def client_mode(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def detect(backend: _backend.Backend) -> str:
        backend.client  # noqa: B018
        return "client"

    monkeypatch.setattr(_backend, "_detect_mode", detect)
    _backend.reset_backends()
    yield
    assert _backend.get_backend().mode == "client"


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
