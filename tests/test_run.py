"""The seed API of ``pcs.Run`` against a real SQLite store, read back with stock MLflow."""

from __future__ import annotations

import inspect
import logging
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

import pcs
from pcs import Run, _store


def test_constants() -> None:
    assert Run.DEFAULT_EXPERIMENT_ID == "0"
    assert Run.PCS_RUN_TAG == "pcs.is_run"
    assert Run.PASS_THROUGH_FN_PREFIXES == [
        "log",
        "set_tag",
        "list_artifacts",
        "search_runs",
        "set_terminated",
        "download_artifacts",
    ]


def test_new_run_is_tagged_and_running(client: MlflowClient) -> None:
    run = Run()
    stored = client.get_run(run.identifier)
    assert stored.info.status == "RUNNING"
    assert stored.info.experiment_id == "0"
    assert stored.data.tags["pcs.is_run"] == "True"
    assert run.info.run_id == run.identifier
    run.end()
    assert client.get_run(run.identifier).info.status == "FINISHED"


def test_new_run_in_other_experiment(client: MlflowClient) -> None:
    exp = client.create_experiment("other")
    run = Run(experiment_id=exp)
    assert client.get_run(run.identifier).info.experiment_id == exp
    assert run.experiment_id == exp


def test_wrap_existing_run(client: MlflowClient) -> None:
    raw = client.create_run("0")
    run = Run(existing_run_id=raw.info.run_id)
    assert run.identifier == raw.info.run_id
    run.log_metric("m", 2.0)
    assert client.get_run(raw.info.run_id).data.metrics == {"m": 2.0}
    assert Run.from_existing_run_id(raw.info.run_id) == run


def test_unknown_run_id_names_id_and_uri(tracking_uri: str) -> None:
    with pytest.raises(pcs.RunNotFoundError) as err:
        Run(existing_run_id="0123456789abcdef0123456789abcdef")
    assert "0123456789abcdef0123456789abcdef" in str(err.value)
    assert tracking_uri in str(err.value)
    assert err.value.tracking_uri == tracking_uri
    assert isinstance(err.value, pcs.PcsError)


def test_both_new_and_existing_is_an_error() -> None:
    existing = Run()
    with pytest.raises(pcs.UsageError, match="existing_run_id"):
        Run(experiment_id="0", existing_run_id=existing.identifier)


def test_run_exists() -> None:
    run = Run()
    assert Run.run_exists(run.identifier)
    assert not Run.run_exists("ffffffffffffffffffffffffffffffff")


def test_data_and_info_are_fresh(client: MlflowClient) -> None:
    run = Run()
    run.log_param("p", 1)
    run.set_tag("t", "v")
    assert run.data.params == {"p": "1"}
    assert run.data.tags["t"] == "v"
    assert run.info.status == "RUNNING"


def test_context_manager_finished(client: MlflowClient) -> None:
    with Run() as run:
        run.log_metric("loss", 0.5)
    stored = client.get_run(run.identifier)
    assert stored.info.status == "FINISHED"
    assert stored.info.end_time is not None
    assert stored.data.metrics == {"loss": 0.5}


def test_context_manager_failed_reraises_same_object(client: MlflowClient) -> None:
    boom = ValueError("boom")
    with pytest.raises(ValueError) as err, Run() as run:
        raise boom
    assert err.value is boom
    stored = client.get_run(run.identifier)
    assert stored.info.status == "FAILED"
    assert stored.data.tags["pcs.error.type"] == "builtins.ValueError"
    paths = [f.path for f in client.list_artifacts(run.identifier)]
    assert "pcs.traceback.txt" in paths


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (KeyboardInterrupt(), "KILLED"),
        (SystemExit(0), "FINISHED"),
        (SystemExit(2), "FAILED"),
        (RuntimeError("x"), "FAILED"),
    ],
    ids=["keyboard-interrupt", "exit-0", "exit-2", "runtime-error"],
)
def test_status_for_each_ending(client: MlflowClient, exc: BaseException, status: str) -> None:
    with pytest.raises(type(exc)), Run() as run:
        raise exc
    assert client.get_run(run.identifier).info.status == status


def test_end_with_status_and_twice(client: MlflowClient) -> None:
    run = Run()
    run.end("KILLED")
    run.end("FINISHED")
    assert client.get_run(run.identifier).info.status == "KILLED"


def test_end_bad_status() -> None:
    run = Run()
    with pytest.raises(pcs.UsageError, match="RUNNING"):
        run.end("RUNNING")


