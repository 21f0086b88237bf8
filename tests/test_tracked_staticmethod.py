"""@pcs.tracked placed outside @staticmethod."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

import pcs
from pcs.component_run import ComponentRun


class Tools:
    @pcs.tracked
    @staticmethod
    def add(a: int, b: int) -> int:
        return a + b


def test_staticmethod_on_class_and_instance(client: MlflowClient) -> None:
    assert Tools.add(1, 2) == 3
    run = pcs.last_run()
    assert isinstance(run, ComponentRun)
    stored = client.get_run(run.identifier)
    assert stored.data.params == {"arg.a": "1", "arg.b": "2"}
    assert run.run_command.component.qualname == "Tools.add"
    assert run.is_reproducible
    assert Tools().add(3, 4) == 7
    again = pcs.last_run()
    assert isinstance(again, ComponentRun)
    assert dict(again.run_command.argument_set.get_function_args("Tools.add", "add")) == {
        "a": 3,
        "b": 4,
    }
