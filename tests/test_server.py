"""pcs against a real ``mlflow server`` on the loopback interface (the client path).

The server runs in a child process with its own SQLite database and artifact
root (``--artifacts-destination``: artifacts go through the server). pcs talks
to it over HTTP, as it would to a shared tracking server; everything is read
back with a stock ``MlflowClient``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from server_support import Server

import pcs
from pcs import _store
from pcs.component_run import ComponentRun

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    root = tmp_path / "server"
    root.mkdir()
    srv = Server(root)
    srv.start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", srv.url)
    _store.reset_backends()
    try:
        yield srv
    finally:
        pcs.flush(timeout=30)
        srv.stop()


@pcs.tracked
def scale(x: int, factor: float = 0.5) -> float:
    return x * factor


def _calls(client: MlflowClient) -> list[object]:
    runs = client.search_runs(["0"], max_results=1000)
    return [r for r in runs if r.data.tags.get("pcs.entry_point") == "scale"]  # type: ignore[attr-defined]


def test_tracked_calls_land_on_a_real_server(server: Server) -> None:
    assert _store.get_backend().mode == "client"
    with pcs.run("on-server", params={"p": 1}) as outer:
        values = [scale(i) for i in range(30)]
        outer.log_metric("m", 2.5)
    assert values == [i * 0.5 for i in range(30)]
    assert pcs.flush(120)
    client = MlflowClient(tracking_uri=server.url)
    root = client.get_run(outer.identifier)
    assert root.info.status == "FINISHED"
    assert root.info.end_time is not None
    assert root.data.params == {"p": "1"}
    assert root.data.metrics == {"m": 2.5}
    calls = _calls(client)
    assert sorted(int(c.data.params["arg.x"]) for c in calls) == list(range(30))  # type: ignore[attr-defined]
    for call in calls:
        info, data = call.info, call.data  # type: ignore[attr-defined]
        assert info.status == "FINISHED"
        assert info.end_time >= info.start_time
        assert data.tags["mlflow.parentRunId"] == outer.identifier
        assert data.tags["pcs.local_run_id"].startswith("pcs-local-")
        names = {a.path for a in client.list_artifacts(info.run_id)}
        assert names == {"pcs.run_command_registry.yaml", "pcs.return_value.json"}
        stored = ComponentRun.from_existing_run_id(info.run_id)
        assert stored.return_value == int(data.params["arg.x"]) * 0.5
        assert stored.run_command.entry_point == "scale"
    assert outer._run_id.startswith("pcs-local-")  # recorded under a local id ...
    assert root.data.tags["pcs.local_run_id"] == outer._run_id  # ... that MLflow's run names
    assert not outer.identifier.startswith("pcs-local-")


def test_server_down_then_back_delivers_everything_once(
    server: Server, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PCS_STALL_SECONDS", "2")  # MLflow itself retries for minutes ...
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")  # ... here for ~7 s, then
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")  # pcs's own retries take over
    _store.reset_backends()
    client = MlflowClient(tracking_uri=server.url)
    with caplog.at_level(logging.WARNING, logger="pcs"):
        with pcs.run("outage") as outer:
            assert [scale(i) for i in range(10)] == [i * 0.5 for i in range(10)]
            assert pcs.flush(120)
            root = outer.identifier
            server.stop()
            assert [scale(i) for i in range(10, 25)] == [i * 0.5 for i in range(10, 25)]
        assert not pcs.flush(timeout=4)  # the server is down: not everything is delivered
        server.start()
        assert pcs.flush(180)
    warnings = [r for r in caplog.records if "cannot write to the tracking store" in r.getMessage()]
    assert len(warnings) == 1
    calls = _calls(client)
    assert sorted(int(c.data.params["arg.x"]) for c in calls) == list(range(25))  # type: ignore[attr-defined]
    assert {c.data.tags["mlflow.parentRunId"] for c in calls} == {root}  # type: ignore[attr-defined]
    assert {c.info.status for c in calls} == {"FINISHED"}  # type: ignore[attr-defined]
    assert client.get_run(root).info.status == "FINISHED"
    assert len(client.search_runs(["0"], max_results=1000)) == 26  # exactly once each


class _Box:
    def __init__(self, value: float) -> None:
        self.value = value


@pcs.tracked
def box(x: float) -> _Box:
    return _Box(x)


@pcs.tracked
def unbox(item: _Box, items: list[_Box]) -> float:
    return item.value + sum(i.value for i in items)


def test_lineage_tags_name_mlflows_run_ids_on_a_server(server: Server) -> None:
    """Runs are recorded under local ids on a server; the lineage tags get MLflow's."""
    with pcs.run("lineage"):
        first, second = box(1.0), box(2.0)
        producers = [pcs.last_run()]
        assert unbox(first, [second]) == 3.0
        consumer = pcs.last_run()
    assert consumer is not None
    assert pcs.flush(120)
    client = MlflowClient(tracking_uri=server.url)
    tags = client.get_run(consumer.identifier).data.tags
    boxes = client.search_runs(["0"], "attributes.run_name LIKE 'box%'")
    ids = sorted(r.info.run_id for r in boxes)
    assert tags["pcs.inputs_from"] == ",".join(ids)
    assert "pcs-local-" not in tags["pcs.inputs"]
    assert sorted(json.loads(tags["pcs.inputs"]).values()) == ids
    assert producers[0] is not None
    assert producers[0].identifier in ids
