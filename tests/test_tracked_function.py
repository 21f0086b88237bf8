"""@pcs.tracked on plain functions: the ComponentRun as stock MLflow sees it."""

from __future__ import annotations

import functools
import inspect
import json
import threading
from pathlib import Path

import pytest
from conftest import parent_of
from mlflow.tracking import MlflowClient

import pcs
from pcs.component_run import ComponentRun


@pcs.tracked
def fit(lr: float, epochs: int = 3, *extra: int, **options: str) -> float:
    """Fit something."""
    return lr * epochs


def test_metadata_is_preserved() -> None:
    assert fit.__name__ == "fit"
    assert fit.__doc__ == "Fit something."
    assert fit.__wrapped__.__name__ == "fit"
    assert str(inspect.signature(fit)) == str(inspect.signature(fit.__wrapped__))
    assert not inspect.iscoroutinefunction(fit)


def test_component_run_in_mlflow(client: MlflowClient) -> None:
    assert fit(0.5) == 1.5
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    stored = client.get_run(run.identifier)
    tags = stored.data.tags
    assert stored.info.status == "FINISHED"
    assert tags["pcs.is_run"] == "True"
    assert tags["pcs.is_component_run"] == "True"
    assert tags["pcs.entry_point"] == "fit"
    assert tags["mlflow.runName"] == "fit(lr=0.5)"  # see pcs._naming
    assert tags["pcs.run_command_id"] == run.run_command.identifier
    assert tags["pcs.reproducible"] == "True"
    assert stored.data.params == {
        "arg.lr": "0.5",
        "arg.epochs": "3",
        "arg.extra": "()",
        "arg.options": "{}",
    }
    paths = {f.path for f in client.list_artifacts(run.identifier)}
    assert {"pcs.run_command_registry.yaml", "pcs.return_value.json"} <= paths
    raw = Path(client.download_artifacts(run.identifier, "pcs.return_value.json")).read_text()
    assert json.loads(raw)["plain"] == 1.5


def test_bound_arguments_defaults_varargs_kwargs() -> None:
    fit(0.1, 2, 7, 8, mode="fast")
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    args = run.run_command.argument_set.get_function_args("fit", "fit")
    assert dict(args) == {"lr": 0.1, "epochs": 2, "extra": (7, 8), "options": {"mode": "fast"}}


def test_same_arguments_same_run_command_any_spelling() -> None:
    fit(0.1, 3)
    first = pcs.last_run()
    fit(epochs=3, lr=0.1)
    second = pcs.last_run()
    fit(0.1)
    third = pcs.last_run()
    fit(0.2)
    other = pcs.last_run()
    assert isinstance(first, ComponentRun)
    assert isinstance(second, ComponentRun)
    assert isinstance(third, ComponentRun)
    assert isinstance(other, ComponentRun)
    assert first.identifier != second.identifier
    assert first.run_command == second.run_command == third.run_command
    assert first.run_command != other.run_command


def test_run_command_read_back_from_store() -> None:
    fit(0.25, 4)
    recorded = pcs.last_run()
    assert isinstance(recorded, ComponentRun)
    fresh = ComponentRun.from_existing_run_id(recorded.identifier)
    assert isinstance(fresh, ComponentRun)
    assert fresh.run_command == recorded.run_command
    assert fresh.run_command.component.qualname == "fit"
    assert fresh.run_command.component.module == __name__
    assert fresh.return_value == 1.0
    assert fresh.is_reproducible


def test_code_identity_recorded() -> None:
    fit(1.0)
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    component = run.run_command.component
    assert component.source_file == __file__
    assert component.source is not None
    assert "def fit(" in component.source
    assert component.source_sha256 is not None
    assert len(component.source_sha256) == 64


