"""Run names that tell repeated calls apart (issue 13, part 4 d; the rule in pcs._naming)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

import pcs
from pcs._naming import MAX_NAME_CHARS, fast_run_name, run_name
from pcs.component_run import ComponentRun


def _signature(lr: float, epochs: int = 3, tag: str = "", data: object = None,
               api_key: str = "", flag: bool = False) -> None:
    return None


PARAMS = inspect.signature(_signature).parameters


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"lr": 0.1}, "train(lr=0.1)"),
        ({"lr": 0.1, "epochs": 5}, "train(lr=0.1, epochs=5)"),
        ({"lr": 0.1, "epochs": 3}, "train(lr=0.1)"),  # the default: not chosen by the call
        ({"lr": 0.1, "epochs": 5, "tag": "b"}, "train(lr=0.1, epochs=5)"),  # two at most
        ({"epochs": 3, "tag": "shard-1"}, "train(tag='shard-1')"),
        ({"flag": True}, "train(flag=True)"),
        ({"tag": "The cat sat"}, "train"),  # prose, not a label
        ({"tag": "x" * 15}, "train"),  # too long
        ({"lr": 0.30000000000000004}, "train"),  # a long repr is not obvious
        ({"data": [1, 2]}, "train"),  # not a scalar
        ({"api_key": "abc"}, "train"),  # a secret's name
        ({"tag": "Bearer abcdefghij"}, "train"),  # prose, and a credential
        ({"tag": "tab\there"}, "train"),
        ({}, "train"),
    ],
)
def test_the_rule(arguments: dict[str, Any], expected: str) -> None:
    assert run_name("train", arguments, PARAMS) == expected


def test_redacted_and_excluded_names_are_never_shown() -> None:
    arguments = {"lr": 0.1, "epochs": 5}
    assert run_name("train", arguments, PARAMS, redact=("lr",)) == "train(epochs=5)"
    assert run_name("train", arguments, PARAMS, exclude=("epochs",)) == "train(lr=0.1)"


def test_a_credential_in_a_short_string_is_never_shown() -> None:
    assert run_name("f", {"tag": "AKIAIOSFODNN7EXAM"}, {}) == "f"
    assert run_name("f", {"tag": "x://u:p@h"}, {}) == "f"


def test_the_name_is_bounded() -> None:
    qualname = "Pipeline.Stage." + "q" * 50
    name = run_name(qualname, {"lr": 0.1, "epochs": 12345678}, PARAMS)
    assert name == f"{qualname}(lr=0.1)"
    assert len(name) <= MAX_NAME_CHARS
    assert run_name("q" * 79, {"lr": 0.1}, PARAMS) == "q" * 79


@pcs.tracked
def train_one(lr: float, epochs: int = 2) -> float:
    return lr * epochs


@pcs.tracked(name="custom")
def named(lr: float) -> float:
    return lr


@pcs.tracked
class Model:
    def __init__(self, width: int) -> None:
        self.width = width

    @pcs.tracked
    def predict(self, x: float, mode: str = "fast") -> float:
        return x * self.width


def _name(client: MlflowClient) -> str:
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    return str(client.get_run(run.identifier).data.tags["mlflow.runName"])


def test_repeated_calls_read_apart_in_mlflow(client: MlflowClient) -> None:
    names = []
    for lr in (0.1, 0.2):
        train_one(lr=lr, epochs=4)
        names.append(_name(client))
    assert names == ["train_one(lr=0.1, epochs=4)", "train_one(lr=0.2, epochs=4)"]
    Model(3).predict(2.0, mode="slow")
    assert _name(client) == "Model.predict(x=2.0, mode='slow')"


def test_an_explicit_name_always_wins(client: MlflowClient) -> None:
    named(lr=0.5)
    assert _name(client) == "custom"
    named(0.5)
    assert _name(client) == "custom"


def test_the_entry_point_keeps_the_bare_name(client: MlflowClient) -> None:
    train_one(lr=0.3)
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    tags = client.get_run(run.identifier).data.tags
    assert tags["pcs.entry_point"] == "train_one"
    assert [r.info.run_name for r in pcs.runs(name="train_one*")] == ["train_one(lr=0.3)"]


def test_positional_scalar_calls_are_named_alike(client: MlflowClient) -> None:
    train_one(lr=0.1)  # the general path (keywords): loads the plugins
    assert _name(client) == "train_one(lr=0.1)"
    train_one(0.2, 4)  # every parameter, positional scalars: the fast path
    assert _name(client) == "train_one(lr=0.2, epochs=4)"


def test_the_hot_paths_names_follow_the_rule(client: MlflowClient) -> None:
    """Every call that takes the fast path is named as :func:`run_name` names it (the fast
    path skips only the checks its arguments passed already)."""
    @pcs.tracked
    def train(lr: float, epochs: int = 3, tag: str = "", flag: bool = False) -> None:
        return None

    train(0.1)  # plugins loaded: the fast path is open
    tracker = train.__pcs_tracked__  # type: ignore[attr-defined]
    params = inspect.signature(train).parameters
    values: list[Any] = [0.1, 0.30000000000000004, 3, 5, 12345678901234567, -2, True, False,
                         None, "", "b", "shard-1", "x" * 14, "x" * 15, "The cat sat",
                         "tab\there", "ok!", 1e300, 0.0, -0.0]
    checked = 0
    for lr in values:
        for epochs in values:
            for tag in values[8:]:
                for flag in (True, False, 3):
                    args = (lr, epochs, tag, flag)
                    arguments = tracker.fast_arguments(args)
                    if arguments is None:
                        continue
                    checked += 1
                    defaults = {k: p.default for k, p in params.items()
                                if p.default is not p.empty}
                    assert fast_run_name("train", arguments, defaults) == run_name(
                        "train", arguments, params), args
    assert checked > 1000
