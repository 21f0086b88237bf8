"""@pcs.tracked placed outside @classmethod."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

import pcs
from pcs.component_run import ComponentRun


class Factory:
    base = 10

    @pcs.tracked
    @classmethod
    def make(cls, n: int) -> int:
        return cls.base + n


class Child(Factory):
    base = 100


def test_classmethod_on_class_and_instance(client: MlflowClient) -> None:
    assert Factory.make(1) == 11
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    stored = client.get_run(run.identifier)
    assert stored.data.params == {"arg.n": "1"}
    assert stored.data.tags["pcs.entry_point"] == "make"
    assert run.run_command.component.qualname == "Factory"
    assert run.is_reproducible
    assert Factory().make(2) == 12


def test_classmethod_on_subclass_uses_subclass() -> None:
    assert Child.make(1) == 101
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    assert run.run_command.component.qualname == "Child"