def test_nested_under_active_run_and_tracked_calls_nest(client: MlflowClient) -> None:
    @pcs.tracked
    def outer(n: int) -> int:
        return inner(n) + inner(n + 1)

    @pcs.tracked
    def inner(n: int) -> int:
        return n * 10

    with pcs.run("block") as block:
        assert outer(1) == 30
        outer_run = pcs.last_run()
    assert outer_run is not None
    assert parent_of(client, outer_run.identifier) == block.identifier
    children = client.search_runs(
        ["0"], f"tags.`mlflow.parentRunId` = '{outer_run.identifier}'"
    )
    assert sorted(c.data.params["arg.n"] for c in children) == ["1", "2"]
    assert all(c.data.tags["mlflow.runName"].split("(")[0].endswith("inner") for c in children)


def test_recursion_nests(client: MlflowClient) -> None:
    @pcs.tracked
    def countdown(n: int) -> int:
        return 0 if n == 0 else 1 + countdown(n - 1)

    assert countdown(3) == 3
    top = pcs.last_run()
    assert top is not None
    depth, current = 0, top.identifier
    while True:
        kids = client.search_runs(["0"], f"tags.`mlflow.parentRunId` = '{current}'")
        if not kids:
            break
        assert len(kids) == 1
        current = kids[0].info.run_id
        depth += 1
    assert depth == 3


def test_exception_passes_through_unchanged(client: MlflowClient) -> None:
    boom = ZeroDivisionError("nope")

    @pcs.tracked
    def explode() -> None:
        raise boom

    with pytest.raises(ZeroDivisionError) as err:
        explode()
    assert err.value is boom
    run = pcs.last_run()
    assert run is not None
    stored = client.get_run(run.identifier)
    assert stored.info.status == "FAILED"
    assert stored.data.tags["pcs.error.type"] == "builtins.ZeroDivisionError"
    text = Path(client.download_artifacts(run.identifier, "pcs.traceback.txt")).read_text()
    assert "ZeroDivisionError: nope" in text


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (KeyboardInterrupt(), "KILLED"),
        (SystemExit(0), "FINISHED"),
        (SystemExit(None), "FINISHED"),
        (SystemExit(3), "FAILED"),
        (ValueError(), "FAILED"),
    ],
    ids=["keyboard-interrupt", "exit-0", "exit-none", "exit-3", "value-error"],
)
def test_status_for_each_ending(client: MlflowClient, exc: BaseException, status: str) -> None:
    @pcs.tracked
    def end_with() -> None:
        raise exc

    with pytest.raises(type(exc)) as raised:
        end_with()
    assert raised.value is exc
    run = pcs.last_run()
    assert run is not None
    assert client.get_run(run.identifier).info.status == status


def test_return_value_object_untouched() -> None:
    marker = object()
    payload = {"a": [1, 2], "m": marker}

    @pcs.tracked
    def give() -> dict[str, object]:
        return payload

    assert give() is payload
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    assert run.return_value is payload


def test_falsy_return_value_logged_once(client: MlflowClient) -> None:
    @pcs.tracked
    def zero() -> int:
        return 0

    assert zero() == 0
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    assert ComponentRun.from_existing_run_id(run.identifier).return_value == 0
    paths = [f.path for f in client.list_artifacts(run.identifier)]
    assert paths.count("pcs.return_value.json") == 1


@pytest.mark.parametrize("fmt", ["json", "yaml", "pickle"])
def test_return_formats(fmt: str, client: MlflowClient) -> None:
    @pcs.tracked(return_format=fmt)
    def give() -> tuple[int, float, str]:
        return (1, 2.5, "x")

    give()
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    paths = [f.path for f in client.list_artifacts(run.identifier)]
    assert f"pcs.return_value.{fmt}" in paths
    fresh = ComponentRun.from_existing_run_id(run.identifier)
    assert isinstance(fresh, ComponentRun)
    if fmt == "pickle":
        with pytest.raises(pcs.UntrustedPickleError, match="trust=True"):
            fresh.load_return_value()
        assert fresh.load_return_value(trust=True) == (1, 2.5, "x")
    else:
        assert fresh.load_return_value() == (1, 2.5, "x")


def test_log_return_value_false(client: MlflowClient) -> None:
    @pcs.tracked(log_return_value=False, name="quiet")
    def secret_result() -> str:
        return "hidden"

    assert secret_result() == "hidden"
    run = pcs.last_run()
    assert run is not None
    stored = client.get_run(run.identifier)
    assert stored.data.tags["mlflow.runName"] == "quiet"
    assert not any(
        f.path.startswith("pcs.return_value") for f in client.list_artifacts(run.identifier)
    )


