"""Replay of tracked functions: rerun, compare, RunCommand.run, code drift, missing code."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import stored_runs
from mlflow.tracking import MlflowClient
from replay_support import CodeDir

import pcs
from pcs.component_run import ComponentRun

SOURCE = """
import pcs

COUNT = [0]


@pcs.tracked
def fit(lr: float, epochs: int = 3) -> float:
    return lr * epochs


@pcs.tracked
def tick() -> int:
    COUNT[0] += 1
    return COUNT[0]


@pcs.tracked
def boom(x: int) -> int:
    raise ValueError(f"bad {x}")
"""

DRIFTED = SOURCE.replace("return lr * epochs", "return lr * epochs * 2")


@pytest.fixture
def code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CodeDir]:
    folder = CodeDir(tmp_path / "code", monkeypatch)
    yield folder
    folder.cleanup()


def record_fit(code: CodeDir, lr: float = 0.5) -> tuple[str, ComponentRun]:
    name = code.write(SOURCE)
    code.load(name).fit(lr)
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    return name, run


def test_rerun_is_a_new_tracked_run_linked_to_the_original(client: MlflowClient,
                                                           code: CodeDir) -> None:
    _, run = record_fit(code)
    new = run.rerun()
    assert isinstance(new, ComponentRun)
    assert new.identifier != run.identifier
    assert pcs.last_run() == new
    assert new.return_value == 1.5
    stored = client.get_run(new.identifier)
    original = client.get_run(run.identifier)
    assert stored.info.status == "FINISHED"
    assert stored.data.tags["pcs.rerun_of"] == run.identifier
    assert stored.data.tags["pcs.reproduced"] == "True"
    assert stored.data.tags["pcs.is_component_run"] == "True"
    assert stored.data.tags["pcs.run_command_id"] == original.data.tags["pcs.run_command_id"]
    assert stored.data.params == {"arg.lr": "0.5", "arg.epochs": "3"}
    assert "mlflow.parentRunId" not in stored.data.tags
    assert "pcs.rerun_of" not in original.data.tags


def test_rerun_nests_under_the_active_run(client: MlflowClient, code: CodeDir) -> None:
    _, run = record_fit(code)
    with pcs.run("replays") as outer:
        new = run.rerun()
        assert pcs.active_run() == outer
    assert client.get_run(new.identifier).data.tags["mlflow.parentRunId"] == outer.identifier


def test_rerun_from_a_handle_read_back_from_the_store(client: MlflowClient,
                                                      code: CodeDir) -> None:
    _, run = record_fit(code)
    pcs.flush()
    handle = ComponentRun.from_existing_run_id(run.identifier)
    new = handle.rerun()
    stored = client.get_run(new.identifier)
    assert stored.data.tags["pcs.rerun_of"] == run.identifier
    assert stored.data.tags["pcs.reproduced"] == "True"


def test_compare_identical_and_different_runs(client: MlflowClient, code: CodeDir) -> None:
    name, run = record_fit(code)
    same = run.rerun()
    comparison = run.compare(same)
    assert comparison.same_arguments
    assert comparison.same_code
    assert comparison.same_status
    assert comparison.same_return_value is True
    assert comparison.reproduced is True
    assert comparison.differences == ()

    code.load(name).fit(0.25)
    other = pcs.last_run()
    assert isinstance(other, ComponentRun)
    diff = pcs.compare(run, other)
    assert [d.what for d in diff.arguments] == ["fit.fit(lr)"]
    assert (diff.arguments[0].left, diff.arguments[0].right) == (0.5, 0.25)
    assert diff.same_code
    assert diff.same_status
    assert diff.return_value is not None
    assert (diff.return_value.left, diff.return_value.right) == (1.5, 0.75)
    assert diff.same_return_value is False
    assert diff.reproduced is False
    summary = diff.to_dict()
    json.dumps(summary)
    assert summary["reproduced"] is False
    assert "fit.fit(lr): 0.5 != 0.25" in str(diff)


def test_compare_types_exactly(code: CodeDir) -> None:
    name, run = record_fit(code, lr=1)
    code.load(name).fit(1.0)
    other = pcs.last_run()
    assert isinstance(other, ComponentRun)
    diff = run.compare(other)
    assert not diff.same_arguments  # 1 and 1.0 are different arguments
    assert diff.same_return_value is False  # 3 and 3.0 are different results


def test_a_different_result_is_not_reproduced(client: MlflowClient, code: CodeDir) -> None:
    name = code.write(SOURCE)
    code.load(name).tick()
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    new = run.rerun()
    assert client.get_run(new.identifier).data.tags["pcs.reproduced"] == "False"
    comparison = run.compare(new)
    assert comparison.return_value is not None
    assert (comparison.return_value.left, comparison.return_value.right) == (1, 2)


def test_code_drift_is_refused_with_a_diff(client: MlflowClient, code: CodeDir) -> None:
    name, run = record_fit(code)
    code.rewrite(name, DRIFTED)
    before = len(stored_runs(client))
    with pytest.raises(pcs.CodeDriftError) as caught:
        run.rerun()
    err = caught.value
    assert isinstance(err, pcs.ReplayError)
    assert err.run_id == run.identifier
    assert err.path == f"{name}:fit"
    assert "-    return lr * epochs\n" in err.diff
    assert "+    return lr * epochs * 2\n" in err.diff
    message = str(err)
    assert f"{name}:fit" in message
    assert run.identifier in message
    assert "source changed" in message
    assert "allow_code_drift=True" in message
    assert err.diff in message
    assert len(stored_runs(client)) == before  # nothing ran


def test_allow_code_drift_runs_the_current_code_and_records_the_drift(
    client: MlflowClient, code: CodeDir, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    name, run = record_fit(code)
    code.rewrite(name, DRIFTED)
    with caplog.at_level(logging.WARNING, logger="pcs"):
        new = run.rerun(allow_code_drift=True)
    assert any("code drift" in r.getMessage() and f"{name}:fit" in r.getMessage()
               for r in caplog.records)
    assert new.return_value == 3.0
    stored = client.get_run(new.identifier)
    assert stored.data.tags["pcs.code_drift"] == "True"
    assert stored.data.tags["pcs.rerun_of"] == run.identifier
    assert stored.data.tags["pcs.reproduced"] == "False"
    local = client.download_artifacts(new.identifier, "pcs.code_drift.diff", str(tmp_path))
    text = Path(local).read_text()
    assert "source changed" in text
    assert "+    return lr * epochs * 2" in text
    comparison = run.compare(new)
    assert [d.what for d in comparison.code] == ["source_sha256"]
    assert "+    return lr * epochs * 2" in comparison.source_diff


def test_a_module_that_no_longer_exists(code: CodeDir) -> None:
    name, run = record_fit(code)
    code.delete(name)
    with pytest.raises(pcs.ReplayError, match=f"module '{name}' no longer exists") as caught:
        run.rerun()
    assert not isinstance(caught.value, pcs.CodeDriftError)
    assert run.identifier in str(caught.value)


def test_a_callable_that_no_longer_exists(code: CodeDir) -> None:
    name, run = record_fit(code)
    code.rewrite(name, SOURCE.replace("def fit(", "def fit_renamed("))
    with pytest.raises(pcs.ReplayError, match="has no attribute 'fit' any more"):
        run.rerun()


def test_a_failing_call_is_replayed_and_its_error_reraised(client: MlflowClient,
                                                          code: CodeDir) -> None:
    name = code.write(SOURCE)
    with pytest.raises(ValueError, match="bad 1"):
        code.load(name).boom(1)
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    with pytest.raises(ValueError, match="bad 1"):
        run.rerun()
    new = pcs.last_run()
    assert isinstance(new, ComponentRun)
    assert new != run
    stored = client.get_run(new.identifier)
    assert stored.info.status == "FAILED"
    assert stored.data.tags["pcs.rerun_of"] == run.identifier
    assert stored.data.tags["pcs.reproduced"] == "True"  # the same failure
    again = run.rerun(reraise=False)
    assert client.get_run(again.identifier).info.status == "FAILED"


def test_run_command_run_and_from_registry(client: MlflowClient, code: CodeDir) -> None:
    _, run = record_fit(code)
    command = run.run_command
    registry = command.to_registry()
    loaded = pcs.RunCommand.from_registry(registry, command.identifier)
    assert loaded == command
    assert hash(loaded) == hash(command)
    assert loaded.to_spec() == command.to_spec()
    new = loaded.run()
    assert isinstance(new, ComponentRun)
    assert new.return_value == 1.5
    stored = client.get_run(new.identifier)
    assert stored.data.tags["pcs.run_command_id"] == command.identifier
    assert "pcs.rerun_of" not in stored.data.tags