def test_pass_through_logging(client: MlflowClient, tmp_path: Path) -> None:
    run = Run()
    run.log_metric("acc", 0.9, step=3)
    run.log_param("lr", 0.01)
    run.log_params({"a": 1, "b": "x"})
    run.log_metrics({"m1": 1.0, "m2": 2.0})
    run.set_tag("stage", "dev")
    run.set_tags({"k": "v"})
    run.log_batch(
        metrics=[Metric("bm", 5.0, 0, 0)], params=[Param("bp", "7")], tags=[RunTag("bt", "8")]
    )
    run.log_dict({"x": [1, 2]}, "d/conf.json")
    run.log_text("hello", "notes.txt")
    f = tmp_path / "file.txt"
    f.write_text("content")
    run.log_artifact(str(f), "files")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.txt").write_text("A")
    run.log_artifacts(str(folder), "many")
    stored = client.get_run(run.identifier)
    assert stored.data.metrics == {"acc": 0.9, "m1": 1.0, "m2": 2.0, "bm": 5.0}
    assert stored.data.params == {"lr": "0.01", "a": "1", "b": "x", "bp": "7"}
    assert stored.data.tags["stage"] == "dev"
    assert stored.data.tags["k"] == "v"
    assert stored.data.tags["bt"] == "8"
    assert [m.step for m in client.get_metric_history(run.identifier, "acc")] == [3]
    top = sorted(i.path for i in run.list_artifacts())
    assert top == ["d", "files", "many", "notes.txt"]
    assert [i.path for i in run.list_artifacts("files")] == ["files/file.txt"]
    local = run.download_artifacts("notes.txt", str(tmp_path))
    assert Path(local).read_text() == "hello"
    assert client.get_run(run.identifier).data.tags["pcs.is_run"] == "True"


def test_set_terminated_and_search_runs(client: MlflowClient) -> None:
    run = Run()
    other = Run()
    other.set_tag("pick", "me")
    run.set_terminated("FAILED")
    assert client.get_run(run.identifier).info.status == "FAILED"
    found = run.search_runs("tags.pick = 'me'")
    assert [r.info.run_id for r in found] == [other.identifier]


def test_every_pass_through_client_method_exists_on_run() -> None:
    """Every MlflowClient method with a pass-through prefix that takes run_id first."""
    missing = []
    for name, fn in inspect.getmembers(MlflowClient, inspect.isfunction):
        if not any(name.startswith(p) for p in Run.PASS_THROUGH_FN_PREFIXES):
            continue
        params = list(inspect.signature(fn).parameters)
        takes_run_id = name == "search_runs" or (len(params) > 1 and params[1] == "run_id")
        if takes_run_id and not callable(getattr(Run, name, None)):
            missing.append(name)
    assert missing == []


def test_unknown_attribute_names_class() -> None:
    run = Run()
    with pytest.raises(AttributeError, match="Run"):
        run.log_nonsense  # noqa: B018


def test_get_all_runs_only_pcs_newest_first(client: MlflowClient) -> None:
    client.create_run("0")  # not a pcs run
    exp = client.create_experiment("second")
    first = Run()
    time.sleep(0.002)  # start times are in milliseconds: "newest" must be well defined
    second = Run(experiment_id=exp)
    time.sleep(0.002)
    third = Run()
    ids = [r.identifier for r in Run.get_all_runs()]
    assert ids == [third.identifier, second.identifier, first.identifier]


def test_print_status_and_all(capsys: pytest.CaptureFixture[str]) -> None:
    with Run() as run:
        run.set_tag("team", "vision")
    run.print_status()
    out = capsys.readouterr().out
    assert run.identifier in out
    assert "FINISHED" in out
    assert "team = vision" in out
    assert "pcs.is_run = True" in out
    assert "mlflow.runName" not in out
    run.print_status(detailed=True)
    detailed = capsys.readouterr().out
    assert "experiment_id" in detailed
    Run.print_all_status()
    everything = capsys.readouterr().out
    assert "1 pcs run(s)" in everything
    assert run.identifier in everything


def test_to_spec_nested_and_flat() -> None:
    with Run() as run:
        run.log_param("p", "v")
        run.log_metric("m", 1.5)
    nested = run.to_spec()
    assert list(nested) == [run.identifier]
    fields = nested[run.identifier]
    assert fields["status"] == "FINISHED"
    assert fields["params"] == {"p": "v"}
    assert fields["metrics"] == {"m": 1.5}
    flat = run.to_spec(flatten=True)
    assert flat["identifier"] == run.identifier
    assert {k: v for k, v in flat.items() if k != "identifier"} == fields