def test_bad_options_are_usage_errors() -> None:
    with pytest.raises(pcs.UsageError, match="return_format"):
        pcs.tracked(return_format="xml")
    with pytest.raises(pcs.UsageError, match="redact"):
        pcs.tracked(redact="password")


def test_redaction_by_name_option_and_secret(client: MlflowClient) -> None:
    @pcs.tracked(redact=("user",), exclude=("cache",))
    def login(user: str, password: str, api_key: str, cache: object, url: str,
              token: pcs.Secret[str]) -> str:
        return "ok"

    login("bob", "hunter2", "k-123", object(), "postgres://u:pw@host/db", pcs.Secret("t"))
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    stored = client.get_run(run.identifier)
    params = stored.data.params
    assert params["arg.user"] == "<redacted>"
    assert params["arg.password"] == "<redacted>"
    assert params["arg.api_key"] == "<redacted>"
    assert params["arg.url"] == "<redacted>"
    assert params["arg.token"] == "<redacted>"
    assert "arg.cache" not in params
    registry_text = Path(
        client.download_artifacts(run.identifier, "pcs.run_command_registry.yaml")
    ).read_text()
    for secret in ("hunter2", "k-123", "pw@host", "bob"):
        assert secret not in registry_text
        assert all(secret not in v for v in params.values())
    assert stored.data.tags["pcs.reproducible"] == "False"
    assert not run.is_reproducible
    assert any("password" in r for r in run.not_reproducible_reasons)


def test_unencodable_argument_placeholder(client: MlflowClient) -> None:
    @pcs.tracked
    def use_lock(lock: object, n: int) -> int:
        return n

    assert use_lock(threading.Lock(), 5) == 5
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    assert not run.is_reproducible
    assert any("lock" in r for r in run.not_reproducible_reasons)
    fresh = ComponentRun.from_existing_run_id(run.identifier)
    assert isinstance(fresh, ComponentRun)
    assert not fresh.is_reproducible
    assert client.get_run(run.identifier).data.params["arg.n"] == "5"


def test_strict_raises_before_the_call() -> None:
    calls: list[int] = []

    @pcs.tracked(strict=True)
    def use_lock(lock: object) -> None:
        calls.append(1)

    with pytest.raises(pcs.EncodingError, match="lock"):
        use_lock(threading.Lock())
    assert calls == []


def test_large_argument_stored_as_artifact_never_truncated(client: MlflowClient) -> None:
    @pcs.tracked
    def total(values: list[int]) -> int:
        return sum(values)

    big = list(range(50_000))
    assert total(big) == sum(big)
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    assert run.is_reproducible
    stored_args = client.list_artifacts(run.identifier, "pcs.arguments")
    assert len(stored_args) == 1
    param = client.get_run(run.identifier).data.params["arg.values"]
    assert param.startswith("<artifact sha256:")


def test_generator_argument_is_not_consumed() -> None:
    @pcs.tracked
    def consume(items: object) -> int:
        return sum(items)  # type: ignore[call-overload]

    assert consume(i for i in range(5)) == 10
    assert consume(iter([1, 2, 3])) == 6


def test_nested_function_and_lambda(client: MlflowClient) -> None:
    def make() -> object:
        @pcs.tracked
        def helper(x: int) -> int:
            return x + 1

        return helper

    helper = make()
    assert helper(1) == 2  # type: ignore[operator]
    square = pcs.tracked(lambda x: x * x)
    assert square(4) == 16
    run = pcs.last_run()
    assert run is not None
    assert client.get_run(run.identifier).data.tags["mlflow.runName"].split("(")[0].endswith(
        "<lambda>")


def test_functools_partial_of_tracked() -> None:
    part = functools.partial(fit, 0.5)
    assert part(epochs=2) == 1.0
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    assert run.run_command.argument_set.get_arg("fit", "fit", "epochs") == 2
