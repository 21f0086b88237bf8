"""Replay safety: which modules may be imported, only tracked code runs, pickles need trust."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import stored_runs
from mlflow.tracking import MlflowClient
from replay_support import CodeDir

import pcs
from pcs.component_run import ComponentRun

SOURCE = """
import pathlib

import pcs


@pcs.tracked
def fit(lr: float) -> float:
    return lr * 2


def helper(path: str) -> None:
    pathlib.Path(path).touch()


class Payload:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


@pcs.tracked(return_format="pickle")
def make(path: str) -> Payload:
    return Payload(path)
"""

ENUM_SOURCE = """
import enum


class Shade(enum.Enum):
    DARK = 1
"""


@pytest.fixture
def code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CodeDir]:
    folder = CodeDir(tmp_path / "code", monkeypatch)
    yield folder
    folder.cleanup()


def command(module: str, qualname: str, entry_point: str, **args: object) -> pcs.RunCommand:
    component = pcs.Component(module=module, qualname=qualname)
    arguments = pcs.ArgumentSet({qualname: {entry_point: args}})
    return pcs.RunCommand(component, entry_point, arguments)


@pytest.mark.parametrize(
    ("module", "qualname", "arg"),
    [("os", "system", "command"), ("builtins", "eval", "source"),
     ("subprocess", "getoutput", "cmd")],
)
def test_a_spec_naming_a_dangerous_callable_never_runs(
    client: MlflowClient, tmp_path: Path, module: str, qualname: str, arg: str
) -> None:
    marker = tmp_path / "pwned"
    payload = (f"open({str(marker)!r}, 'w')" if module == "builtins"
               else f"touch {marker}")
    spec = command(module, qualname, qualname, **{arg: payload})
    with pytest.raises(pcs.UnsafeReplayError, match=f"module '{module}' is not allowed"):
        spec.run()
    # Allowing the module does not help: the callable is not @pcs.tracked.
    with pytest.raises(pcs.UnsafeReplayError, match=r"is not a @pcs\.tracked callable"):
        spec.run(allowed_modules=[module])
    assert not marker.exists()
    assert stored_runs(client) == {}


def test_the_module_is_checked_before_it_is_imported(code: CodeDir, tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    name = code.write(f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(pcs.UnsafeReplayError, match="not allowed"):
        command(name, "anything", "anything").run()
    assert not marker.exists()
    assert name not in sys.modules


def test_an_untracked_function_of_a_recorded_module_is_refused(code: CodeDir,
                                                                tmp_path: Path) -> None:
    name = code.write(SOURCE)
    code.load(name).fit(0.5)  # the module is now recorded in this store by this user
    marker = tmp_path / "touched"
    with pytest.raises(pcs.UnsafeReplayError, match=f"{name}:helper is not a @pcs.tracked"):
        command(name, "helper", "helper", path=str(marker)).run()
    assert not marker.exists()


def recorded_command(module: object, lr: float) -> pcs.RunCommand:
    """A RunCommand for ``module.fit(lr)`` with the code identity of the current code."""
    component = pcs.Component.from_callable(module.fit)  # type: ignore[attr-defined]
    return pcs.RunCommand(component, "fit", pcs.ArgumentSet({"fit": {"fit": {"lr": lr}}}))


def test_default_policy_allows_modules_recorded_here(
    code: CodeDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = code.write(SOURCE)
    spec = recorded_command(code.load(name), 0.25)
    with pytest.raises(pcs.UnsafeReplayError, match=f"allowed_modules=\\['{name}'\\]"):
        spec.run()
    monkeypatch.setenv("PCS_REPLAY_ALLOWED_MODULES", f"unrelated, {name}")
    assert spec.run().return_value == 0.5
    monkeypatch.delenv("PCS_REPLAY_ALLOWED_MODULES")
    assert spec.run(allowed_modules=[name]).return_value == 0.5

    other = code.load(code.write(SOURCE))
    other.make("unused")  # any call recorded by this user in this store is evidence
    assert recorded_command(other, 2.0).run().return_value == 4.0


def test_prefixes_match_whole_module_names(code: CodeDir) -> None:
    name = code.write(SOURCE)
    spec = recorded_command(code.load(name), 1.0)
    with pytest.raises(pcs.UnsafeReplayError):
        spec.run(allowed_modules=[name[:-3]])
    assert spec.run(allowed_modules=[name]).return_value == 2.0
    with pytest.raises(pcs.UsageError, match="allowed_modules"):
        command(name, "fit", "fit", lr=1.0).run(allowed_modules=name)  # type: ignore[arg-type]
    with pytest.raises(pcs.UsageError, match="is not a module prefix"):
        command(name, "fit", "fit", lr=1.0).run(allowed_modules=["os; rm"])


def test_an_argument_class_from_an_unimported_module_is_refused(code: CodeDir) -> None:
    name = code.write(SOURCE)
    code.load(name).fit(0.5)
    enums = code.write(ENUM_SOURCE, prefix="pcs_replay_enums")
    spec = pcs.RunCommand(
        pcs.Component(module=name, qualname="fit"),
        "fit",
        pcs.ArgumentSet.from_encoded({"fit": {"fit": {"lr": ["e", f"{enums}:Shade", "DARK"]}}}),
    )
    with pytest.raises(pcs.UnsafeReplayError, match=f"module '{enums}'"):
        spec.run(allow_code_drift=True)
    assert enums not in sys.modules


def test_callables_defined_in_functions_cannot_be_replayed(code: CodeDir) -> None:
    name = code.write(SOURCE)
    spec = command(name, "outer.<locals>.inner", "inner")
    with pytest.raises(pcs.ReplayError, match="defined inside a function"):
        spec.run(allowed_modules=[name])


def test_a_pickled_return_value_is_never_unpickled_without_trust(
    client: MlflowClient, code: CodeDir, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    code.load(code.write(SOURCE)).make(str(marker))
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    pcs.flush()
    handle = ComponentRun.from_existing_run_id(run.identifier)
    with pytest.raises(pcs.UntrustedPickleError, match="trust=True") as caught:
        handle.load_return_value()
    assert run.identifier in str(caught.value)
    with pytest.raises(pcs.UntrustedPickleError):
        _ = handle.return_value
    assert not marker.exists()

    # Replaying and comparing never unpickle either: pickles compare byte for byte.
    new = handle.rerun()
    assert client.get_run(new.identifier).data.tags["pcs.reproduced"] == "True"
    assert handle.compare(new).same_return_value is True
    assert not marker.exists()

    handle.load_return_value(trust=True)  # the payload is real: trust runs it
    assert marker.exists()