def test_to_registry_identical_is_fine_different_conflicts() -> None:
    with Run() as run:
        run.log_param("p", "v")
    registry = run.to_registry()
    assert run.to_registry(registry) is registry
    run.set_tag("late", "change")
    with pytest.raises(pcs.SpecConflictError) as err:
        run.to_registry(registry)
    assert "late" in str(err.value)
    run.to_registry(registry, force=True)
    assert registry.get_run_spec(run.identifier)[run.identifier]["tags"]["late"] == "change"


def test_to_registry_with_artifacts_round_trip_yaml(tmp_path: Path) -> None:
    with Run() as run:
        run.log_text("some text", "dir/a.txt")
        run.log_dict({"k": 1}, "b.json")
    registry = run.to_registry(include_artifacts=True)
    path = tmp_path / "reg.yaml"
    registry.to_yaml(str(path))
    loaded = pcs.Registry.from_yaml(str(path))
    spec = loaded.get_run_spec(run.identifier)[run.identifier]
    arts = {a["path"]: a for a in spec["artifacts"]}
    assert set(arts) == {"dir/a.txt", "b.json"}
    assert loaded.get_artifact(arts["dir/a.txt"]["digest"]) == b"some text"
    assert Run.from_registry(loaded, run.identifier) == run


def test_from_registry_missing_spec_and_missing_run() -> None:
    with pytest.raises(pcs.SpecNotFoundError):
        Run.from_registry(pcs.InMemoryRegistry(), "abc")
    run = Run()
    registry = run.to_registry()
    spec = dict(registry.get_run_spec(run.identifier)[run.identifier])
    del spec["spec_hash"]  # the hash covers the id: re-filed under another id, it is new
    other = pcs.InMemoryRegistry()
    other.add_run_spec({"ffffffffffffffffffffffffffffffff": spec})
    with pytest.raises(pcs.RunNotFoundError):
        Run.from_registry(other, "ffffffffffffffffffffffffffffffff")


def test_run_pickles_to_handle(client: MlflowClient) -> None:
    run = Run()
    blob = pickle.dumps(run)
    assert len(blob) < 300
    again = pickle.loads(blob)
    assert again == run
    again.log_metric("from_copy", 1.0)
    assert client.get_run(run.identifier).data.metrics == {"from_copy": 1.0}


def test_store_under_missing_directory_is_a_pcs_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pcs import _store

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{_blocked(tmp_path)}/mlflow.db")
    _store.reset_backends()
    run = Run()  # creating a run never waits for the store
    run.end()
    with pytest.raises(pcs.StoreError, match="MLFLOW_TRACKING_URI") as err:
        run.info  # noqa: B018 - a read says what is wrong, within seconds
    assert "not delivered yet" in str(err.value)


def test_import_pcs_does_not_import_mlflow() -> None:
    code = "import sys, pcs; print('mlflow' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def _blocked(tmp_path: Path) -> Path:
    """A directory path that cannot be created: its parent is a regular file."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    return blocker / "store"


def test_non_finite_metrics_are_stored_like_mlflow(client: MlflowClient) -> None:
    import math

    run = Run()
    run.log_metric("nan", float("nan"))
    run.log_metrics({"inf": float("inf"), "ninf": float("-inf")})
    metrics = client.get_run(run.identifier).data.metrics
    assert math.isnan(metrics["nan"])
    assert metrics["inf"] > 1e300
    assert metrics["ninf"] < -1e300
    with pytest.raises(pcs.UsageError, match="must be a number"):
        run.log_metric("bad", "abc")  # type: ignore[arg-type]


def test_unknown_experiment_is_a_clear_error_at_delivery(
    tracking_uri: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Creating a run never asks the store; a missing experiment is reported once, at
    delivery, and the records are kept in a journal for `pcs recover`."""
    with caplog.at_level(logging.ERROR, logger="pcs"):
        first = Run(experiment_id="987654")
        first.log_param("a", "1")
        first.end()
        with pcs.run("second", experiment_id="987654"):
            pass
        ok = Run()
        ok.end()
        assert pcs.flush(timeout=30)
    errors = [r.getMessage() for r in caplog.records if "987654" in r.getMessage()]
    assert len(errors) == 1, errors
    assert "restore_experiment" in errors[0]
    assert "pcs recover" in errors[0]
    client = MlflowClient(tracking_uri=tracking_uri)
    assert client.get_run(ok.identifier).info.status == "FINISHED"  # others are delivered
    pcs.flush()
    _store.get_backend().writer.close()  # as at exit: the set-aside journal stays
    kept = [p for p in (tmp_path / ".pcs" / "journal").glob("*.jsonl")
            if first._run_id.encode() in p.read_bytes()]
    assert len(kept) == 1
